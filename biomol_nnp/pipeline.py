"""The end-to-end path: sample -> label -> train -> NNP/MM MD -> torsion refit -> summary.json.

Each stage writes its outputs into one folder and is skipped on a rerun when its output is
already complete (``resume=True``), so an interrupted demo continues where it stopped; an interrupted
training continues from the member checkpoints in ``model/checkpoints``.

>>> summary = run_pipeline(PipelineSettings(), Path("demo_output"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from biomol_nnp.config import PipelineSettings
from biomol_nnp.io import write_json_atomic

logger = logging.getLogger(__name__)

CPU_THREADS = 2
"""Threads of the OpenMM CPU platform for the MM parts (the model itself runs single-threaded)."""


def quick_settings(settings: PipelineSettings) -> PipelineSettings:
    """A copy of ``settings`` shrunk so every stage runs in seconds (tests, smoke runs)."""
    quick = settings.model_copy(deep=True)
    quick.sampling.solvated_frames = 6
    quick.sampling.vacuum_frames = 6
    quick.sampling.trajectories_per_phase = 2
    quick.sampling.equilibration_steps = 20
    quick.sampling.steps_between_frames = 10
    quick.train.epochs = 2
    quick.train.ensemble_size = 3
    quick.model.hidden_layers = [16]
    quick.simulation.steps = 20
    quick.simulation.report_interval = 10
    quick.refit.scan_step_deg = 30.0
    quick.refit.max_iterations = 20
    return quick


def progress_bar(enabled: bool, total: int, description: str) -> Any:
    """A tqdm bar (disabled when ``enabled`` is False)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, disable=not enabled, leave=False)


def sample_and_label(settings: PipelineSettings, labels_path: Path, progress: bool = False) -> dict[str, Any]:
    """Sample MM MD frames and label the ones not yet in ``labels_path`` with GFN2-xTB."""
    from biomol_nnp.qm.labeling import label_configurations
    from biomol_nnp.qm.labels import LabelStore
    from biomol_nnp.qm.sampling import sample_md_configurations

    configs = sample_md_configurations(settings.system, settings.sampling, progress=progress, threads=CPU_THREADS)
    done = len(LabelStore(labels_path)) if labels_path.exists() else 0
    if done >= len(configs):
        logger.info("labels: %s already holds %d configurations; nothing to label", labels_path, done)
    else:
        logger.info("labels: %d configurations sampled, %d already labelled, labelling the rest", len(configs), done)
        label_configurations(configs[done:], labels_path, settings.labels, progress=progress)
    statuses = LabelStore(labels_path).statuses()
    return {
        "configurations": sum(statuses.values()),
        "ok": statuses.get("ok", 0),
        "failed": statuses.get("failed", 0),
    }


def train_and_export(
    settings: PipelineSettings, labels_path: Path, output_dir: Path, progress: bool = False, resume: bool = False
) -> dict[str, Any]:
    """Train the ensemble on the labels, export ``model.pt``, write metrics and plots.

    Members are checkpointed in ``output_dir/checkpoints``; ``resume`` continues from there.
    """
    from biomol_nnp.models.export import build_metadata, save_model
    from biomol_nnp.models.registry import model_cutoff
    from biomol_nnp.qm.labels import LabelStore
    from biomol_nnp.train.data import samples_from_store
    from biomol_nnp.train.plots import learning_curve
    from biomol_nnp.train.trainer import train_ensemble

    output_dir.mkdir(parents=True, exist_ok=True)
    store = LabelStore(labels_path)
    samples = samples_from_store(store)
    bar = progress_bar(progress, settings.train.epochs * settings.train.ensemble_size, "training")

    def update(done: int, total: int, loss: float) -> None:
        bar.update(done - bar.n)
        bar.set_postfix(loss=f"{loss:.3g}")

    try:
        result = train_ensemble(
            samples,
            settings.model,
            settings.train,
            progress=update,
            checkpoint_dir=output_dir / "checkpoints",
            resume=resume,
        )
    finally:
        bar.close()
    metadata = build_metadata(
        settings.model.elements,
        model_cutoff(settings.model),
        settings.model.embedding_cutoff_nm,
        settings.train.ensemble_size,
        settings.labels.method,
        store.content_hash(),
        embedding_switch_width_nm=settings.model.embedding_switch_width_nm,
        training_total_charges=sorted({int(round(sample.total_charge)) for sample in samples}),
        architecture=settings.model.architecture,
        dtype="float64",
        settings=settings.model.model_dump(mode="json"),
    )
    model_path = save_model(result.model, output_dir / "model.pt", metadata)
    write_json_atomic(output_dir / "metrics.json", result.metrics)
    write_json_atomic(output_dir / "history.json", {"members": result.histories})
    write_parity_plot(result, output_dir / "parity.png")
    learning_curve(output_dir / "learning_curve.png", result.histories)
    return {"model": str(model_path), "metrics": result.metrics}


def write_parity_plot(result: Any, path: Path) -> None:
    """Parity of energies, forces, charges, embedding energies and forces on the held-out set (kJ/mol, nm, e)."""
    import numpy as np

    from biomol_nnp.train.plots import parity_plot

    parts: dict[tuple[str, str], list[tuple[Any, Any]]] = {}
    for start in range(0, len(result.test_samples), PARITY_BATCH):
        for key, pair in _parity_columns(result.model, result.test_samples[start : start + PARITY_BATCH]).items():
            parts.setdefault(key, []).append(pair)
    panels = []
    for (name, unit), pairs in parts.items():
        reference, predicted = (np.concatenate([pair[k] for pair in pairs]) for k in (0, 1))
        if name == "energy":  # absolute energies: compare the spread, not the large common value
            offset = reference.mean()
            reference, predicted, name = reference - offset, predicted - offset, "energy (minus mean)"
        if len(reference):
            panels.append((name, reference, predicted, unit))
    parity_plot(path, panels)


PARITY_BATCH = 32
"""Configurations per model call when drawing the parity plot."""


def _parity_columns(model: Any, samples: Any) -> dict[tuple[str, str], tuple[Any, Any]]:
    """(reference, predicted) arrays of each parity panel (name, unit) for a few samples."""
    import torch

    from biomol_nnp.train.data import collate
    from biomol_nnp.train.trainer import predict

    batch = collate(samples, torch.float64)
    out = predict(model, batch, create_graph=False, embedding_forces=True)
    species = model.species(batch.atomic_numbers)
    real = (species >= 0).numpy()
    has_embedding = batch.has_embedding.numpy()
    labelled = real & batch.has_embedding_forces.numpy()[:, None]
    assert out.member_embedding_forces is not None  # asked for above
    return {
        ("energy", "kJ/mol"): (batch.energy.numpy(), (out.energy.detach() + model.reference_energy(species)).numpy()),
        ("forces", "kJ/mol/nm"): (batch.forces.numpy()[real], out.forces.detach().numpy()[real]),
        ("charges", "e"): (batch.charges.numpy()[real], out.charges.detach().numpy()[real]),
        ("embedding energy", "kJ/mol"): (
            batch.embedding_energy.numpy()[has_embedding],
            out.embedding.detach().numpy()[has_embedding],
        ),
        ("embedding forces", "kJ/mol/nm"): (
            batch.embedding_forces.numpy()[labelled],
            out.member_embedding_forces.mean(0).detach().numpy()[labelled],
        ),
    }


def simulate(settings: PipelineSettings, output_dir: Path, progress: bool = False) -> dict[str, Any]:
    """NNP/MM MD with the deployed model, and pure MM speed measured the same way in the same run."""
    from biomol_nnp.simulate.runner import run_md

    result = run_md(
        settings.system,
        settings.simulation,
        output_dir,
        progress=progress,
        threads=CPU_THREADS,
        mm_benchmark_steps=max(settings.simulation.steps, 200),
    )
    return {
        "nnp_mm_ns_per_day": result.ns_per_day,
        "mm_ns_per_day": result.mm_ns_per_day,
        "trajectory": str(result.trajectory),
        "log": str(result.log),
        "steps": result.steps,
        "final_potential_kj_per_mol": result.final_potential_kj_mol,
    }


def refit(settings: PipelineSettings, model_path: Path, output_dir: Path, progress: bool = False) -> dict[str, Any]:
    """Fit phi and psi torsions to the model's profiles and write frcmod and ffxml files."""
    from biomol_nnp.refit import refit_backbone

    return refit_backbone(model_path, settings.system, settings.refit, output_dir, progress=progress)


def run_pipeline(
    settings: PipelineSettings, output_dir: Path, progress: bool = True, resume: bool = True
) -> dict[str, Any]:
    """Run every stage and write ``summary.json``; returns the summary."""
    output_dir.mkdir(parents=True, exist_ok=True)
    settings.to_yaml(output_dir / "settings.yaml")
    timings: dict[str, float] = {}
    summary: dict[str, Any] = {"output_dir": str(output_dir.resolve())}

    def stage(name: str, done_marker: Path, function: Any) -> dict[str, Any]:
        cache = output_dir / f".{name}.json"
        if resume and done_marker.exists() and cache.exists():
            logger.info("%s: reusing %s (delete it or pass --restart to redo)", name, done_marker)
            return dict(json.loads(cache.read_text()))
        started = time.perf_counter()
        logger.info("%s: started", name)
        outcome = function()
        timings[name] = time.perf_counter() - started
        write_json_atomic(cache, outcome)
        logger.info("%s: finished in %.0f s", name, timings[name])
        return dict(outcome)

    labels_path = output_dir / "labels.h5"
    model_dir = output_dir / "model"
    summary["labels"] = stage(
        "labels",
        labels_path,
        lambda: {**sample_and_label(settings, labels_path, progress), "path": str(labels_path)},
    )
    trained = stage(
        "train", model_dir / "model.pt", lambda: train_and_export(settings, labels_path, model_dir, progress, resume)
    )
    summary["model"] = {
        "path": trained["model"],
        "held_out": trained["metrics"]["test"],
        "training_seconds": trained["metrics"]["training"]["seconds"],
        "parity_plot": str(model_dir / "parity.png"),
    }
    settings.simulation.model_path = Path(trained["model"])
    summary["simulation"] = stage(
        "simulation", output_dir / "md" / "run.json", lambda: simulate(settings, output_dir / "md", progress)
    )
    summary["refit"] = stage(
        "refit",
        output_dir / "refit" / "refit.frcmod",
        lambda: refit(settings, Path(trained["model"]), output_dir / "refit", progress),
    )
    summary["stage_seconds"] = timings
    write_json_atomic(output_dir / "summary.json", summary)
    report_outputs(summary, output_dir)
    return summary


def report_outputs(summary: dict[str, Any], output_dir: Path) -> None:
    """Log where each output is and the headline numbers."""
    held_out = summary["model"]["held_out"]
    sim = summary["simulation"]
    logger.info(
        "labels:        %s (%d ok, %d failed)",
        summary["labels"]["path"],
        summary["labels"]["ok"],
        summary["labels"]["failed"],
    )
    logger.info(
        "model:         %s  held-out energy MAE %.2f kcal/mol, force MAE %.2f kcal/mol/A, embedding MAE %.2f kcal/mol",
        summary["model"]["path"],
        held_out["energy_mae_kcal_per_mol"],
        held_out["force_mae_kcal_per_mol_A"],
        held_out["embedding_mae_kcal_per_mol"],
    )
    logger.info("parity plot:   %s", summary["model"]["parity_plot"])
    logger.info(
        "NNP/MM MD:     %s  %.2f ns/day (pure MM %.2f ns/day)",
        sim["trajectory"],
        sim["nnp_mm_ns_per_day"],
        sim["mm_ns_per_day"],
    )
    for name, info in summary["refit"]["torsions"].items():
        logger.info("refit %s:     RMSE %.3f kJ/mol, plot %s", name, info["rmse_kj_per_mol"], info["plot"])
    logger.info("force fields:  %s, %s", summary["refit"]["frcmod"], summary["refit"]["ffxml"])
    logger.info("summary:       %s", output_dir / "summary.json")
