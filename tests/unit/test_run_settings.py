"""Run settings: defaults, YAML round trip, and the combinations refused before anything is built."""

from __future__ import annotations

import struct

import MDAnalysis
import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u
import pytest

from biomol_nnp.cli import build_parser
from biomol_nnp.config import SimulationSettings, SystemSettings
from biomol_nnp.exceptions import ConfigError, InputError
from biomol_nnp.simulate.checkpoint import dcd_frame_count, restore_files
from biomol_nnp.simulate.runner import check_run_settings, run_md
from biomol_nnp.simulate.systems import (
    MM_GROUP,
    NNP_GROUP,
    assign_force_groups,
    build_run_system,
    degrees_of_freedom,
    repartition_hydrogen_mass,
)
from tests.run_helpers import DIPEPTIDE_PDB


def test_yaml_round_trip(tmp_path):
    settings = SimulationSettings(
        ensemble="npt", hydrogen_mass_amu=3.0, force_std_threshold_kj_mol_nm=40.0, uncertainty_action="collect"
    )
    assert SimulationSettings.from_yaml(settings.to_yaml(tmp_path / "s.yaml")) == settings
    assert SimulationSettings().ensemble == "nvt" and SimulationSettings().trajectory_format == "dcd"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"report_interval": 30, "checkpoint_interval": 1000}, "not a multiple of report_interval"),
        ({"mm_only": True, "force_std_threshold_kj_mol_nm": 10.0}, "needs a model but mm_only"),
        ({"uncertainty_action": "stop"}, "needs force_std_threshold_kj_mol_nm"),
        ({"force_std_threshold_kj_mol_nm": 10.0, "report_uncertainty": False}, "report_uncertainty is false"),
    ],
)
def test_inconsistent_settings_are_refused(values, message):
    with pytest.raises(ConfigError, match=message):
        check_run_settings(SimulationSettings(**values))


def test_unknown_key_and_bad_values_are_refused(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("ensemble: npt\npresure_bar: 2\n")
    with pytest.raises(ConfigError, match="presure_bar"):
        SimulationSettings.from_yaml(path)
    with pytest.raises(ValueError, match="ensemble"):
        SimulationSettings(ensemble="nve")


def test_missing_model_and_resume_without_checkpoint_fail_at_once(tmp_path):
    with pytest.raises(ConfigError, match="does not exist.*mm_only"):
        build_run_system(SystemSettings(), SimulationSettings(model_path=tmp_path / "none.pt"))
    with pytest.raises(ConfigError, match="no checkpoint"):
        run_md(SystemSettings(), SimulationSettings(mm_only=True), tmp_path / "new", resume=True)


def test_npt_without_periodic_box_is_refused(tmp_path):
    pdb = app.PDBFile(str(DIPEPTIDE_PDB))
    system = app.ForceField("amber14-all.xml").createSystem(pdb.topology, nonbondedMethod=app.NoCutoff)
    (tmp_path / "system.xml").write_text(openmm.XmlSerializer.serialize(system))
    (tmp_path / "topology.pdb").write_text(DIPEPTIDE_PDB.read_text())
    (tmp_path / "region.json").write_text('{"atom_indices": [6, 7, 8]}')
    settings = SimulationSettings(mm_only=True, prepared_dir=tmp_path, ensemble="npt")
    with pytest.raises(ConfigError, match="npt' needs a periodic box"):
        build_run_system(SystemSettings(), settings)
    (tmp_path / "region.json").unlink()
    with pytest.raises(InputError, match="lacks \\['region.json'\\]"):
        build_run_system(SystemSettings(), settings.model_copy(update={"ensemble": "nvt"}))


def test_hydrogen_mass_repartitioning_keeps_total_mass():
    pdb = app.PDBFile(str(DIPEPTIDE_PDB))
    system = app.ForceField("amber14-all.xml").createSystem(pdb.topology, constraints=app.HBonds)
    masses = np.array([system.getParticleMass(i).value_in_unit(u.dalton) for i in range(system.getNumParticles())])
    changed = repartition_hydrogen_mass(system, pdb.topology, 3.0)
    after = np.array([system.getParticleMass(i).value_in_unit(u.dalton) for i in range(system.getNumParticles())])
    hydrogens = [a.index for a in pdb.topology.atoms() if a.element.symbol == "H"]
    assert changed == len(hydrogens) == 12
    assert after.sum() == pytest.approx(masses.sum())
    np.testing.assert_allclose(after[hydrogens], 3.0)
    with pytest.raises(InputError, match="hydrogen_mass_amu=20"):
        repartition_hydrogen_mass(system, pdb.topology, 20.0)


def test_force_groups_and_degrees_of_freedom():
    pdb = app.PDBFile(str(DIPEPTIDE_PDB))
    system = app.ForceField("amber14-all.xml").createSystem(pdb.topology, constraints=app.HBonds)
    force = openmm.PythonForce(lambda state: (0.0, np.zeros((0, 3))))
    system.addForce(force)
    groups = assign_force_groups(system)
    assert groups == {"mm": [MM_GROUP], "nnp": [NNP_GROUP], "restraints": []}
    assert force.getForceGroup() == NNP_GROUP
    has_cm = any(isinstance(f, openmm.CMMotionRemover) for f in system.getForces())
    assert degrees_of_freedom(system) == 3 * 22 - 12 - (3 if has_cm else 0)


def test_dcd_truncation_restores_frames(tmp_path):
    """A DCD with garbage after the checkpointed size is cut back and its header fixed; MDAnalysis reads it."""
    pdb = app.PDBFile(str(DIPEPTIDE_PDB))
    path = tmp_path / "t.dcd"
    with path.open("wb") as handle:
        dcd = app.DCDFile(handle, pdb.topology, 0.001, 10, 10)
        for k in range(3):
            dcd.writeModel(pdb.positions)
            if k == 1:
                handle.flush()
                size = path.stat().st_size
        handle.flush()
        handle.write(b"\x01" * 50)  # half a frame from a killed writer
    restore_files({"step": 20, "files": {"t.dcd": size}}, tmp_path, n_atoms=22, periodic=False)
    assert dcd_frame_count(path, 22, periodic=False) == 2
    with path.open("rb") as handle:
        handle.seek(8)
        assert struct.unpack("<i", handle.read(4))[0] == 2
    assert len(MDAnalysis.Universe(str(DIPEPTIDE_PDB), str(path)).trajectory) == 2
    with pytest.raises(ConfigError, match="fewer than"):
        restore_files({"step": 20, "files": {"t.dcd": size + 10**6}}, tmp_path, n_atoms=22, periodic=False)


def test_cli_run_and_check_nve_arguments():
    args = build_parser().parse_args(["run", "cfg.yaml", "--resume", "--mm-only", "-o", "out"])
    assert args.config_file == "cfg.yaml" and args.resume and args.mm_only and args.output == "out"
    args = build_parser().parse_args(["check-nve", "cfg.yaml", "--prepared", "prep"])
    assert args.prepared == "prep" and args.output == "nve_output"
