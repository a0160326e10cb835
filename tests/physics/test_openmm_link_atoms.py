"""Link atoms in the electrostatic embedding: caps, chain rule, invariances, identities, refusals.

Region: the ALA residue of alanine dipeptide (vacuum, amber14, no cutoff), which cuts the two amide
C-N bonds (ACE C - ALA N and ALA C - NME N), with the analytic toy model on the Reference platform.
"""

from __future__ import annotations

import copy

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u
import openmmml  # noqa: F401  (openmm-ml first: it loads our entry points)
import pytest
import torch
from openmmml import MLPotential

from biomol_nnp.config import SYSTEMS_DIR
from biomol_nnp.exceptions import InputError
from biomol_nnp.models.export import load_model
from biomol_nnp.region import LINK_BOND_LENGTH_NM, find_cut_bonds, link_atom_positions, redistribute_boundary_charges
from tests.toy_models import make_toy_model

VACUUM_PDB = SYSTEMS_DIR / "alanine_dipeptide" / "vacuum.pdb"
ML_GROUP = 1
KJ = u.kilojoule_per_mole


@pytest.fixture(scope="module")
def toy_path(tmp_path_factory):
    return make_toy_model(tmp_path_factory.mktemp("toy") / "toy.pt", elements=[1, 6, 7, 8])


@pytest.fixture(scope="module")
def dipeptide():
    """Topology, MM System, positions [22,3] nm (backbone moved off its plane) and the ALA region."""
    pdb = app.PDBFile(str(VACUUM_PDB))
    system = app.ForceField("amber14-all.xml").createSystem(pdb.topology, nonbondedMethod=app.NoCutoff)
    x = np.array(pdb.positions.value_in_unit(u.nanometer))
    x += np.random.default_rng(5).normal(scale=0.01, size=x.shape)
    ala = [a.index for a in pdb.topology.atoms() if a.residue.name == "ALA"]
    return pdb.topology, system, x, ala


def mixed(toy_path, topology, system, atoms, embedding="electrostatic", **kwargs):
    return MLPotential("biomol-nnp", modelPath=str(toy_path)).createMixedSystem(
        topology, system, atoms, embedding=embedding, forceGroup=ML_GROUP, **kwargs
    )


def make_context(system):
    return openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))


def evaluate(context, x, groups=-1, forces=False):
    """Energy (kJ/mol) [and forces, kJ/mol/nm] at real-atom positions ``x``; virtual sites recomputed."""
    n = context.getSystem().getNumParticles()
    context.setPositions(np.vstack([x, np.zeros((n - len(x), 3))]))
    context.computeVirtualSites()
    state = context.getState(getEnergy=True, getForces=forces, getPositions=True, groups=groups)
    energy = state.getPotentialEnergy().value_in_unit(KJ)
    if not forces:
        return energy
    return energy, state.getForces(asNumpy=True).value_in_unit(KJ / u.nanometer), state.getPositions(asNumpy=True)


def nonbonded(system):
    return next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))


def charges_of(system):
    force = nonbonded(system)
    return np.array([force.getParticleParameters(i)[0].value_in_unit(u.elementary_charge) for i in range(22)])


def model_energy(toy_path, region_xyz, numbers, mm_xyz, mm_charges):
    module, _ = load_model(toy_path)
    return float(
        module(
            torch.tensor(region_xyz, dtype=torch.float64),
            torch.tensor(numbers),
            torch.tensor(0.0, dtype=torch.float64),
            torch.tensor(np.reshape(mm_xyz, (-1, 3)), dtype=torch.float64),
            torch.tensor(mm_charges, dtype=torch.float64),
            torch.zeros((0, 3), dtype=torch.float64),
        )
    )


def region_with_caps(topology, x, ala):
    """Region positions with caps from biomol_nnp.region (the labelling rules) and their atomic numbers."""
    numbers = [a.element.atomic_number for a in topology.atoms()]
    cuts = find_cut_bonds(topology, ala)
    caps = link_atom_positions(x, cuts, numbers)
    return np.vstack([x[ala], caps]), [numbers[i] for i in ala] + [1] * len(cuts), cuts


def test_two_link_sites_and_return_info(toy_path, dipeptide):
    topology, system, x, ala = dipeptide
    info = mixed(toy_path, topology, system, ala, returnInfo=True)
    new_system, new_topology = info["system"], info["topology"]
    assert info["oldToNew"] == list(range(22))
    assert new_system.getNumParticles() == new_topology.getNumAtoms() == 24
    assert [i for i in range(24) if new_system.isVirtualSite(i)] == [22, 23]
    assert [a.element.atomic_number for a in list(new_topology.atoms())[22:]] == [1, 1]
    assert topology.getNumAtoms() == 22  # the caller's Topology is untouched
    for cap in (22, 23):
        charge, _, epsilon = nonbonded(new_system).getParticleParameters(cap)
        assert charge.value_in_unit(u.elementary_charge) == 0.0 and epsilon.value_in_unit(KJ) == 0.0
    model_force = next(f for f in new_system.getForces() if f.getForceGroup() == ML_GROUP)
    assert list(model_force.getParticles())[: len(ala) + 2] == ala + [22, 23]
    # the caps sit where the labelling rules put them (C-N cuts: on the region N and the region C)
    _, _, positions = evaluate(make_context(new_system), x, forces=True)
    caps = region_with_caps(topology, x, ala)[0][len(ala) :]
    np.testing.assert_allclose(positions.value_in_unit(u.nanometer)[22:], caps, atol=1e-12)
    lengths = sorted(np.linalg.norm(caps - x[[c.inside for c in find_cut_bonds(topology, ala)]], axis=1))
    assert lengths == pytest.approx(sorted([LINK_BOND_LENGTH_NM[6], LINK_BOND_LENGTH_NM[7]]))


def test_model_term_sees_caps_and_redistributed_charges(toy_path, dipeptide):
    """ML group = model(region + caps; MM charges with the boundary charge moved to MM neighbours)."""
    topology, system, x, ala = dipeptide
    new_system = mixed(toy_path, topology, system, ala)
    charges = charges_of(system)
    region_xyz, numbers, cuts = region_with_caps(topology, x, ala)
    seen = redistribute_boundary_charges(topology, charges, cuts, ala)
    mm = [i for i in range(22) if i not in ala and seen[i] != 0.0]
    assert {c.outside for c in cuts}.isdisjoint(mm)  # boundary atoms carry no charge for the embedding
    assert seen[mm].sum() == pytest.approx(charges[[i for i in range(22) if i not in ala]].sum(), abs=1e-12)
    expected = model_energy(toy_path, region_xyz, numbers, x[mm], seen[mm])
    assert evaluate(make_context(new_system), x, {ML_GROUP}) == pytest.approx(expected, rel=1e-12)
    # the MM-MM NonbondedForce keeps the force field's charges of the boundary atoms
    kept = charges_of(new_system)
    for cut in cuts:
        assert kept[cut.outside] == pytest.approx(charges[cut.outside]) and charges[cut.outside] != 0.0


def test_forces_match_finite_differences_through_caps(toy_path, dipeptide):
    """Forces on real atoms (incl. both atoms of each cut bond) = -dE/dx of the whole System."""
    topology, system, x, ala = dipeptide
    context = make_context(mixed(toy_path, topology, system, ala))
    _, forces, _ = evaluate(context, x, forces=True)
    cuts = find_cut_bonds(topology, ala)
    atoms = sorted({c.inside for c in cuts} | {c.outside for c in cuts} | {ala[2], 0})
    h = 1e-5
    for atom in atoms:
        for axis in range(3):
            plus, minus = x.copy(), x.copy()
            plus[atom, axis] += h
            minus[atom, axis] -= h
            numeric = -(evaluate(context, plus) - evaluate(context, minus)) / (2 * h)
            assert forces[atom, axis] == pytest.approx(numeric, rel=1e-5, abs=1e-3), (atom, axis)


def test_energy_invariant_under_rigid_motion(toy_path, dipeptide):
    topology, system, x, ala = dipeptide
    context = make_context(mixed(toy_path, topology, system, ala))
    reference = evaluate(context, x)
    angle = 0.7
    axis = np.array([1.0, 2.0, -0.5]) / np.linalg.norm([1.0, 2.0, -0.5])
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
    moved = (x - x.mean(axis=0)) @ rotation.T + np.array([1.3, -0.4, 2.2])
    assert evaluate(context, moved) == pytest.approx(reference, rel=1e-10, abs=1e-8)


def test_zero_charges_embedding_identity(toy_path, dipeptide):
    """All MM charges zero: mixed = MM without ML terms + vacuum model of region + caps."""
    topology, system, x, ala = dipeptide
    neutral = copy.deepcopy(system)
    force = nonbonded(neutral)
    for i in range(force.getNumParticles()):
        _, sigma, epsilon = force.getParticleParameters(i)
        force.setParticleParameters(i, 0.0, sigma, epsilon)
    for k in range(force.getNumExceptions()):
        i, j, _, sigma, epsilon = force.getExceptionParameters(k)
        force.setExceptionParameters(k, i, j, 0.0, sigma, epsilon)
    electro = mixed(toy_path, topology, neutral, ala, totalCharge=0)
    distances = [
        (c.inside, c.outside, LINK_BOND_LENGTH_NM[list(topology.atoms())[c.inside].element.atomic_number] * u.nanometer)
        for c in find_cut_bonds(topology, ala)
    ]
    mechanical = mixed(toy_path, topology, neutral, ala, embedding="mechanical", linkAtomDistances=distances)
    region_xyz, numbers, _ = region_with_caps(topology, x, ala)
    vacuum = model_energy(toy_path, region_xyz, numbers, [], [])
    context = make_context(electro)
    assert evaluate(context, x, {ML_GROUP}) == pytest.approx(vacuum, rel=1e-12)
    mm_only = evaluate(make_context(mechanical), x, {0})
    assert evaluate(context, x, {0}) == pytest.approx(mm_only, abs=1e-8)
    assert evaluate(context, x) == pytest.approx(mm_only + vacuum, abs=1e-8)


def test_bonded_terms_across_cut_as_mechanical_embedding(toy_path, dipeptide):
    """Kept bonds/angles/torsions are exactly those openmm-ml's mechanical embedding keeps."""
    topology, system, _, ala = dipeptide

    def terms(s):
        out = {}
        for f in s.getForces():
            if isinstance(f, openmm.HarmonicBondForce):
                out["bonds"] = {tuple(f.getBondParameters(i)[:2]) for i in range(f.getNumBonds())}
            elif isinstance(f, openmm.HarmonicAngleForce):
                out["angles"] = {tuple(f.getAngleParameters(i)[:3]) for i in range(f.getNumAngles())}
            elif isinstance(f, openmm.PeriodicTorsionForce):
                out["torsions"] = {tuple(f.getTorsionParameters(i)[:4]) for i in range(f.getNumTorsions())}
        return out

    electro = terms(mixed(toy_path, topology, system, ala))
    assert electro == terms(mixed(toy_path, topology, system, ala, embedding="mechanical"))
    ala_c = next(a.index for a in topology.atoms() if a.residue.name == "ALA" and a.name == "C")
    nme_n = next(a.index for a in topology.atoms() if a.residue.name == "NME" and a.name == "N")
    assert (ala_c, nme_n) in electro["bonds"] or (nme_n, ala_c) in electro["bonds"]  # the cut bond stays MM
    assert not any(set(b) <= set(ala) for b in electro["bonds"])


def test_lambda_interpolation_with_caps(toy_path, dipeptide):
    topology, system, x, ala = dipeptide
    context = make_context(mixed(toy_path, topology, system, ala, interpolate=True))
    assert evaluate(context, x) == pytest.approx(evaluate(make_context(mixed(toy_path, topology, system, ala)), x))
    context.setParameter("lambda_interpolate", 0.0)
    assert evaluate(context, x) == pytest.approx(evaluate(make_context(system), x), abs=1e-6)


def _chain_topology(elements, bonds, residues):
    """A Topology with one atom per element symbol, residue names per atom, and the given bonds."""
    topology = app.Topology()
    chain = topology.addChain()
    atoms, current = [], None
    for k, (symbol, residue_name) in enumerate(zip(elements, residues, strict=True)):
        if current is None or current.name != residue_name or residue_name.endswith("*"):
            current = topology.addResidue(residue_name, chain)
        atoms.append(topology.addAtom(f"{symbol}{k}", app.element.Element.getBySymbol(symbol), current))
    for a, b in bonds:
        topology.addBond(atoms[a], atoms[b])
    system = openmm.System()
    force = openmm.NonbondedForce()
    for _ in elements:
        system.addParticle(12.0)
        force.addParticle(0.1, 0.3, 0.1)
    system.addForce(force)
    return topology, system


def test_ring_cut_refused(toy_path):
    ring = [(k, (k + 1) % 6) for k in range(6)]
    topology, system = _chain_topology(["C"] * 6, ring, ["RNG"] * 6)
    with pytest.raises(InputError, match="part of a ring; include the whole ring"):
        mixed(toy_path, topology, system, [0, 1, 2])


def test_disulfide_cut_refused(toy_path):
    topology, system = _chain_topology(["C", "S", "S", "C"], [(0, 1), (1, 2), (2, 3)], ["CYX", "CYX", "CYS", "CYS"])
    with pytest.raises(InputError, match="cuts the disulfide bond .*put both cysteines in the region"):
        mixed(toy_path, topology, system, [0, 1])
