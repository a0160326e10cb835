"""The active-learning loop for real: NNP/MM walkers, GFN2-xTB labels with point charges, warm-started retraining.

The initial model is a tiny ensemble trained on a few vacuum frames of alanine dipeptide (as the benchmark
starts from vacuum-only data); the walkers run on the solvated dipeptide.
"""

import json
import shutil

import numpy as np
import pytest
import torch

from biomol_nnp.active import run_active_learning
from biomol_nnp.active.retrain import load_ensemble
from biomol_nnp.cli import main
from biomol_nnp.config import PipelineSettings
from biomol_nnp.models.export import load_model
from biomol_nnp.pipeline import quick_settings, sample_and_label, train_and_export
from biomol_nnp.qm.labels import LabelStore


@pytest.fixture(scope="module")
def initial(tmp_path_factory):
    """A vacuum-only model, its labels, and a held-out store of two solvated GFN2-xTB/MM frames."""
    folder = tmp_path_factory.mktemp("initial")
    settings = quick_settings(PipelineSettings())
    settings.sampling.solvated_frames, settings.sampling.vacuum_frames = 0, 8
    settings.train.embedding_weight = 0.0  # no point charges in vacuum labels
    sample_and_label(settings, folder / "labels.h5")
    train_and_export(settings, folder / "labels.h5", folder / "model")
    held_out = settings.model_copy(deep=True)
    held_out.sampling.solvated_frames, held_out.sampling.vacuum_frames = 2, 0
    held_out.sampling.trajectories_per_phase, held_out.sampling.seed = 1, 99
    sample_and_label(held_out, folder / "test_labels.h5")
    return folder, settings


def loop_settings(initial, folder, workers):
    source, settings = initial
    shutil.copy(source / "labels.h5", folder / "labels.h5")
    settings = settings.model_copy(deep=True)
    settings.train.embedding_weight = 1.0
    settings.active = settings.active.model_copy(
        update={
            "initial_model": source / "model" / "model.pt",
            "labels_path": folder / "labels.h5",
            "test_labels_path": source / "test_labels.h5",
            "walkers": 2,
            "walker_steps": 10,
            "frame_interval": 5,
            "minimize_iterations": 10,
            "force_std_threshold_kj_per_mol_nm": 1e-3,
            "labels_per_iteration": 2,
            "max_iterations": 1,
            "retrain_epochs": 2,
            "workers": workers,
        }
    )
    return settings


def test_one_iteration_with_dask_walkers_and_xtb_labels(initial, tmp_path):
    settings = loop_settings(initial, tmp_path, workers=1)
    before = LabelStore(tmp_path / "labels.h5").statuses()["ok"]
    result = run_active_learning(settings, tmp_path / "run")
    assert result.stopped == "max_iterations"
    first = result.rows[1]
    assert first["frames"] == 4 and first["walkers_failed"] == 0
    assert first["uncertain_fraction"] == 1.0 and first["selected"] == 2
    assert first["labels_added"] == 2
    store = LabelStore(tmp_path / "labels.h5")
    new = [r for r in store.load_training_arrays() if r.source == "active-learning"]
    assert store.statuses()["ok"] == before + 2 and len(new) == 2
    assert all(r.has_point_charges and r.embedded_mm_forces.shape == r.mm_positions.shape for r in new)
    selected = json.loads((tmp_path / "run" / "iteration_01" / "selected.json").read_text())["frames"]
    walkers = json.loads((tmp_path / "run" / "iteration_01" / "walkers.json").read_text())["walkers"]
    stds = [s for w in walkers for s in w["max_force_std_kj_per_mol_nm"]]
    assert stds[selected[0]] == max(stds)  # the most uncertain frame is labelled first
    # the retrained model is a deployed model of the grown store, scored on the held-out QM/MM frames
    module, metadata = load_model(result.model)
    assert metadata["training_data_hash"] == store.content_hash()
    for row in result.rows:
        assert np.isfinite(row["heldout_force_mae_kcal_per_mol_A"]) and row["heldout_force_mae_kcal_per_mol_A"] > 0
    table = (tmp_path / "run" / "active_learning.csv").read_text().splitlines()
    assert table[0].startswith("iteration,frames") and len(table) == 3
    assert json.loads((tmp_path / "run" / "active_learning.json").read_text())["stopped"] == "max_iterations"
    assert (tmp_path / "run" / "active_learning.png").read_bytes()[:4] == b"\x89PNG"


def test_trainable_ensemble_round_trips_the_deployed_weights(initial):
    source, _ = initial
    model, _, _ = load_ensemble(source / "model" / "model.pt")
    module, _ = load_model(source / "model" / "model.pt")
    record = LabelStore(source / "test_labels.h5").load_training_arrays()[0]
    args = [
        torch.tensor(record.positions),
        torch.tensor(record.atomic_numbers),
        torch.tensor(0.0, dtype=torch.float64),
        torch.tensor(record.mm_positions),
        torch.tensor(record.mm_charges),
        torch.zeros(0, 3, dtype=torch.float64),
    ]
    torch.testing.assert_close(model.ensemble_energies(*args), module.ensemble_energies(*args), rtol=0, atol=1e-9)


def test_kill_after_labelling_resumes_without_relabelling_and_crashed_walker_is_recorded(
    initial, tmp_path, monkeypatch, caplog
):
    import biomol_nnp.active.retrain as retrain
    import biomol_nnp.active.walkers as walkers

    settings = loop_settings(initial, tmp_path, workers=0)
    settings.active.threshold_quantile = 0.5  # calibrated on the first walkers, kept across the kill
    frames = walkers._frames

    def crash_walker_one(settings, model_path, iteration, walker, seed, threads):
        if walker == 1:
            raise RuntimeError("simulated walker crash")
        return frames(settings, model_path, iteration, walker, seed, threads)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("simulated kill during retraining")

    monkeypatch.setattr(walkers, "_frames", crash_walker_one)
    with monkeypatch.context() as patch:
        patch.setattr(retrain, "finetune", killed)
        with pytest.raises(KeyboardInterrupt):
            run_active_learning(settings, tmp_path / "run")
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["done"] == ["walkers", "select", "label"]
    stds = json.loads((tmp_path / "run" / "iteration_01" / "walkers.json").read_text())["walkers"][0]
    assert state["threshold"] == pytest.approx(np.median(stds["max_force_std_kj_per_mol_nm"]))
    records = LabelStore(tmp_path / "labels.h5").n_records
    frames_file = tmp_path / "run" / "iteration_01" / "frames.h5"
    written = frames_file.stat().st_mtime_ns

    caplog.set_level("INFO", logger="biomol_nnp")
    caplog.clear()  # only the rerun's log (an earlier CLI test may have left biomol_nnp at INFO)
    result = run_active_learning(settings, tmp_path / "run")
    assert "resuming" in caplog.text and "iteration 1: walkers" not in caplog.text
    assert LabelStore(tmp_path / "labels.h5").n_records == records  # no QM calculation repeated
    assert frames_file.stat().st_mtime_ns == written
    assert result.stopped == "max_iterations" and result.rows[1]["labels_added"] == 1  # 1 of 2 frames above median
    assert result.rows[1]["force_std_threshold_kj_per_mol_nm"] == state["threshold"]
    assert json.loads((tmp_path / "run" / "state.json").read_text())["threshold"] == state["threshold"]
    assert result.rows[1]["walkers_failed"] == 1 and result.rows[1]["frames"] == 2
    summary = json.loads((tmp_path / "run" / "iteration_01" / "walkers.json").read_text())["walkers"]
    assert summary[1]["error"] == "RuntimeError: simulated walker crash" and summary[1]["frames"] == 0

    # the CLI on the finished run: nothing is recomputed; a settings file without an initial model is refused
    config = tmp_path / "al.yaml"
    settings.to_yaml(config)
    assert main(["--no-progress", "active-learn", str(config), "-o", str(tmp_path / "run")]) == 0
    assert LabelStore(tmp_path / "labels.h5").n_records == records
    PipelineSettings().to_yaml(config)
    assert main(["--no-progress", "active-learn", str(config), "-o", str(tmp_path / "other")]) == 2
    assert "active.initial_model=None is not a file" in caplog.text


def test_walker_stops_after_the_first_frame_beyond_the_hard_cap(initial, tmp_path):
    from biomol_nnp.active.walkers import run_walker

    settings = loop_settings(initial, tmp_path, workers=0)
    settings.active.walker_stop_force_std_kj_per_mol_nm = 1e-3  # every frame is beyond it
    capped = run_walker(settings, str(settings.active.initial_model), iteration=1, walker=0)
    assert capped.error == "" and len(capped.configs) == 1 and capped.force_std[0] > 1e-3
    settings.active.walker_stop_force_std_kj_per_mol_nm = None
    full = run_walker(settings, str(settings.active.initial_model), iteration=1, walker=0)
    assert len(full.configs) == 2 and full.force_std[0] == pytest.approx(capped.force_std[0])


def test_walkers_can_start_from_equilibrated_mm_solvent(initial, tmp_path):
    """With mm_equilibration_steps a walker's NNP/MM run starts from its own pure-MM-equilibrated structure."""
    from biomol_nnp.active.walkers import run_walker

    settings = loop_settings(initial, tmp_path, workers=0)
    settings.active.walker_steps, settings.active.frame_interval = 5, 5
    cold = run_walker(settings, str(settings.active.initial_model), 1, 0)
    settings.active.mm_equilibration_steps = 200
    warm = [run_walker(settings, str(settings.active.initial_model), 1, w) for w in (0, 1)]
    assert not cold.error and not any(w.error for w in warm)
    shift = [np.abs(w.configs[0].positions - cold.configs[0].positions).max() for w in warm]
    assert min(shift) > 0.01  # nm: 200 MM steps moved the region away from the minimised input structure
    assert np.abs(warm[0].configs[0].positions - warm[1].configs[0].positions).max() > 0.01  # seeds differ


def test_walker_from_mm_equilibrated_solvent_is_not_minimised_on_the_nnp_surface(initial, tmp_path, monkeypatch):
    """After the MM equilibration the NNP/MM walker starts as it is: minimising on the surface of a model that has
    not learnt the embedding yet pulls the region into the model's holes (the benchmark's walkers blew up so)."""
    import openmm.unit as u

    import biomol_nnp.active.walkers as walkers
    from biomol_nnp.simulate.runner import build_mixed_system

    settings = loop_settings(initial, tmp_path, workers=0)
    settings.active.mm_equilibration_steps, settings.active.minimize_iterations = 50, 100
    run = settings.simulation.model_copy(update={"model_path": settings.active.initial_model})
    topology, mm_system, mixed, _, positions = build_mixed_system(settings.system, run)
    xyz = np.asarray(positions.value_in_unit(u.nanometer))
    # the MM equilibration (its own test above) is not bitwise reproducible on the CPU platform: pin its outcome
    equilibrated = xyz + 0.01 * np.random.default_rng(0).standard_normal(xyz.shape)
    monkeypatch.setattr(walkers, "_mm_equilibrated", lambda *args: equilibrated * u.nanometer)

    def start(sim):
        return sim.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(u.nanometer)

    walker = start(walkers.walker_simulation(settings, topology, mm_system, mixed, positions, 5, 1))
    np.testing.assert_allclose(walker, equilibrated, rtol=0, atol=1e-12)  # not touched after the MM equilibration
    settings.active.mm_equilibration_steps = 0  # from the input structure: minimised on the NNP/MM surface
    cold = start(walkers.walker_simulation(settings, topology, mm_system, mixed, positions, 5, 1))
    assert np.abs(cold - equilibrated).max() > 1e-3
