"""Physics identities of the electrostatic embedding with the analytic toy model (Reference, float64)."""

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

from biomol_nnp.models.export import load_model
from tests.run_helpers import PEPTIDE, SOLVATED_DIPEPTIDE_PDB, dipeptide_water_cluster
from tests.toy_models import make_toy_model

ML_GROUP = 1


@pytest.fixture(scope="module")
def toy_path(tmp_path_factory):
    return make_toy_model(tmp_path_factory.mktemp("toy") / "toy.pt")


@pytest.fixture(scope="module")
def solvated():
    pdb = app.PDBFile(str(SOLVATED_DIPEPTIDE_PDB))
    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
    system = forcefield.createSystem(
        pdb.topology, nonbondedMethod=app.PME, nonbondedCutoff=0.9 * u.nanometer, constraints=app.HBonds
    )
    ml = [a.index for a in pdb.topology.atoms() if a.residue.name in PEPTIDE]
    return pdb.topology, system, pdb.positions, ml


@pytest.fixture(scope="module")
def cluster():
    """Dipeptide plus its 6 nearest waters, no cutoff and no constraints: a small non-periodic system."""
    return dipeptide_water_cluster()


def energy(system, positions, groups=-1):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    state = context.getState(getEnergy=True, groups=groups)
    return state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)


def mixed(toy_path, topology, system, ml, embedding="electrostatic", **kwargs):
    return MLPotential("biomol-nnp", modelPath=str(toy_path)).createMixedSystem(
        topology, system, ml, embedding=embedding, forceGroup=ML_GROUP, **kwargs
    )


def nonbonded(system):
    return next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))


def model_energy(toy_path, topology, positions, ml, mm_atoms, mm_charges):
    """The toy model's energy straight from the model file (no OpenMM), kJ/mol."""
    module, _ = load_model(toy_path)
    xyz = torch.tensor(np.asarray(positions.value_in_unit(u.nanometer)), dtype=torch.float64)
    numbers = [atom.element.atomic_number for atom in topology.atoms()]
    return float(
        module(
            xyz[ml],
            torch.tensor([numbers[i] for i in ml]),
            torch.tensor(0.0, dtype=torch.float64),
            xyz[mm_atoms],
            torch.tensor(mm_charges, dtype=torch.float64),
            torch.zeros((0, 3), dtype=torch.float64),
        )
    )


def with_charges_zeroed(system, atoms):
    copied = copy.deepcopy(system)
    force = nonbonded(copied)
    for i in atoms:
        _, sigma, epsilon = force.getParticleParameters(i)
        force.setParticleParameters(i, 0.0, sigma, epsilon)
    for k in range(force.getNumExceptions()):
        i, j, _, sigma, epsilon = force.getExceptionParameters(k)
        if i in atoms or j in atoms:
            force.setExceptionParameters(k, i, j, 0.0, sigma, epsilon)
    return copied


def test_all_charges_zero_equals_mechanical(toy_path, cluster):
    """No charges anywhere: electrostatic == mechanical embedding, and the ML term is the vacuum energy."""
    topology, system, positions, ml = cluster
    neutral = with_charges_zeroed(system, range(system.getNumParticles()))
    electro = mixed(toy_path, topology, neutral, ml, totalCharge=0)
    mechanical = mixed(toy_path, topology, neutral, ml, embedding="mechanical")
    assert energy(electro, positions) == pytest.approx(energy(mechanical, positions), abs=1e-8)
    vacuum = model_energy(toy_path, topology, positions, ml, [], [])
    assert energy(electro, positions, {ML_GROUP}) == pytest.approx(vacuum, rel=1e-12)


def test_embedding_identity_with_charges(toy_path, cluster):
    """E_mixed = [MM(all) - MM(ML internal) with ML charges zero] + model(R_A; MM charges)."""
    topology, system, positions, ml = cluster
    electro = mixed(toy_path, topology, system, ml)
    mm_part = mixed(toy_path, topology, with_charges_zeroed(system, ml), ml, embedding="mechanical")
    charges = [
        nonbonded(system).getParticleParameters(i)[0].value_in_unit(u.elementary_charge)
        for i in range(system.getNumParticles())
    ]
    mm_atoms = [i for i in range(system.getNumParticles()) if i not in ml and charges[i] != 0.0]
    expected_ml = model_energy(toy_path, topology, positions, ml, mm_atoms, [charges[i] for i in mm_atoms])
    assert energy(electro, positions, {ML_GROUP}) == pytest.approx(expected_ml, rel=1e-12)
    assert energy(electro, positions, {0}) == pytest.approx(energy(mm_part, positions, {0}), abs=1e-8)
    # the embedding changes the energy: the region does see the MM charges
    assert abs(expected_ml - model_energy(toy_path, topology, positions, ml, [], [])) > 1.0


def test_forces_match_finite_differences(toy_path, cluster):
    topology, system, positions, ml = cluster
    electro = mixed(toy_path, topology, system, ml)
    context = openmm.Context(electro, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    x0 = np.array(positions.value_in_unit(u.nanometer))
    context.setPositions(x0)
    forces = (
        context.getState(getForces=True, groups={ML_GROUP})
        .getForces(asNumpy=True)
        .value_in_unit(u.kilojoule_per_mole / u.nanometer)
    )
    mm_atoms = [i for i in range(len(x0)) if i not in ml]
    h = 1e-5
    for atom in (ml[0], ml[7], mm_atoms[0], mm_atoms[4]):
        for axis in range(3):
            values = []
            for sign in (1, -1):
                x = x0.copy()
                x[atom, axis] += sign * h
                context.setPositions(x)
                values.append(
                    context.getState(getEnergy=True, groups={ML_GROUP})
                    .getPotentialEnergy()
                    .value_in_unit(u.kilojoule_per_mole)
                )
            numeric = -(values[0] - values[1]) / (2 * h)
            assert forces[atom, axis] == pytest.approx(numeric, rel=1e-5, abs=1e-4)


def test_periodic_translations_leave_energy_unchanged(toy_path, solvated):
    topology, system, positions, ml = solvated
    electro = mixed(toy_path, topology, system, ml)
    context = openmm.Context(electro, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    x0 = np.array(positions.value_in_unit(u.nanometer))
    box = np.array(topology.getPeriodicBoxVectors().value_in_unit(u.nanometer))

    def ml_energy(x):
        context.setPositions(x)
        return (
            context.getState(getEnergy=True, groups={ML_GROUP}).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
        )

    reference = ml_energy(x0)
    shifted_all = x0 + box[0]
    shifted_region = x0.copy()
    shifted_region[ml] += box[1]
    split_region = x0.copy()
    split_region[ml[3]] -= box[2]  # one ML atom in another image: the region is made whole
    for x in (shifted_all, shifted_region, split_region):
        assert ml_energy(x) == pytest.approx(reference, rel=1e-10, abs=1e-8)


def test_lambda_interpolation(toy_path, solvated):
    topology, system, positions, ml = solvated
    interpolated = mixed(toy_path, topology, system, ml, interpolate=True)
    plain = mixed(toy_path, topology, system, ml)
    context = openmm.Context(
        interpolated, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
    )
    context.setPositions(positions)
    assert context.getParameter("lambda_interpolate") == 1.0
    e1 = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    context.setParameter("lambda_interpolate", 0.0)
    e0 = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    assert e1 == pytest.approx(energy(plain, positions), abs=1e-6)
    assert e0 == pytest.approx(energy(system, positions), abs=1e-6)


def test_xml_round_trip_keeps_energy(toy_path, cluster):
    topology, system, positions, ml = cluster
    electro = mixed(toy_path, topology, system, ml)
    clone = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(electro))
    assert energy(clone, positions) == pytest.approx(energy(electro, positions), rel=1e-12)


@pytest.fixture(scope="module")
def long_range_toy(tmp_path_factory):
    """A toy whose own Coulomb switch reaches 5 nm, deployed with a 1.0 nm group cutoff (0.1 nm switch):
    every discontinuity at 1.0 nm would come from the molecule selection, none is hidden by the model."""
    from biomol_nnp.models.export import build_metadata, save_model
    from tests.toy_models import ToyModel

    model = ToyModel([1, 6, 7, 8], embedding_cutoff_nm=5.0)
    metadata = build_metadata(
        [1, 6, 7, 8], model.cutoff, 1.0, model.ensemble_size, "analytic-toy", "0" * 64, embedding_switch_width_nm=0.1
    )
    return save_model(torch.jit.script(model), tmp_path_factory.mktemp("toy5") / "toy.pt", metadata)


def test_switch_gives_continuous_energy_and_forces_across_the_cutoff(long_range_toy, cluster):
    """A water pulled rigidly through the switching shell (0.9-1.0 nm) and past the cutoff: the energy is
    continuous, the force on the water is -dE/ds (finite differences inside the shell), it goes to zero at
    the cutoff and is exactly zero beyond it, where the energy equals that without the water."""
    topology, system, positions, ml = cluster
    context = openmm.Context(
        mixed(long_range_toy, topology, system, ml),
        openmm.VerletIntegrator(0.001),
        openmm.Platform.getPlatformByName("Reference"),
    )
    x0 = np.array(positions.value_in_unit(u.nanometer))
    water = [a.index for a in list(topology.residues())[-1].atoms()]
    direction = x0[water[0]] - x0[ml].mean(axis=0)
    direction /= np.linalg.norm(direction)

    def at(distance):
        """Positions with the water moved along ``direction`` until its closest atom is ``distance`` from the region."""
        low, high = -2.0, 3.0
        for _ in range(80):
            s = 0.5 * (low + high)
            moved = x0[water] + s * direction
            d = np.linalg.norm(moved[:, None] - x0[ml][None], axis=-1).min()
            low, high = (s, high) if d < distance else (low, s)
        x = x0.copy()
        x[water] += 0.5 * (low + high) * direction
        return x

    def evaluate(x):
        context.setPositions(x)
        state = context.getState(getEnergy=True, getForces=True, groups={ML_GROUP})
        forces = state.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer)
        return state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole), forces[water] @ direction

    distances = np.linspace(0.85, 1.05, 81)
    energies, pulls = zip(*(evaluate(at(d)) for d in distances), strict=True)
    energies, pulls = np.array(energies), np.array([p.sum() for p in pulls])
    step = np.diff(distances).max() * 1.2  # ds >= dd: the water's closest atom moves at most ds per ds
    assert np.abs(np.diff(energies)).max() < 1.5 * np.abs(pulls).max() * step + 1e-9  # no jump anywhere
    beyond = distances > 1.0
    assert np.abs(pulls[beyond]).max() == 0.0
    assert np.ptp(energies[beyond]) < 1e-9  # the water no longer counts
    inside = distances < 0.9
    assert np.abs(pulls[inside]).min() > 0.01  # it did interact before the shell
    # just inside the cutoff the switched force has died away smoothly
    assert abs(evaluate(at(1.0 - 1e-4))[1].sum()) < 1e-4 * np.abs(pulls).max()
    # inside the shell the force is the derivative of the energy along the pull
    x_mid = at(0.95)
    h = 1e-5
    plus, minus = x_mid.copy(), x_mid.copy()
    plus[water] += h * direction
    minus[water] -= h * direction
    numeric = -(evaluate(plus)[0] - evaluate(minus)[0]) / (2 * h)
    assert evaluate(x_mid)[1].sum() == pytest.approx(numeric, rel=1e-5, abs=1e-6)
