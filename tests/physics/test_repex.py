"""Replica exchange and REST2: canonical sampling of analytic oscillators, REST2 scaling identities, bad input."""

from __future__ import annotations

import copy
import math

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u
import openmmml  # noqa: F401  (openmm-ml first: it loads our entry points)
import pytest
import torch
from openmmml import MLPotential

from biomol_nnp.config import SYSTEMS_DIR, ReplicaExchangeSettings, SamplingSystemSettings
from biomol_nnp.exceptions import ConfigError, InputError
from biomol_nnp.models.export import load_model
from biomol_nnp.sampling.repex import (
    _load_log,
    count_round_trips,
    estimate_memory,
    exchange_probability,
    neighbour_acceptance,
    run_replica_exchange,
    run_replica_exchange_system,
    temperature_ladder,
)
from biomol_nnp.sampling.rest2 import rest2_scales, rest2_states, rest2_system, set_rest2_scale
from tests.toy_models import make_toy_model

SOLVATED_PDB = SYSTEMS_DIR / "alanine_dipeptide" / "solvated.pdb"
VACUUM_PDB = SYSTEMS_DIR / "alanine_dipeptide" / "vacuum.pdb"
PEPTIDE = ("ACE", "ALA", "NME")
R_KJ = u.MOLAR_GAS_CONSTANT_R.value_in_unit(u.kilojoule_per_mole / u.kelvin)


def energy(system, positions, groups=-1, scale=None):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    if scale is not None:
        set_rest2_scale(context, scale)
    return context.getState(getEnergy=True, groups=groups).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)


def oscillators(n_particles=40, k=12000.0, mass=12.0):
    """Independent 3-D harmonic oscillators: <E_pot> = 3/2 N kT and var(E_pot) = 3/2 N (kT)^2 exactly."""
    system = openmm.System()
    force = openmm.CustomExternalForce("0.5*k*(x^2 + y^2 + z^2)")
    force.addGlobalParameter("k", k)
    topology = app.Topology()
    residue = topology.addResidue("OSC", topology.addChain())
    for i in range(n_particles):
        system.addParticle(mass)
        force.addParticle(i, [])
        topology.addAtom("C", app.element.carbon, residue)
    system.addForce(force)
    rng = np.random.default_rng(3)
    return topology, system, rng.normal(0.0, 0.01, (n_particles, 3)) * u.nanometer


# ---------------------------------------------------------------- replica exchange


def test_temperature_replica_exchange_samples_each_state_canonically(tmp_path):
    """Short MD per iteration (0.04 ps, a fifth of the thermostat's relaxation time) so the exchanges carry much of
    the sampling: a wrong acceptance rule would bias each state's energy towards its neighbours' temperatures.
    450 degrees of freedom: one sample's energy has a relative spread of 6.7 %, the mean over ~50 independent
    samples ~1 %; the states are 10 % apart in temperature."""
    topology, system, positions = oscillators(150)
    n = system.getNumParticles()
    settings = ReplicaExchangeSettings(
        kind="temperature",
        n_replicas=3,
        temperature_k=300.0,
        max_temperature_k=360.0,
        iterations=300,
        steps_per_iteration=20,
        friction_per_ps=5.0,
        equilibration_steps=200,
        minimize_iterations=0,
        platform="Reference",
        trajectories=False,
        seed=11,
    )
    temperatures = temperature_ladder(300.0, 360.0, 3)
    states = [{"temperature": t * u.kelvin} for t in temperatures]
    result = run_replica_exchange_system(topology, system, positions, states, settings, tmp_path, progress=False)
    reduced, replica_state = _load_log(tmp_path / "replicas", 3)
    assert reduced.shape == (300, 3, 3) and result.iterations == 300
    for k, temperature in enumerate(temperatures):
        kt = R_KJ * temperature
        in_state = np.array([reduced[it, np.flatnonzero(replica_state[it] == k)[0], k] for it in range(300)]) * kt
        sample = in_state[50:]
        assert np.mean(sample) == pytest.approx(1.5 * n * kt, rel=0.03), k
        assert np.var(sample) == pytest.approx(1.5 * n * kt**2, rel=0.3), k
    assert all(0.05 < a < 0.95 for a in result.acceptance)
    assert result.round_trips >= 1


def test_exchange_probability_is_the_metropolis_rule_for_temperatures():
    """u_r(k) = beta_k E_r: swapping replicas at beta_a, beta_b has probability min(1, exp((b_a - b_b)(E_a - E_b)))."""
    betas = np.array([1 / 2.5, 1 / 3.0])
    e = np.array([-10.0, -4.0])
    reduced = np.outer(e, betas)
    expected = min(1.0, math.exp((betas[0] - betas[1]) * (e[0] - e[1])))
    assert exchange_probability(reduced, 0, 1, 0, 1) == pytest.approx(expected)
    assert exchange_probability(reduced, 1, 0, 0, 1) == 1.0  # the reverse move, downhill
    # detailed balance: pi(x) p(x -> y) = pi(y) p(y -> x)
    weight_x = math.exp(-reduced[0, 0] - reduced[1, 1])
    weight_y = math.exp(-reduced[0, 1] - reduced[1, 0])
    assert weight_x * exchange_probability(reduced, 0, 1, 0, 1) == pytest.approx(
        weight_y * exchange_probability(reduced, 1, 0, 0, 1)
    )
    assert neighbour_acceptance(reduced[None], np.array([[0, 1]])) == pytest.approx([expected])


def test_round_trips_counts_bottom_top_bottom():
    states = np.array([[0, 1], [1, 0], [1, 0], [0, 1], [1, 0]])
    assert count_round_trips(states) == 2


def test_rest2_run_resumes_from_checkpoints(tmp_path):
    settings = ReplicaExchangeSettings(
        kind="rest2", n_replicas=2, iterations=3, steps_per_iteration=20, equilibration_steps=20, platform="Reference"
    )
    first = run_replica_exchange(settings, tmp_path, progress=False)
    assert first.iterations == 3 and first.states[1]["effective_temperature_k"] == pytest.approx(450.0)
    settings.iterations = 5
    second = run_replica_exchange(settings, tmp_path, progress=False)
    log = np.loadtxt(tmp_path / "replicas" / "log.csv", delimiter=",", skiprows=1)
    assert second.iterations == 5 and list(log[:, 0]) == [1, 2, 3, 4, 5]
    import MDAnalysis

    universe = MDAnalysis.Universe(str(VACUUM_PDB), str(tmp_path / "replicas" / "state_0.dcd"))
    assert len(universe.trajectory) == 5 and len(universe.atoms) == 22


def test_a_folder_without_checkpoints_is_not_overwritten(tmp_path):
    (tmp_path / "replicas").mkdir()
    (tmp_path / "replicas" / "log.csv").write_text("Iteration,Step\n")
    settings = ReplicaExchangeSettings(kind="temperature", n_replicas=2, platform="Reference")
    with pytest.raises(InputError, match="no checkpoint for each of the 2 replicas"):
        run_replica_exchange(settings, tmp_path, progress=False)


def test_replicas_that_do_not_fit_are_refused_before_running(tmp_path):
    settings = ReplicaExchangeSettings(kind="temperature", n_replicas=8, max_memory_gb=0.01, platform="Reference")
    with pytest.raises(ConfigError, match=r"n_replicas=8 needs about .* GB .* lower n_replicas"):
        run_replica_exchange(settings, tmp_path, progress=False)
    assert not (tmp_path / "replicas").exists()
    topology, system, _ = oscillators(1000)
    estimate = estimate_memory(system, 100, limit_gb=1.0)
    assert estimate.total_bytes == estimate.context_bytes + 100 * estimate.per_replica_bytes


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"temperature_k": 400.0, "max_temperature_k": 350.0}, "temperature ladder"),
        ({"system": SamplingSystemSettings(kind="nnp")}, "needs system.model_path"),
    ],
)
def test_bad_settings_are_refused(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        run_replica_exchange(ReplicaExchangeSettings(**kwargs), tmp_path, progress=False)


# ---------------------------------------------------------------- REST2 identities


@pytest.fixture(scope="module")
def solvated():
    pdb = app.PDBFile(str(SOLVATED_PDB))
    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
    system = forcefield.createSystem(pdb.topology, nonbondedMethod=app.PME, nonbondedCutoff=0.9 * u.nanometer)
    region = [a.index for a in pdb.topology.atoms() if a.residue.name in PEPTIDE]
    return pdb.topology, system, pdb.positions, region


@pytest.fixture(scope="module")
def cluster():
    """Dipeptide and its 6 nearest waters, no cutoff: energies split exactly into region/environment pairs."""
    pdb = app.PDBFile(str(SOLVATED_PDB))
    xyz = pdb.getPositions(asNumpy=True).value_in_unit(u.nanometer)
    peptide = [a.index for a in pdb.topology.atoms() if a.residue.name in PEPTIDE]
    waters = [r for r in pdb.topology.residues() if r.name == "HOH"]
    oxygen = {r: next(a.index for a in r.atoms() if a.element.symbol == "O") for r in waters}
    keep = sorted(waters, key=lambda r: np.min(np.linalg.norm(xyz[peptide] - xyz[oxygen[r]], axis=1)))[:6]
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.delete([r for r in waters if r not in keep])
    modeller.topology.setPeriodicBoxVectors(None)
    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
    system = forcefield.createSystem(modeller.topology, nonbondedMethod=app.NoCutoff, rigidWater=False)
    region = [a.index for a in modeller.topology.atoms() if a.residue.name in PEPTIDE]
    return modeller.topology, system, modeller.positions, region


def _grouped(system):
    """Copy with bonds/angles in group 1, torsions in 2, nonbonded in 3."""
    copied = copy.deepcopy(system)
    for force in copied.getForces():
        if isinstance(force, (openmm.HarmonicBondForce, openmm.HarmonicAngleForce)):
            force.setForceGroup(1)
        elif isinstance(force, openmm.PeriodicTorsionForce):
            force.setForceGroup(2)
        elif isinstance(force, openmm.NonbondedForce):
            force.setForceGroup(3)
    return copied


def _zeroed(system, atoms):
    """Copy whose NonbondedForce has no charge or LJ on ``atoms`` (nor in exceptions touching them)."""
    copied = copy.deepcopy(system)
    force = next(f for f in copied.getForces() if isinstance(f, openmm.NonbondedForce))
    for i in atoms:
        _, sigma, _ = force.getParticleParameters(i)
        force.setParticleParameters(i, 0.0, sigma, 0.0)
    for k in range(force.getNumExceptions()):
        i, j, _, sigma, _ = force.getExceptionParameters(k)
        if i in atoms or j in atoms:
            force.setExceptionParameters(k, i, j, 0.0, sigma, 0.0)
    return copied


def test_rest2_at_scale_one_is_the_original_system(solvated):
    topology, system, positions, region = solvated
    rest = rest2_system(system, region)
    assert energy(rest, positions, scale=1.0) == pytest.approx(energy(system, positions), abs=1e-6)


def test_rest2_scales_region_region_by_s_and_region_environment_by_sqrt_s(cluster):
    """Oracle from the original System alone: E_rr, E_ee by zeroing the other side, E_re = E_nb - E_rr - E_ee."""
    topology, system, positions, region = cluster
    environment = sorted(set(range(system.getNumParticles())) - set(region))
    grouped = _grouped(system)
    bonded, torsions = energy(grouped, positions, {1}), energy(grouped, positions, {2})
    nb_all = energy(grouped, positions, {3})
    nb_rr = energy(_grouped(_zeroed(system, environment)), positions, {3})
    nb_ee = energy(_grouped(_zeroed(system, region)), positions, {3})
    nb_re = nb_all - nb_rr - nb_ee
    assert abs(nb_re) > 1.0 and abs(nb_rr) > 10.0  # the test can see both terms (tolerance 1e-6)
    rest = rest2_system(system, region)
    for s in (1.0, 0.7, 0.4):
        expected = bonded + s * (torsions + nb_rr) + math.sqrt(s) * nb_re + nb_ee
        assert energy(rest, positions, scale=s) == pytest.approx(expected, abs=1e-6 * abs(expected) + 1e-6), s


def test_rest2_with_pme_is_quadratic_in_sqrt_s(solvated):
    """PME energies: E(s) = a + b sqrt(s) + c s exactly; fit three scales, predict a fourth."""
    topology, system, positions, region = solvated
    rest = rest2_system(system, region)
    roots = np.array([1.0, 0.5, 0.75])
    values = [energy(rest, positions, scale=r * r) for r in roots]
    coefficients = np.linalg.solve(np.vander(roots, 3, increasing=True), values)
    predicted = coefficients @ np.array([1.0, 0.6, 0.36])
    assert energy(rest, positions, scale=0.36) == pytest.approx(predicted, abs=1e-4)
    assert abs(coefficients[1]) > 1.0  # region-water interactions are present


@pytest.fixture(scope="module")
def toy_path(tmp_path_factory):
    return make_toy_model(tmp_path_factory.mktemp("toy") / "toy.pt")


def test_rest2_nnp_scales_vacuum_energy_by_s_and_embedding_by_sqrt_s(toy_path, cluster):
    topology, system, positions, region = cluster
    mixed = MLPotential("biomol-nnp", modelPath=str(toy_path)).createMixedSystem(
        topology, system, region, embedding="electrostatic", forceGroup=5
    )
    rest = rest2_system(mixed, region)
    module, _ = load_model(toy_path)
    xyz = torch.tensor(np.asarray(positions.value_in_unit(u.nanometer)), dtype=torch.float64)
    numbers = torch.tensor([a.element.atomic_number for a in topology.atoms()])[region]
    vacuum = float(
        module(
            xyz[region],
            numbers,
            torch.tensor(0.0, dtype=torch.float64),
            torch.zeros((0, 3), dtype=torch.float64),
            torch.zeros(0, dtype=torch.float64),
            torch.zeros((0, 3), dtype=torch.float64),
        )
    )
    embedded = energy(mixed, positions, {5})
    assert abs(embedded - vacuum) > 1.0
    for s in (1.0, 0.5):
        assert energy(rest, positions, {5}, scale=s) == pytest.approx(
            s * vacuum + math.sqrt(s) * (embedded - vacuum), abs=1e-6
        )
    assert energy(rest, positions, scale=1.0) == pytest.approx(energy(mixed, positions), abs=1e-6)


def test_rest2_nnp_forces_are_the_energy_gradient(toy_path, cluster):
    topology, system, positions, region = cluster
    mixed = MLPotential("biomol-nnp", modelPath=str(toy_path)).createMixedSystem(
        topology, system, region, embedding="electrostatic"
    )
    rest = rest2_system(mixed, region)
    context = openmm.Context(rest, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    set_rest2_scale(context, 0.5)
    xyz = np.asarray(positions.value_in_unit(u.nanometer))
    context.setPositions(xyz)
    forces = context.getState(getForces=True).getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer)
    h = 1e-5
    for atom in (region[0], region[-1], len(xyz) - 1):  # an ML atom, another, a water (embedding force)
        shifted = []
        for sign in (1, -1):
            moved = xyz.copy()
            moved[atom, 0] += sign * h
            context.setPositions(moved)
            shifted.append(context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole))
        assert forces[atom, 0] == pytest.approx(-(shifted[0] - shifted[1]) / (2 * h), rel=1e-4, abs=1e-3)


def test_rest2_bad_input(solvated):
    topology, system, positions, region = solvated
    with pytest.raises(InputError, match="give distinct atom indices"):
        rest2_system(system, [system.getNumParticles() + 5])
    with pytest.raises(InputError, match=r"each s = T0/T_m must be in \(0, 1\]"):
        rest2_states([1.0, 1.5])
    with pytest.raises(InputError, match="need 0 < T0 < T_max"):
        rest2_scales(300.0, 300.0, 4)
    custom = copy.deepcopy(system)
    custom.addForce(openmm.CustomNonbondedForce("0"))
    with pytest.raises(InputError, match="CustomNonbondedForce.* is not supported by REST2"):
        rest2_system(custom, region)


# ---------------------------------------------------------------- OPES


def bonded_pair(k=2000.0, r0=0.3):
    """A fixed particle (mass 0) and a particle bound to it harmonically: F(r) = k (r - r0)^2 / 2 - 2 kT ln r."""
    system = openmm.System()
    system.addParticle(0.0)
    system.addParticle(10.0)
    bond = openmm.HarmonicBondForce()
    bond.addBond(0, 1, r0, k)
    system.addForce(bond)
    topology = app.Topology()
    residue = topology.addResidue("PAIR", topology.addChain())
    for _ in range(2):
        topology.addAtom("C", app.element.carbon, residue)
    return topology, system, np.array([[0.0, 0.0, 0.0], [r0, 0.0, 0.0]]) * u.nanometer


def test_opes_recovers_the_analytic_free_energy_of_a_bond(tmp_path):
    from openmm.app import BiasVariable

    from biomol_nnp.config import CVSettings, OpesSettings
    from biomol_nnp.sampling.cvs import distance_cv
    from biomol_nnp.sampling.opes import run_opes_system

    k, r0, temperature = 2000.0, 0.3, 300.0
    topology, system, positions = bonded_pair(k, r0)
    cv = CVSettings(name="r", kind="distance", atoms=[0, 1], min_value=0.15, max_value=0.45, width=0.02)
    settings = OpesSettings(
        cvs=[cv], steps=40000, barrier_kj_mol=12.0, frequency=200, save_frequency=10000, report_interval=200,
        platform="Reference", minimize_iterations=0, timestep_fs=2.0, friction_per_ps=5.0, temperature_k=temperature,
    )  # fmt: skip
    variables = [BiasVariable(distance_cv([0, 1]), 0.15, 0.45, 0.02, False, 61)]
    result = run_opes_system(topology, system, positions, variables, settings, tmp_path, progress=False)
    r = result.fes.axes[0]
    kt = R_KJ * temperature
    exact = 0.5 * k * (r - r0) ** 2 - 2 * kt * np.log(r)
    exact -= exact.min()
    window = exact < 8.0  # sampled region
    estimate = result.fes.free_energy[window]
    offset = np.mean(estimate - exact[window])
    assert np.max(np.abs(estimate - offset - exact[window])) < 1.0  # kJ/mol
    assert result.kernels >= 5 and (tmp_path / "fes.png").is_file()


def test_opes_resumes_from_its_checkpoint(tmp_path):
    from biomol_nnp.config import OpesSettings
    from biomol_nnp.sampling.opes import run_opes

    settings = OpesSettings(steps=400, frequency=100, save_frequency=200, report_interval=100, platform="Reference")
    first = run_opes(settings, tmp_path, progress=False)
    settings.steps = 600
    second = run_opes(settings, tmp_path, progress=False)
    colvar = np.load(tmp_path / "colvar.npy")
    assert first.steps == 400 and second.steps == 600
    assert list(colvar[:, 0]) == [100, 200, 300, 400, 500, 600]
    assert second.fes.free_energy.shape == (len(second.fes.axes[0]), len(second.fes.axes[1]))


def test_opes_bad_settings(tmp_path):
    from biomol_nnp.config import CVSettings, OpesSettings
    from biomol_nnp.sampling.opes import run_opes

    with pytest.raises(ConfigError, match="save_frequency=250 is not a multiple of frequency=100"):
        run_opes(OpesSettings(frequency=100, save_frequency=250), tmp_path, progress=False)
    mixed = [CVSettings(name="phi", atoms=[4, 6, 8, 14]), CVSettings(name="d", kind="distance", atoms=[1, 2])]
    with pytest.raises(ConfigError, match="cvs mix kinds"):
        run_opes(OpesSettings(cvs=mixed), tmp_path, progress=False)
    missing = [CVSettings(name="phi", atoms=[4, 6, 8, 99])]
    with pytest.raises(InputError, match=r"atoms \[99\] do not exist"):
        run_opes(OpesSettings(cvs=missing, platform="Reference"), tmp_path, progress=False)


def test_cli_repex_runs_and_resumes(tmp_path):
    from biomol_nnp.cli import main

    settings = ReplicaExchangeSettings(
        kind="temperature", n_replicas=2, iterations=2, steps_per_iteration=10, equilibration_steps=10,
        platform="Reference", trajectories=False,
    )  # fmt: skip
    config = settings.to_yaml(tmp_path / "repex.yaml")
    assert main(["-q", "--no-progress", "repex", str(config), "-o", str(tmp_path / "out")]) == 0
    assert main(["-q", "--no-progress", "repex", str(config), "-o", str(tmp_path / "out"), "-n", "3"]) == 0
    import json

    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["iterations"] == 3 and summary["states"][1]["temperature_k"] == pytest.approx(450.0)


@pytest.mark.slow
def test_killed_repex_resumes_from_its_checkpoints(tmp_path):
    """SIGKILL a `biomol-nnp repex` process after some iterations, then finish the run in process."""
    import signal
    import subprocess
    import sys
    import time

    settings = ReplicaExchangeSettings(
        kind="rest2", n_replicas=3, iterations=40, steps_per_iteration=200, equilibration_steps=50,
        platform="Reference",
    )  # fmt: skip
    config = settings.to_yaml(tmp_path / "repex.yaml")
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "biomol_nnp.cli", "-q", "--no-progress", "repex", str(config), "-o", str(out)]
    )
    log = out / "replicas" / "log.csv"
    deadline = time.time() + 600
    while time.time() < deadline and (not log.is_file() or len(log.read_text().splitlines()) < 4):
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = len(log.read_text().splitlines()) - 1
    assert 3 <= done < 40
    result = run_replica_exchange(settings, out, progress=False)
    iterations = np.loadtxt(log, delimiter=",", skiprows=1)[:, 0]
    assert result.iterations == 40 and iterations[-1] == 40 and len(set(iterations)) == len(iterations)


def test_rest2_of_an_nnp_region_with_link_caps_runs(toy_path, tmp_path):
    """ALA of the capped dipeptide on the NNP: two cut C-N bonds get link hydrogens (virtual sites)."""
    pdb = app.PDBFile(str(VACUUM_PDB))
    mm = app.ForceField("amber14-all.xml").createSystem(pdb.topology, nonbondedMethod=app.NoCutoff)
    region = [a.index for a in pdb.topology.atoms() if a.residue.name == "ALA"]
    mixed = MLPotential("biomol-nnp", modelPath=str(toy_path)).createMixedSystem(
        pdb.topology, mm, region, embedding="electrostatic"
    )
    assert mixed.getNumParticles() == 24
    settings = ReplicaExchangeSettings(
        kind="rest2", n_replicas=2, iterations=2, steps_per_iteration=10, equilibration_steps=10,
        platform="Reference", timestep_fs=0.5,
    )  # fmt: skip
    states = rest2_states(rest2_scales(300.0, 400.0, 2))
    result = run_replica_exchange_system(
        pdb.topology, rest2_system(mixed, region), pdb.positions, states, settings, tmp_path, progress=False
    )
    import MDAnalysis

    universe = MDAnalysis.Universe(str(VACUUM_PDB), str(tmp_path / "replicas" / "state_1.dcd"))
    assert result.iterations == 2 and len(universe.trajectory) == 2
