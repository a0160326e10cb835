"""forcefield-refit CLI: run() in-process on small profile files, and main() argument parsing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from openmm import app

from forcefield_refit.cli import main, run, run_workflow
from forcefield_refit.exceptions import RefitInputError
from forcefield_refit.torsions import FourierTorsion
from forcefield_refit.validate import reload_frcmod, torsion_rmse

ALA = Path(__file__).resolve().parents[2] / "systems" / "dipeptides" / "ala.pdb"
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


def _torsions_yaml(tmp_path, **extra) -> str:
    import yaml

    data = {
        "reference": {"forcefield": ["amber14-all.xml"]},
        "base_forcefield": ["amber99sb.xml"],
        "label_by": "class",
        "profiles": [{"name": "ala_phi", "pdb": str(ALA), "dihedral": "phi"}],
        "scan": {"step_deg": 30.0, "max_iterations": 150},
        "fit": {"periodicities": [1, 2, 3, 4]},
        "output": {"directory": str(tmp_path / "out"), "formats": ["frcmod"], "plots": False},
        **extra,
    }
    path = tmp_path / "torsions.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_torsions_only_differing_recovers_ff14sb_through_flags(tmp_path) -> None:
    """Closed loop: of all classes in Ala only phi' (C-N-CT-CT) differs between ff99SB and ff14SB; fit it alone."""
    settings = _torsions_yaml(tmp_path)
    assert main(["-q", "torsions", settings, "--only-differing", "--ridge", "0.01", "--prior", "base"]) == 0
    report = json.loads((tmp_path / "out" / "refit_report.json").read_text())
    row = report["profiles"]["ala_phi"]
    assert row["fitted_series"] == ["C-N-CT-CT"]
    assert row["original_rmse_kcal"] > 0.2
    assert row["refit_rmse_kcal"] < 0.05  # the closed-loop target
    assert report["skipped_classes"] == {}
    (reloaded,) = reload_frcmod(tmp_path / "out" / "refit.frcmod")
    assert reloaded.types == ("C", "N", "CT", "CT")


def test_torsions_prior_keeps_base_terms_under_strong_ridge(tmp_path) -> None:
    """With a huge ridge the fit stays at its prior: the base ff99SB terms ('base') or zero amplitudes ('zero')."""
    settings = _torsions_yaml(tmp_path, only_differing=True, fit={"periodicities": [1, 2, 3, 4], "ridge": 1e8})
    report = run_workflow("torsions", settings)
    (fitted,) = report["terms_kj_deg"].values()
    (base,) = report["base_terms_kj_deg"].values()
    expected = {n: k for n, _, k in base}
    assert expected  # ff99SB has terms on C-N-CT-CT
    assert {n: round(k, 4) for n, _, k in fitted if k > 1e-6} == {n: round(k, 4) for n, k in expected.items()}


def test_torsions_flag_errors(tmp_path) -> None:
    settings = _torsions_yaml(tmp_path, reference={"factory": "math:sqrt"}, only_differing=True)
    with pytest.raises(RefitInputError, match="only_differing=true with reference.factory='math:sqrt'"):
        run_workflow("torsions", settings)
    with pytest.raises(RefitInputError, match=r"override fit.rigde=0.1: no such setting in TorsionsSettings"):
        run_workflow("torsions", settings, {"fit.rigde": 0.1})
    with pytest.raises(RefitInputError, match=r"(?s)overrides \{'fit.ridge': -1.0\} are not valid.*greater than"):
        run_workflow("torsions", settings, {"fit.ridge": -1.0})


def test_torsions_bad_input_named_before_or_at_the_fit(tmp_path) -> None:
    from forcefield_refit.exceptions import RefitMatchError

    profile = {"name": "ala_phi", "pdb": str(ALA), "dihedral": "phi"}
    unbonded = _torsions_yaml(tmp_path, profiles=[{**profile, "dihedral": [4, 6, 8, 20]}])
    with pytest.raises(RefitMatchError, match=r"dihedral_atoms=\(4, 6, 8, 20\): atoms 8 and 20 are not bonded"):
        run_workflow("torsions", unbonded)
    unknown = _torsions_yaml(tmp_path, profiles=[{**profile, "fit_types": [["C", "N", "CZ", "C"]]}])
    with pytest.raises(RefitMatchError, match=r"types \['CZ'\] are not atom types of the base force field"):
        run_workflow("torsions", unknown)
    coarse = _torsions_yaml(tmp_path, scan={"step_deg": 120.0, "max_iterations": 50})
    with pytest.raises(RefitInputError, match=r"3 distinct angles for \('C', 'N', 'CT', 'C'\).*at least 9"):
        run_workflow("torsions", coarse)
