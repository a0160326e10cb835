"""``forcefield-refit torsions`` with ``reference.factory`` pointing at a deployed model.pt (the example factory)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from forcefield_refit.cli import main
from tests.toy_models import make_toy_model

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "scripts" / "refit_with_nnp"


def test_example_settings_is_valid() -> None:
    from forcefield_refit.settings import TorsionsSettings, load_settings

    settings = load_settings(EXAMPLES / "torsions_nnp.yaml", TorsionsSettings)
    assert settings.reference.factory == "nnp_reference:model_reference"  # type: ignore[attr-defined]


def test_torsions_with_model_factory(tmp_path, monkeypatch) -> None:
    model = make_toy_model(tmp_path / "model.pt", elements=[1, 6, 7, 8])
    monkeypatch.setenv("BIOMOL_NNP_MODEL", str(model))
    monkeypatch.syspath_prepend(str(EXAMPLES))
    example = yaml.safe_load((EXAMPLES / "torsions_nnp.yaml").read_text())
    example["profiles"] = [{"name": "ala_phi", "pdb": str(ROOT / "systems/dipeptides/ala.pdb"), "dihedral": "phi"}]
    example["scan"] = {"step_deg": 30.0, "max_iterations": 30}
    example["output"] = {"directory": str(tmp_path / "out"), "formats": ["ffxml", "frcmod"], "plots": False}
    settings = tmp_path / "s.yaml"
    settings.write_text(yaml.safe_dump(example))
    assert main(["-q", "torsions", str(settings)]) == 0
    report = json.loads((tmp_path / "out" / "refit_report.json").read_text())
    row = report["profiles"]["ala_phi"]
    assert np.isfinite(row["refit_rmse_kcal"]) and row["refit_rmse_kcal"] <= row["original_rmse_kcal"] + 1e-6
    assert (tmp_path / "out" / "refit.xml").exists() and (tmp_path / "out" / "refit.frcmod").exists()
