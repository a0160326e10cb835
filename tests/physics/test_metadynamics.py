"""Well-tempered metadynamics: analytic free energy of a harmonic pair, kill/resume, walkers on Dask, all kinds.

Oracle: a particle bound to a fixed one by ``0.5 K (r - r0)^2`` has, along the distance r in 3-D, the free
energy ``F(r) = 0.5 K (r - r0)^2 - 2 kT ln r + const`` (the Jacobian r^2 of the spherical shell).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u
import pytest

from biomol_nnp.analysis.free_energy import kt_kj_per_mol, load_fes
from biomol_nnp.config import SYSTEMS_DIR, CVSettings, MetadynamicsSettings, SamplingSystemSettings
from biomol_nnp.sampling.metadynamics import BIAS_DIR, run_metadynamics, total_bias

K_PAIR, R0 = 1000.0, 0.5
"""Harmonic pair: kJ/mol/nm^2, nm."""

PHI = CVSettings(name="phi", kind="torsion", atoms=[4, 6, 8, 14], width=0.35)
PSI = CVSettings(name="psi", kind="torsion", atoms=[6, 8, 14, 16], width=0.35)


def write_pair_system(folder: Path) -> SamplingSystemSettings:
    """PDB + serialized System of the harmonic pair (atom 0 massless, fixed at the origin)."""
    folder.mkdir(parents=True, exist_ok=True)
    topology = app.Topology()
    chain = topology.addChain()
    for _ in range(2):
        topology.addAtom("AR", app.element.argon, topology.addResidue("AR", chain))
    with open(folder / "pair.pdb", "w") as handle:
        app.PDBFile.writeFile(topology, np.array([[0.0, 0.0, 0.0], [R0, 0.0, 0.0]]) * u.nanometer, handle)
    system = openmm.System()
    system.addParticle(0.0)
    system.addParticle(12.0)
    bond = openmm.HarmonicBondForce()
    bond.addBond(0, 1, R0, K_PAIR)
    system.addForce(bond)
    (folder / "pair.xml").write_text(openmm.XmlSerializer.serialize(system))
    return SamplingSystemSettings(kind="mm", pdb=folder / "pair.pdb", system_xml=folder / "pair.xml")


def analytic_pair_fes(r: np.ndarray, temperature_k: float = 300.0) -> np.ndarray:
    """``F(r) = 0.5 K (r - r0)^2 - 2 kT ln r``, kJ/mol (shifted so its minimum is 0)."""
    f = 0.5 * K_PAIR * (r - R0) ** 2 - 2.0 * kt_kj_per_mol(temperature_k) * np.log(r)
    return f - f.min()


def pair_settings(folder: Path, steps: int, **overrides) -> MetadynamicsSettings:
    values = dict(
        system=write_pair_system(folder),
        cvs=[CVSettings(name="r", kind="distance", atoms=[0, 1], min_value=0.2, max_value=0.8, width=0.01)],
        steps=steps,
        bias_factor=8.0,
        height_kj_mol=1.0,
        frequency=100,
        save_frequency=steps // 4,
        report_interval=100,
        timestep_fs=2.0,
        friction_per_ps=5.0,
        platform="Reference",
        minimize_iterations=0,
        fes_bins=60,
    )
    values.update(overrides)
    return MetadynamicsSettings(**values)


def test_harmonic_pair_free_energy_within_1_kj_mol(tmp_path):
    """600k steps (1.2 ns) of a 2-particle system: the bias FES matches the analytic F within 1 kJ/mol in the well."""
    result = run_metadynamics(pair_settings(tmp_path, 600_000), tmp_path / "run")
    r = result.fes.axes[0]
    exact = analytic_pair_fes(r)
    well = exact < 2.0 * kt_kj_per_mol(300.0)  # ~ r0 +- 0.1 nm, F up to 5 kJ/mol
    deviation = result.fes.free_energy[well] - exact[well]
    deviation -= deviation.mean()  # F is defined up to a constant
    assert well.sum() >= 30
    assert np.max(np.abs(deviation)) < 1.0
    # the reweighted estimate agrees too, with error bars, and every file reloads
    reloaded = load_fes(result.files["fes_reweighted_json"])
    assert reloaded.uncertainty is not None and np.nanmax(reloaded.uncertainty[exact_on(reloaded)]) < 1.0
    assert (tmp_path / "run" / "fes.png").stat().st_size > 1000
    header = (tmp_path / "run" / "fes.csv").read_text().splitlines()[0]
    assert header == "r_nm,free_energy_kj_mol,uncertainty_kj_mol"


def exact_on(fes) -> np.ndarray:
    """Grid points of ``fes`` inside the well (analytic F < 1 kT)."""
    return analytic_pair_fes(fes.axes[0]) < kt_kj_per_mol(300.0)


def test_killed_run_resumes(tmp_path):
    """SIGKILL a metadynamics process after its first checkpoint; the rerun continues from the saved bias/state."""
    settings = pair_settings(tmp_path, 200_000, save_frequency=10_000)
    settings.to_yaml(tmp_path / "metad.yaml")
    out = tmp_path / "run"
    code = (
        "import sys; from biomol_nnp.config import MetadynamicsSettings as M; "
        "from biomol_nnp.sampling.metadynamics import run_metadynamics as r; "
        "r(M.from_yaml(sys.argv[1]), sys.argv[2])"
    )
    process = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "metad.yaml"), str(out)])
    progress = out / "walker_0" / "progress.json"
    deadline = time.time() + 120
    while not progress.is_file() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert progress.is_file(), "no checkpoint was written before the kill"
    saved_bias = total_bias(out / BIAS_DIR).copy()
    assert saved_bias.max() > 0
    result = run_metadynamics(settings, out)
    walker = result.files["summary"].read_text()
    assert '"resumed_from": 0' not in walker and '"steps_done": 200000' in walker
    final_bias = total_bias(out / BIAS_DIR)
    assert np.all(final_bias >= saved_bias - 1e-9)  # the saved Gaussians are kept
    colvar = np.load(out / "walker_0" / "colvar.npy")
    assert colvar.shape == (200_000 // 100, 2)
    assert np.array_equal(colvar[:, 0], np.arange(100, 200_001, 100))


@pytest.mark.parametrize(
    "workers", [0, pytest.param(2, marks=pytest.mark.slow)], ids=["in-process", "dask-local-cluster"]
)
def test_two_walkers_share_one_bias(tmp_path, workers):
    """Two walkers (in process, or as Dask tasks): both write into bias/, the total is their sum, both finish."""
    settings = pair_settings(tmp_path, 40_000, walkers=2, workers=workers, save_frequency=2000)
    result = run_metadynamics(settings, tmp_path / "run")
    files = sorted((tmp_path / "run" / BIAS_DIR).glob("bias_*.npy"))
    assert len({path.name.split("_")[1] for path in files}) == 2
    biases = [np.load(path) for path in files]
    assert all(bias.max() > 0 for bias in biases)
    assert np.allclose(total_bias(tmp_path / "run" / BIAS_DIR), np.sum(biases, axis=0))
    assert [w["steps_done"] for w in result_walkers(result)] == [40_000, 40_000]


def result_walkers(result) -> list[dict]:
    return json.loads(result.files["summary"].read_text())["walkers"]


@pytest.mark.parametrize("kind", ["mm", "refit", "nnp"])
def test_alanine_dipeptide_phi_psi_each_system_kind(kind, tmp_path):
    """2-D phi/psi metadynamics runs on the dipeptide for MM, refitted MM and NNP/MM, writing a 2-D FES."""
    from forcefield_refit.terms import FourierTorsion
    from forcefield_refit.writers.openmm_xml import write_ffxml
    from tests.toy_models import make_toy_model

    system = SamplingSystemSettings(kind=kind, pdb=SYSTEMS_DIR / "alanine_dipeptide" / "vacuum.pdb")
    if kind == "refit":
        phi_types = ("protein-C", "protein-N", "protein-CX", "protein-C")
        system.refit_xml = [write_ffxml(tmp_path / "refit.xml", [FourierTorsion(phi_types, [(1, 0.0, 5.0)])])]
    if kind == "nnp":
        system.model_path = make_toy_model(tmp_path / "toy.pt")
    steps = 1000 if kind == "nnp" else 2000
    settings = MetadynamicsSettings(
        system=system,
        cvs=[PHI, PSI],
        steps=steps,
        frequency=100,
        save_frequency=steps // 2,
        report_interval=50,
        timestep_fs=1.0 if kind == "nnp" else 2.0,
        minimize_iterations=10,
        fes_bins=12,
    )
    result = run_metadynamics(settings, tmp_path / "run")
    assert result.fes.free_energy.shape == (len(result.fes.axes[0]), len(result.fes.axes[1]))
    assert result.fes.cv_names == ["phi", "psi"] and np.nanmax(result.fes.free_energy) > 0
    assert (tmp_path / "run" / "fes.png").is_file()


def test_cli_metad_reads_its_yaml(tmp_path):
    """`biomol-nnp metad CONFIG -n N --walkers 2`: the YAML written by the settings runs through the CLI."""
    from biomol_nnp.cli import main

    pair_settings(tmp_path, 4000).to_yaml(tmp_path / "metad.yaml")
    args = ["-q", "--no-progress", "metad", str(tmp_path / "metad.yaml"), "-o", str(tmp_path / "out")]
    assert main([*args, "-n", "2000", "--walkers", "2"]) == 0
    walkers = json.loads((tmp_path / "out" / "metadynamics.json").read_text())["walkers"]
    assert [w["steps_done"] for w in walkers] == [2000, 2000]
    assert load_fes(tmp_path / "out" / "fes.json").cv_names == ["r"]


def test_walkers_with_identically_seeded_numpy_get_distinct_bias_files(tmp_path):
    """Two walker processes that seeded numpy alike must not share a Metadynamics id (their files would clash)."""
    from biomol_nnp.sampling.metadynamics import run_walker

    settings = pair_settings(tmp_path, 2000, walkers=2, save_frequency=1000)
    for walker in range(2):
        np.random.seed(0)  # what two identically initialised worker processes would have
        run_walker(settings, str(tmp_path / "run"), walker)
    ids = {path.name.split("_")[1] for path in (tmp_path / "run" / BIAS_DIR).glob("bias_*.npy")}
    assert len(ids) == 2
