"""Kill -9 a real `biomol-nnp run` mid-run, resume it, and compare with an uninterrupted run.

The system is the prepared (`biomol-nnp prepare`) alanine dipeptide in vacuum, pure MM on the CPU platform,
so thousands of steps take seconds. The resumed run must hold every report exactly once (CSV steps and DCD
frames, read back by MDAnalysis) and, because the binary checkpoint restores the integrator's random state,
end at the same coordinates as the uninterrupted run.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import MDAnalysis
import numpy as np
import pytest

from biomol_nnp.config import SimulationSettings, SystemSettings
from biomol_nnp.exceptions import ConfigError
from biomol_nnp.simulate.runner import run_md
from tests.run_helpers import prepared_dipeptide, write_run_config

STEPS, REPORT, CHECKPOINT = 8000, 50, 500


@pytest.fixture(scope="module")
def vacuum_dir(tmp_path_factory):
    return prepared_dipeptide(tmp_path_factory.mktemp("prepared") / "vacuum", solvated=False)


def _settings(prepared: Path, **extra) -> SimulationSettings:
    values = dict(
        mm_only=True,
        prepared_dir=prepared,
        steps=STEPS,
        report_interval=REPORT,
        checkpoint_interval=CHECKPOINT,
        minimize_iterations=20,
    )
    values.update(extra)
    return SimulationSettings(**values)


def _log_steps(path: Path) -> list[int]:
    rows = [row for row in csv.reader(path.open()) if not row[0].startswith("#")]
    return [int(row[0]) for row in rows]


def _frames(folder: Path, name: str = "trajectory.dcd") -> np.ndarray:
    universe = MDAnalysis.Universe(str(folder.parent / "prepared.pdb"), str(folder / name))
    return np.array([ts.positions.copy() for ts in universe.trajectory])


def _checkpoint_step(folder: Path) -> int:
    try:
        return int(json.loads((folder / "checkpoint.json").read_text())["step"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return -1


def test_kill_and_resume_matches_uninterrupted(vacuum_dir, tmp_path):
    (tmp_path / "prepared.pdb").write_text((vacuum_dir / "topology.pdb").read_text())
    reference = tmp_path / "reference"
    run_md(SystemSettings(), _settings(vacuum_dir), reference)

    killed = tmp_path / "killed"
    config = write_run_config(tmp_path / "run.yaml", **_settings(vacuum_dir).model_dump(mode="json"))
    command = [sys.executable, "-m", "biomol_nnp.cli", "-q", "--no-progress", "run", str(config), "-o", str(killed)]
    process = subprocess.Popen(command, cwd=Path(__file__).resolve().parents[2])
    deadline = time.time() + 600  # generous: a loaded machine starts Python slowly
    while _checkpoint_step(killed) < 2 * CHECKPOINT and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be killed; raise STEPS"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    at_kill = _checkpoint_step(killed)
    assert 0 < at_kill < STEPS
    assert _log_steps(killed / "md.csv")[-1] >= at_kill  # the killed run wrote past its checkpoint

    result = run_md(SystemSettings(), _settings(vacuum_dir), killed, resume=True)
    assert result.resumed_from_step is not None and result.resumed_from_step >= at_kill
    assert result.final_step == STEPS
    expected = list(range(REPORT, STEPS + 1, REPORT))
    assert _log_steps(killed / "md.csv") == _log_steps(reference / "md.csv") == expected
    resumed, uninterrupted = _frames(killed), _frames(reference)
    assert len(resumed) == len(uninterrupted) == len(expected)
    np.testing.assert_allclose(resumed, uninterrupted, atol=1e-3)  # DCD stores float32 Angstrom


def test_resume_extends_xtc_and_truncates_partial_writes(vacuum_dir, tmp_path):
    """A finished XTC run extended with more steps; bytes written after the checkpoint are dropped first."""
    (tmp_path / "prepared.pdb").write_text((vacuum_dir / "topology.pdb").read_text())
    folder = tmp_path / "xtc"
    short = _settings(vacuum_dir, steps=1000, trajectory_format="xtc")
    run_md(SystemSettings(), short, folder)
    with (folder / "md.csv").open("a") as handle:
        handle.write("1050,partial row of a killed run")
    with (folder / "trajectory.xtc").open("ab") as handle:
        handle.write(b"\x00" * 97)
    run_md(SystemSettings(), short.model_copy(update={"steps": 2000}), folder, resume=True)
    assert _log_steps(folder / "md.csv") == list(range(REPORT, 2001, REPORT))
    assert len(_frames(folder, "trajectory.xtc")) == 2000 // REPORT


def test_resume_refuses_missing_checkpoint_and_changed_settings(vacuum_dir, tmp_path):
    with pytest.raises(ConfigError, match="no checkpoint"):
        run_md(SystemSettings(), _settings(vacuum_dir), tmp_path / "empty", resume=True)
    folder = tmp_path / "run"
    run_md(SystemSettings(), _settings(vacuum_dir, steps=200), folder)
    with pytest.raises(ConfigError, match="settings differ"):
        run_md(SystemSettings(), _settings(vacuum_dir, steps=400, timestep_fs=2.0), folder, resume=True)
    with pytest.raises(ConfigError, match="raise steps"):
        run_md(SystemSettings(), _settings(vacuum_dir, steps=200), folder, resume=True)
