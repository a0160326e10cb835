"""The production runner: outputs, per-term energies, ensemble uncertainty, guards, NPT + HMR.

Oracles: the analytic toy model (`tests.toy_models`) scales its pair term by 1 + 0.01 k for member k and
its embedding term is the same for every member, so for the ensemble energies E_k = P (1 + 0.01 k) + X
the energy std is |P| std(s) and each atom's force std is |dP/dx_i| std(s); the vacuum energy the log
reports is P mean(s). Small real systems come from `biomol_nnp.prepare.prepare` (a water box of ~1.6 nm).
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import openmm
import pytest
import torch

from biomol_nnp.config import SimulationSettings, SystemSettings
from biomol_nnp.exceptions import ConfigError, InputError, SimulationError
from biomol_nnp.qm.configurations import read_configurations
from biomol_nnp.simulate.runner import build_mixed_system, region_atoms, run_md
from biomol_nnp.simulate.uncertainty import ensemble_uncertainty, member_energies_forces
from tests.run_helpers import prepared_dipeptide
from tests.toy_models import ToyModel, make_toy_model

SCALES = 1.0 + 0.01 * np.arange(3)


@pytest.fixture(scope="module")
def toy_path(tmp_path_factory):
    return make_toy_model(tmp_path_factory.mktemp("toy") / "toy.pt")


def test_build_mixed_system(toy_path):
    topology, mm_system, mixed, ml_atoms, positions = build_mixed_system(
        SystemSettings(), SimulationSettings(model_path=toy_path)
    )
    assert ml_atoms == list(range(22))
    assert mixed.getNumParticles() == mm_system.getNumParticles() == topology.getNumAtoms() == len(positions)
    assert any(isinstance(f, openmm.PythonForce) for f in mixed.getForces())
    assert mixed.usesPeriodicBoundaryConditions()


def test_region_must_match_residues(toy_path):
    with pytest.raises(InputError, match="matches no residue"):
        build_mixed_system(SystemSettings(region_residues=["LIG"]), SimulationSettings(model_path=toy_path))


def test_run_md_writes_outputs(toy_path, tmp_path):
    simulation = SimulationSettings(model_path=toy_path, steps=20, report_interval=10, timestep_fs=1.0)
    result = run_md(SystemSettings(), simulation, tmp_path / "md", minimize_iterations=10, mm_benchmark_steps=10)
    assert result.trajectory.stat().st_size > 0
    rows = list(csv.reader(result.log.open()))
    assert rows[0][0].startswith("#") and len(rows) == 3 and len(rows[1]) == 17
    assert [int(row[0]) for row in rows[1:]] == [10, 20]
    assert result.ns_per_day > 0 and result.mm_ns_per_day is not None and result.mm_ns_per_day > 0
    assert result.n_ml_atoms == 22
    summary = json.loads((tmp_path / "md" / "run.json").read_text())
    assert summary["steps"] == 20 and summary["ns_per_day"] == pytest.approx(result.ns_per_day)


def test_region_atoms_lists_residues(toy_path):
    from openmm.app import PDBFile

    pdb = PDBFile(str(SystemSettings().vacuum_pdb))
    assert region_atoms(pdb.topology, ["ALA"]) == [a.index for a in pdb.topology.atoms() if a.residue.name == "ALA"]


def test_build_mechanical_mixed_system(toy_path):
    """The settings' other embedding goes through openmm-ml's mechanical embedding with our potential."""
    topology, mm_system, mixed, ml_atoms, positions = build_mixed_system(
        SystemSettings(), SimulationSettings(model_path=toy_path, embedding="mechanical")
    )
    context = openmm.Context(mixed, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    assert math.isfinite(context.getState(getEnergy=True).getPotentialEnergy()._value)


@pytest.fixture(scope="module")
def water_box(tmp_path_factory):
    region = "resname ALA or (resname HOH and around 3.5 resname ALA)"  # MDAnalysis: Angstrom
    return prepared_dipeptide(tmp_path_factory.mktemp("prepared") / "box", solvated=True, region=region)


def region_size(folder: Path) -> tuple[int, int]:
    """Atoms of the prepared region and how many of them are water oxygens."""
    region = json.loads((folder / "region.json").read_text())
    waters = sum(1 for residue in region["residues"] if residue["name"] == "HOH")
    return region["n_atoms"], waters


def box_volume(folder: Path) -> float:
    system = openmm.XmlSerializer.deserialize((folder / "system.xml").read_text())
    vectors = system.getDefaultPeriodicBoxVectors()
    return float(np.linalg.det(np.array([v.value_in_unit(openmm.unit.nanometer) for v in vectors])))


def n_atoms(folder: Path) -> int:
    return openmm.app.PDBFile(str(folder / "topology.pdb")).topology.getNumAtoms()


def _rows(path: Path) -> list[dict[str, float]]:
    lines = path.read_text().splitlines()
    header = [name.strip('"#') for name in lines[0].split(",")]
    return [dict(zip(header, map(float, line.split(",")), strict=True)) for line in lines[1:]]


def test_ensemble_uncertainty_matches_analytic_toy(toy_path):
    rng = np.random.default_rng(4)
    positions, numbers = rng.normal(scale=0.12, size=(5, 3)), [6, 1, 1, 8, 7]
    mm_positions, mm_charges = rng.normal(scale=0.4, size=(4, 3)), np.array([0.4, -0.4, 0.3, -0.3])
    energy_std, force_std = ensemble_uncertainty(toy_path, positions, numbers, 0.0, mm_positions, mm_charges)
    xyz = torch.tensor(positions, requires_grad=True)
    pair = torch.jit.script(ToyModel([1, 6, 7, 8]))._pair_energy(xyz, torch.tensor(numbers), torch.zeros(0, 3))
    (gradient,) = torch.autograd.grad(pair, xyz)
    assert energy_std == pytest.approx(abs(pair.item()) * SCALES.std(), rel=1e-10)
    assert force_std == pytest.approx(gradient.norm(dim=1).max().item() * SCALES.std(), rel=1e-10)
    energies, forces = member_energies_forces(toy_path, positions, numbers, 0.0, mm_positions, mm_charges)
    np.testing.assert_allclose(forces[:, 5:].std(axis=0), 0.0, atol=1e-9)  # embedding: same in every member
    with pytest.raises(InputError, match="one atomic number per region atom"):
        ensemble_uncertainty(toy_path, positions, numbers[:3], 0.0)


def test_log_terms_and_uncertainty_columns(toy_path, water_box, tmp_path):
    """Per-term energies add up (restraints on the region waters included); uncertainty and vacuum columns obey
    the toy identities (region with link caps and waters)."""
    settings = SimulationSettings(
        model_path=toy_path,
        prepared_dir=water_box,
        steps=20,
        report_interval=10,
        checkpoint_interval=10,
        minimize_iterations=10,
    )
    result = run_md(SystemSettings(), settings, tmp_path / "md")
    rows = _rows(result.log)
    n_region, n_waters = region_size(water_box)
    assert [row["step"] for row in rows] == [10, 20] and result.n_ml_atoms == n_region and n_waters > 0
    for row in rows:
        terms = row["mm_kj_mol"] + row["nnp_kj_mol"] + row["restraints_kj_mol"]
        assert row["potential_kj_mol"] == pytest.approx(terms, abs=1e-6)
        assert row["restraints_kj_mol"] >= 0.0
        assert row["embedding_kj_mol"] == pytest.approx(row["nnp_kj_mol"] - row["nnp_vacuum_kj_mol"], abs=1e-6)
        assert row["embedding_kj_mol"] != 0.0
        pair = row["nnp_vacuum_kj_mol"] / SCALES.mean()
        assert row["energy_std_kj_mol"] == pytest.approx(abs(pair) * SCALES.std(), rel=1e-6)
        assert row["volume_nm3"] == pytest.approx(box_volume(water_box), rel=1e-6)
        assert row["progress_percent"] == pytest.approx(100 * row["step"] / 20)


def test_uncertainty_guard_stop_then_collect(toy_path, water_box, tmp_path):
    """'stop' checkpoints and saves the frame; resumed with 'collect', every report lands in a label-ready file."""
    folder = tmp_path / "guard"
    settings = SimulationSettings(
        model_path=toy_path,
        prepared_dir=water_box,
        steps=30,
        report_interval=10,
        checkpoint_interval=10,
        force_std_threshold_kj_mol_nm=1e-3,
        uncertainty_action="stop",
        minimize_iterations=10,
    )
    with pytest.raises(SimulationError, match="uncertainty guard.*at step 10"):
        run_md(SystemSettings(), settings, folder)
    assert json.loads((folder / "checkpoint.json").read_text())["step"] == 10
    assert (folder / "uncertain_step_10.pdb").stat().st_size > 0
    collect = settings.model_copy(update={"uncertainty_action": "collect"})
    result = run_md(SystemSettings(), collect, folder, resume=True)
    assert result.resumed_from_step == 10 and result.uncertain_frames == 2
    configs = read_configurations(folder / "uncertain" / "configurations.h5")
    assert [c.frame for c in configs] == [20, 30]
    assert len(configs[0].atomic_numbers) == region_size(water_box)[0] + 2  # + 2 link-hydrogen caps
    assert list(configs[0].atomic_numbers[-2:]) == [1, 1] and configs[0].n_mm > 0
    with np.load(folder / "uncertain" / "frame_0000000020.npz") as frame:
        assert frame["positions"].shape == (n_atoms(water_box) + 2, 3) and frame["max_force_std"] > 1e-3
    # a frame a killed run wrote after its last checkpoint (step 30) is dropped on resume
    shutil.copy(folder / "uncertain" / "frame_0000000020.npz", folder / "uncertain" / "frame_0000000035.npz")
    run_md(SystemSettings(), collect.model_copy(update={"steps": 40}), folder, resume=True)
    assert [c.frame for c in read_configurations(folder / "uncertain" / "configurations.h5")] == [20, 30, 40]


def test_npt_with_hydrogen_mass_repartitioning(water_box, tmp_path):
    """Pure MM, NPT (barostat every 5 steps), hydrogens at 3 Da and a 4 fs step: the box moves, the run is stable."""
    settings = SimulationSettings(
        mm_only=True,
        prepared_dir=water_box,
        ensemble="npt",
        barostat_interval=5,
        hydrogen_mass_amu=3.0,
        timestep_fs=4.0,
        steps=200,
        report_interval=20,
        checkpoint_interval=100,
    )
    result = run_md(SystemSettings(), settings, tmp_path / "npt")
    rows = _rows(result.log)
    volumes = [row["volume_nm3"] for row in rows]
    assert len(set(volumes)) > 1
    assert all(100 < row["temperature_k"] < 500 for row in rows[2:])
    assert math.isfinite(result.final_potential_kj_mol)


def test_nan_guard_saves_last_good_state(water_box, tmp_path):
    """A 60 fs step blows the MM water box up; the run stops naming the step and leaves the last good state."""
    settings = SimulationSettings(
        mm_only=True, prepared_dir=water_box, timestep_fs=60.0, steps=400, report_interval=2, checkpoint_interval=2
    )
    with pytest.raises(SimulationError, match="at step \\d+; the last good state \\(step \\d+\\).*timestep_fs"):
        run_md(SystemSettings(), settings, tmp_path / "nan")
    state = openmm.XmlSerializer.deserialize((tmp_path / "nan" / "last_good_state.xml").read_text())
    assert np.isfinite(state.getPositions(asNumpy=True)._value).all()


def test_resume_refuses_a_changed_model_file(water_box, tmp_path):
    model = make_toy_model(tmp_path / "model.pt")
    settings = SimulationSettings(
        model_path=model, prepared_dir=water_box, steps=10, report_interval=10, minimize_iterations=0
    )
    run_md(SystemSettings(), settings, tmp_path / "run")
    make_toy_model(model, ensemble_size=2)  # another model at the same path
    with pytest.raises(ConfigError, match="is not the one the checkpointed run .* used"):
        run_md(SystemSettings(), settings.model_copy(update={"steps": 20}), tmp_path / "run", resume=True)
