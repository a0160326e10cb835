"""A short NNP/MM run of the solvated dipeptide with the toy model writes its outputs and a speed."""

from __future__ import annotations

import csv
import json
import math

import openmm
import pytest

from biomol_nnp.config import SimulationSettings, SystemSettings
from biomol_nnp.exceptions import InputError
from biomol_nnp.simulate.runner import build_mixed_system, region_atoms, run_md
from tests.toy_models import make_toy_model


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
    result = run_md(
        SystemSettings(), simulation, tmp_path / "md", minimize_iterations=10, mm_benchmark_steps=10
    )
    assert result.trajectory.stat().st_size > 0
    rows = list(csv.reader(result.log.open()))
    assert rows[0][0].startswith("#") and len(rows) == 3
    assert [int(row[0]) for row in rows[1:]] == [10, 20]
    assert result.ns_per_day > 0 and result.mm_ns_per_day is not None and result.mm_ns_per_day > 0
    assert result.n_ml_atoms == 22
    summary = json.loads((tmp_path / "md" / "run.json").read_text())
    assert summary["steps"] == 20 and summary["ns_per_day"] == pytest.approx(result.ns_per_day)


def test_region_atoms_lists_residues(toy_path):
    from openmm.app import PDBFile

    pdb = PDBFile(str(SystemSettings().vacuum_pdb))
    assert region_atoms(pdb.topology, ["ALA"]) == [
        a.index for a in pdb.topology.atoms() if a.residue.name == "ALA"
    ]


def test_build_mechanical_mixed_system(toy_path):
    """The settings' other embedding goes through openmm-ml's mechanical embedding with our potential."""
    topology, mm_system, mixed, ml_atoms, positions = build_mixed_system(
        SystemSettings(), SimulationSettings(model_path=toy_path, embedding="mechanical")
    )
    context = openmm.Context(
        mixed, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
    )
    context.setPositions(positions)
    assert math.isfinite(context.getState(getEnergy=True).getPotentialEnergy()._value)
