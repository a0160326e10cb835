"""Flat-bottom water restraints: zero when the partition holds, exact energy and forces when it does not."""

from __future__ import annotations

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u
import pytest

from biomol_nnp.config import SYSTEMS_DIR
from biomol_nnp.exceptions import InputError
from biomol_nnp.openmm.energy_terms import energy_terms, group_energies
from biomol_nnp.openmm.restraints import (
    MM_WATER_GROUP,
    MM_WATER_RESTRAINT_NAME,
    REGION_WATER_GROUP,
    REGION_WATER_RESTRAINT_NAME,
    add_water_restraints,
)

KJ = u.kilojoule_per_mole
RADIUS = 0.5
K = 1000.0


def toy_system():
    """Two centre carbons (residue ALA) and four waters; returns topology, System, water oxygens."""
    topology = app.Topology()
    chain = topology.addChain()
    ala = topology.addResidue("ALA", chain)
    for name in ("CA", "CB"):
        topology.addAtom(name, app.element.carbon, ala)
    oxygens = []
    for _ in range(4):
        water = topology.addResidue("HOH", chain)
        oxygens.append(topology.addAtom("O", app.element.oxygen, water).index)
        topology.addAtom("H1", app.element.hydrogen, water)
        topology.addAtom("H2", app.element.hydrogen, water)
    system = openmm.System()
    for atom in topology.atoms():
        system.addParticle(atom.element.mass)
    return topology, system, oxygens


def positions(region_d, mm_d):
    """Centre atoms at +-0.05 nm on x (centroid at 0); waters 0,1 at ``region_d``, 2,3 at ``mm_d`` (nm)."""
    x = np.zeros((14, 3))
    x[0], x[1] = [-0.05, 0, 0], [0.05, 0, 0]
    directions = np.array([[0, 1, 0], [0, 0, 1], [0, -1, 0], [0.6, 0, 0.8]])
    for k, d in enumerate([region_d[0], region_d[1], mm_d[0], mm_d[1]]):
        oxygen = 2 + 3 * k
        x[oxygen] = d * directions[k]
        x[oxygen + 1] = x[oxygen] + [0.09, 0.0, 0.0]
        x[oxygen + 2] = x[oxygen] + [-0.03, 0.09, 0.0]
    return x


@pytest.fixture()
def restrained():
    topology, system, oxygens = toy_system()
    add_water_restraints(system, topology, oxygens[:2], [0, 1], RADIUS, K)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    return context


def energy(context, x, groups=-1):
    context.setPositions(x)
    return context.getState(getEnergy=True, groups=groups).getPotentialEnergy().value_in_unit(KJ)


def test_zero_when_partition_holds(restrained):
    x = positions((0.3, 0.45), (0.6, 0.8))
    assert energy(restrained, x) == 0.0
    forces = restrained.getState(getForces=True).getForces(asNumpy=True).value_in_unit(KJ / u.nanometer)
    assert np.abs(forces).max() == 0.0


def test_violations_give_exact_energy_per_group(restrained):
    x = positions((0.3, RADIUS + 0.2), (RADIUS - 0.15, 0.9))
    assert energy(restrained, x, {REGION_WATER_GROUP}) == pytest.approx(0.5 * K * 0.2**2, rel=1e-12)
    assert energy(restrained, x, {MM_WATER_GROUP}) == pytest.approx(0.5 * K * 0.15**2, rel=1e-12)


def test_restraint_energy_reported_as_its_own_term():
    """energy_terms names each restraint group; the terms sum to the total; a Simulation works too."""
    topology, system, oxygens = toy_system()
    bond = openmm.HarmonicBondForce()
    bond.addBond(0, 1, 0.12, 5000.0)  # an "MM" term in group 0
    system.addForce(bond)
    add_water_restraints(system, topology, oxygens[:2], [0, 1], RADIUS, K)
    simulation = app.Simulation(
        topology, system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
    )
    simulation.context.setPositions(positions((0.3, RADIUS + 0.2), (RADIUS - 0.15, 0.9)))
    terms = energy_terms(simulation)
    assert set(terms) == {"HarmonicBondForce", REGION_WATER_RESTRAINT_NAME, MM_WATER_RESTRAINT_NAME}
    assert terms[REGION_WATER_RESTRAINT_NAME] == pytest.approx(0.5 * K * 0.2**2, rel=1e-12)
    assert terms[MM_WATER_RESTRAINT_NAME] == pytest.approx(0.5 * K * 0.15**2, rel=1e-12)
    assert terms["HarmonicBondForce"] == pytest.approx(0.5 * 5000.0 * 0.02**2, rel=1e-9)
    assert sum(terms.values()) == pytest.approx(
        energy(simulation.context, simulation.context.getState(getPositions=True).getPositions()), rel=1e-12
    )
    assert set(group_energies(simulation.context)) == {0, REGION_WATER_GROUP, MM_WATER_GROUP}
    with pytest.raises(TypeError, match="openmm.Context or an openmm.app.Simulation"):
        energy_terms(system)


def test_forces_match_finite_differences_when_violated(restrained):
    x0 = positions((0.3, RADIUS + 0.2), (RADIUS - 0.15, RADIUS - 0.05))
    x0 += np.random.default_rng(1).normal(scale=0.01, size=x0.shape)
    restrained.setPositions(x0)
    forces = restrained.getState(getForces=True).getForces(asNumpy=True).value_in_unit(KJ / u.nanometer)
    assert np.abs(forces).max() > 10.0
    h = 1e-6
    for atom in (0, 1, 2, 5, 8, 11):
        for axis in range(3):
            plus, minus = x0.copy(), x0.copy()
            plus[atom, axis] += h
            minus[atom, axis] -= h
            numeric = -(energy(restrained, plus) - energy(restrained, minus)) / (2 * h)
            assert forces[atom, axis] == pytest.approx(numeric, rel=1e-6, abs=1e-5), (atom, axis)
    np.testing.assert_allclose(forces.sum(axis=0), 0.0, atol=1e-9)  # internal forces: no net force


def test_solvated_defaults_and_periodic_box():
    """Real topology: MM waters default to all others; radii around the actual shell give zero energy."""
    pdb = app.PDBFile(str(SYSTEMS_DIR / "alanine_dipeptide" / "solvated.pdb"))
    x = pdb.getPositions(asNumpy=True).value_in_unit(u.nanometer)
    peptide = [a.index for a in pdb.topology.atoms() if a.residue.name in ("ACE", "ALA", "NME")]
    oxygens = [a.index for a in pdb.topology.atoms() if a.residue.name == "HOH" and a.name == "O"]
    distance = np.linalg.norm(x[oxygens] - x[peptide].mean(axis=0), axis=1)
    order = np.argsort(distance)
    region = [oxygens[i] for i in order[:5]]
    system = openmm.System()
    for atom in pdb.topology.atoms():
        system.addParticle(atom.element.mass)
    system.setDefaultPeriodicBoxVectors(*pdb.topology.getPeriodicBoxVectors())
    region_force, mm_force = add_water_restraints(
        system,
        pdb.topology,
        region,
        peptide,
        distance[order[4]] + 0.01,
        K,
        mm_radius_nm=distance[order[5]] - 0.01,
        periodic=True,
    )
    assert region_force.getNumBonds() == 5 and mm_force.getNumBonds() == len(oxygens) - 5
    assert system.usesPeriodicBoundaryConditions()
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    assert energy(context, x) == 0.0
    box = np.array(pdb.topology.getPeriodicBoxVectors().value_in_unit(u.nanometer))
    assert energy(context, x + box[0] - box[2]) == 0.0  # whole-system translation by lattice vectors
    pushed = x.copy()
    pushed[region[0]] += 2.0 * (x[region[0]] - x[peptide].mean(axis=0))  # well outside the sphere
    assert energy(context, pushed, {REGION_WATER_GROUP}) > 0.0
    assert energy(context, pushed, {MM_WATER_GROUP}) == 0.0


def test_bad_inputs_are_refused():
    topology, system, oxygens = toy_system()
    with pytest.raises(InputError, match="not water oxygens"):
        add_water_restraints(system, topology, [0], [1], RADIUS, K)
    with pytest.raises(InputError, match="both region and MM waters"):
        add_water_restraints(system, topology, oxygens[:1], [0], RADIUS, K, mm_water_oxygens=oxygens[:2])
    with pytest.raises(InputError, match="radii must be > 0"):
        add_water_restraints(system, topology, oxygens[:1], [0], 0.0, K)
    with pytest.raises(InputError, match="two different force groups"):
        add_water_restraints(system, topology, oxygens[:1], [0], RADIUS, K, region_group=3, mm_group=3)
    with pytest.raises(InputError, match="region_centre_atoms is empty"):
        add_water_restraints(system, topology, oxygens[:1], [], RADIUS, K)
    assert system.getNumForces() == 0
