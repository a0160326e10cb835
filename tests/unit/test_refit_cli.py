"""forcefield-refit CLI: run() in-process on small profile files, and main() argument parsing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from openmm import app

from forcefield_refit.cli import main, run
from forcefield_refit.exceptions import RefitInputError
from forcefield_refit.torsions import FourierTorsion
from forcefield_refit.validate import reload_frcmod, torsion_rmse

TRUE = FourierTorsion(("protein-C", "protein-N", "protein-CX", "protein-C"), [(1, 0.0, 1.0), (2, 180.0, 2.5)])


def _angles() -> np.ndarray:
    return np.arange(-180.0, 180.0, 30.0)


def test_run_fits_csv_and_writes_all_outputs(tmp_path) -> None:
    angles = _angles()
    target = TRUE.energy(np.radians(angles)) + 3.0
    profile = tmp_path / "phi.csv"
    profile.write_text(
        "angle_deg,target_kj\n" + "".join(f"{a},{float(e)!r}\n" for a, e in zip(angles, target, strict=True))
    )
    out = run(
        profile,
        ["C", "N", "CX", "C"],
        [1, 2],
        frcmod=tmp_path / "phi.frcmod",
        ffxml=tmp_path / "phi.xml",
        plot=tmp_path / "phi.png",
        title="phi",
    )
    assert out.torsion.types == TRUE.types
    assert torsion_rmse(out.torsion, TRUE) < 1e-9
    assert out.frcmod is not None and out.ffxml is not None and out.plot is not None
    (reloaded,) = reload_frcmod(out.frcmod)
    assert torsion_rmse(reloaded, TRUE) < 1e-6
    app.ForceField(str(out.ffxml), "amber14-all.xml")  # parses with the base force field
    assert out.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_accepts_json_model_minus_baseline(tmp_path) -> None:
    angles = _angles()
    baseline = np.cos(np.radians(angles)) * 4.0
    rows = [
        {"angle_deg": float(a), "model_kj": float(b + e), "baseline_kj": float(b)}
        for a, b, e in zip(angles, baseline, TRUE.energy(np.radians(angles)), strict=True)
    ]
    profile = tmp_path / "phi.json"
    profile.write_text(json.dumps(rows))
    out = run(profile, ["C", "N", "CX", "C"], [1, 2, 3])
    assert torsion_rmse(out.torsion, TRUE) < 1e-9
    assert out.frcmod is None


def test_main_writes_files(tmp_path) -> None:
    angles = _angles()
    profile = tmp_path / "p.json"
    profile.write_text(
        json.dumps({"angle_deg": angles.tolist(), "target_kj": TRUE.energy(np.radians(angles)).tolist()})
    )
    frcmod, ffxml = tmp_path / "o.frcmod", tmp_path / "o.xml"
    argv = ["-q", "fit", str(profile), "--types", "C", "N", "CX", "C", "--periodicities", "1", "2"]
    assert main([*argv, "--frcmod", str(frcmod), "--ffxml", str(ffxml)]) == 0
    assert frcmod.exists() and ffxml.exists()


def test_run_rejects_bad_profiles(tmp_path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("angle,energy\n0,1\n")
    with pytest.raises(RefitInputError, match="allowed: angle_deg is required"):
        run(bad, ["C", "N", "CX", "C"])
    with pytest.raises(RefitInputError, match="allowed suffixes: .csv, .json"):
        run(tmp_path / "p.txt", ["C", "N", "CX", "C"])
    with pytest.raises(RefitInputError, match="types=.*exactly four"):
        run(bad, ["C", "N", "CX"])


def test_run_rejects_non_numeric_rows(tmp_path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("angle_deg,target_kj\n0,abc\n")
    with pytest.raises(RefitInputError, match="could not be read as numbers"):
        run(bad, ["C", "N", "CX", "C"])
