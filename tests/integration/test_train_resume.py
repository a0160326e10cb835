"""Training resumes after a kill and ends with the same model as an uninterrupted run.

Labels are real GFN2-xTB calculations of small water clusters (with TIP3P point charges, so the
embedding loss is trained too); training runs through `biomol-nnp train` (in a subprocess that is
killed with SIGKILL, and in-process) and through the library with an exception raised mid-run.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from biomol_nnp.cli import main
from biomol_nnp.config import LabelSettings, PipelineSettings, SystemSettings
from biomol_nnp.exceptions import ConfigError
from biomol_nnp.qm.labels import LabelStore
from biomol_nnp.train.checkpoints import checkpoint_path
from biomol_nnp.train.data import samples_from_store
from biomol_nnp.train.trainer import train_ensemble

pytest.importorskip("xtb")


class CrashError(Exception):
    """Raised from the progress callback to stop a run the way a crash would."""


@pytest.fixture(scope="module")
def labels(tmp_path_factory):
    from biomol_nnp.qm.clusters import water_clusters
    from biomol_nnp.qm.labeling import label_configurations

    path = tmp_path_factory.mktemp("labels") / "labels.h5"
    configs = water_clusters(SystemSettings().solvated_pdb, sizes=[2, 3, 4], per_size=4, point_charge_cutoff_nm=0.5)
    report = label_configurations(configs, path, LabelSettings())
    assert report.n_ok >= 10
    return path


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    settings = PipelineSettings()
    settings.model.elements = [1, 8]
    settings.model.hidden_layers = [8]
    settings.model.radial_shifts = 8
    settings.model.angular_shifts = 2
    settings.model.angular_sections = 4
    settings.train = settings.train.model_copy(
        update={"ensemble_size": 2, "epochs": 30, "batch_size": 4, "checkpoint_interval": 2, "validation_fraction": 0.3}
    )
    return settings, settings.to_yaml(tmp_path_factory.mktemp("config") / "settings.yaml")


@pytest.fixture(scope="module")
def reference(labels, config, tmp_path_factory):
    """An uninterrupted `biomol-nnp train` run."""
    out = tmp_path_factory.mktemp("reference")
    assert main(["--no-progress", "train", str(labels), "-c", str(config[1]), "-o", str(out)]) == 0
    return out


def weights(folder):
    return torch.jit.load(str(folder / "model.pt")).state_dict()


def assert_same_run(folder, reference):
    a, b = weights(folder), weights(reference)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    history = json.loads((folder / "history.json").read_text())
    assert history == json.loads((reference / "history.json").read_text())
    assert [len(h) for h in history["members"]] == [30, 30]


def test_cli_resume_after_sigkill_gives_the_uninterrupted_model(labels, config, reference, tmp_path):
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "biomol_nnp.cli", "-q", "--no-progress", "train", str(labels)]
    process = subprocess.Popen([*command, "-c", str(config[1]), "-o", str(out)], cwd=tmp_path)
    first = checkpoint_path(out / "checkpoints", 0)
    deadline = time.monotonic() + 120
    while not first.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert first.exists() and not (out / "model.pt").exists(), "the run must be killed mid-training"
    epoch = torch.load(first, weights_only=True)["epoch"]
    assert epoch < 30
    assert main(["--no-progress", "train", str(labels), "-c", str(config[1]), "-o", str(out), "--resume"]) == 0
    assert_same_run(out, reference)


def test_library_resume_after_an_exception_skips_finished_members(labels, config, reference, tmp_path, caplog):
    settings = config[0]
    samples = samples_from_store(LabelStore(labels))

    def crash(done, total, loss):
        if done == 30 + 5:  # member 1, epoch 5: its last checkpoint is epoch 4, member 0 is finished
            raise CrashError

    with pytest.raises(CrashError):
        train_ensemble(samples, settings.model, settings.train, progress=crash, checkpoint_dir=tmp_path)
    changed = settings.train.model_copy(update={"learning_rate": 0.01})
    with pytest.raises(ConfigError, match=r"different run \(changed settings: train.learning_rate: 0.003 -> 0.01\)"):
        train_ensemble(samples, settings.model, changed, checkpoint_dir=tmp_path, resume=True)
    caplog.set_level("INFO", logger="biomol_nnp.train.trainer")
    seen = []
    result = train_ensemble(
        samples,
        settings.model,
        settings.train,
        progress=lambda done, total, loss: seen.append(done),
        checkpoint_dir=tmp_path,
        resume=True,
    )
    assert "member 0: resumed at epoch 30" in caplog.text and "member 1: resumed at epoch 4" in caplog.text
    assert seen == list(range(35, 61))  # only member 1's epochs 5..30 ran
    reference_weights = weights(reference)
    for key, value in result.model.state_dict().items():
        assert torch.equal(value, reference_weights[key]), key
    assert result.histories == json.loads((reference / "history.json").read_text())["members"]
    assert np.isfinite(result.metrics["test"]["embedding_mae_kcal_per_mol"])
