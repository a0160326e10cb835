"""The demo path end to end, in-process, on reduced settings: every stage runs for real."""

import json
import shutil

import pytest
import torch

from biomol_nnp.cli import main
from biomol_nnp.config import PipelineSettings
from biomol_nnp.models.export import load_model


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    output = tmp_path_factory.mktemp("demo")
    assert main(["--no-progress", "demo", "--quick", "--output", str(output)]) == 0
    return output


def test_summary_reports_every_stage(demo_dir):
    summary = json.loads((demo_dir / "summary.json").read_text())
    assert summary["labels"]["ok"] > 0
    held_out = summary["model"]["held_out"]
    for key in ("energy_mae_kcal_per_mol", "force_mae_kcal_per_mol_A", "embedding_mae_kcal_per_mol"):
        assert held_out[key] >= 0
    assert summary["simulation"]["nnp_mm_ns_per_day"] > 0
    assert summary["simulation"]["mm_ns_per_day"] > 0
    assert summary["refit"]["rmse_kj_per_mol"] >= 0
    for name in ("phi", "psi"):
        assert summary["refit"]["torsions"][name]["ffxml_reload_rmse_kj_per_mol"] < 1e-3


def test_outputs_exist_and_load(demo_dir):
    module, metadata = load_model(demo_dir / "model" / "model.pt")
    assert metadata["qm_method"] == "GFN2-xTB"
    assert metadata["training_total_charges"] == [0]
    assert metadata["ensemble_size"] == 3
    assert isinstance(module, torch.jit.ScriptModule)
    for relative in ("labels.h5", "model/parity.png", "model/learning_curve.png", "model/metrics.json",
                     "md/trajectory.dcd", "refit/refit.frcmod", "refit/refit.xml", "refit/phi_fit.png",
                     "settings.yaml"):
        assert (demo_dir / relative).stat().st_size > 0, relative
    assert PipelineSettings.from_yaml(demo_dir / "settings.yaml").train.epochs == 2


def test_rerun_reuses_finished_stages(demo_dir, caplog):
    caplog.set_level("INFO", logger="biomol_nnp")
    before = (demo_dir / "model" / "model.pt").stat().st_mtime_ns
    assert main(["--no-progress", "demo", "--quick", "--output", str(demo_dir)]) == 0
    assert (demo_dir / "model" / "model.pt").stat().st_mtime_ns == before
    assert "train: reusing" in caplog.text


def test_rerun_resumes_training_from_the_member_checkpoints(demo_dir, tmp_path, caplog):
    # a kill after the members finished, before the export: the rerun trains nothing again
    copy = tmp_path / "demo"
    shutil.copytree(demo_dir, copy)
    (copy / "model" / "model.pt").unlink()
    caplog.set_level("INFO", logger="biomol_nnp")
    caplog.clear()
    assert main(["--no-progress", "demo", "--quick", "--output", str(copy)]) == 0
    assert all(f"member {k}: resumed at epoch 2" in caplog.text for k in range(3))
    before, after = (load_model(path / "model" / "model.pt")[0].state_dict() for path in (demo_dir, copy))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_bad_settings_file_is_reported(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epocs: 3\n")
    assert main(["demo", "--config", str(bad), "--output", str(tmp_path / "out")]) == 2


def test_stage_commands_reuse_the_demo_outputs(demo_dir, tmp_path):
    settings = str(demo_dir / "settings.yaml")  # the quick settings the demo ran with
    assert main(["--no-progress", "train", str(demo_dir / "labels.h5"), "-c", settings, "-o", str(tmp_path / "m")]) == 0
    model = tmp_path / "m" / "model.pt"
    assert load_model(model)[1]["ensemble_size"] == 3
    assert main(["--no-progress", "run", "-c", settings, "-m", str(model), "-n", "5", "-o", str(tmp_path / "md")]) == 0
    run = json.loads((tmp_path / "md" / "run.json").read_text())
    assert run["steps"] == 5 and run["ns_per_day"] > 0
    assert main(["--no-progress", "refit", str(model), "-c", settings, "-o", str(tmp_path / "refit")]) == 0
    assert (tmp_path / "refit" / "refit.frcmod").read_text().startswith("biomol-nnp")


def test_missing_model_is_a_clear_error(tmp_path, caplog):
    assert main(["--no-progress", "run", "-m", str(tmp_path / "none.pt"), "-n", "5", "-o", str(tmp_path)]) == 2
    assert "does not exist" in caplog.text
