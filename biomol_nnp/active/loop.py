"""The active-learning loop: walkers -> uncertain, diverse frames -> QM labels -> warm-started retraining.

Each iteration runs four phases, and the state file ``state.json`` (written atomically) records every
completed phase, so a run killed at any moment resumes at the first unfinished phase without running
walkers or QM calculations again (labelling a phase twice is harmless too: the label store skips
configurations it already holds, by hash):

1. ``walkers``: ``active.walkers`` short NNP/MM runs (Dask tasks); every frame carved with its point charges and
   scored by the ensemble's largest per-atom force standard deviation (``iteration_NN/frames.h5``,
   ``walkers.json``);
2. ``select``: the uncertain frames (above ``force_std_threshold_kj_per_mol_nm``, or with ``threshold_quantile``
   above that quantile of the first iteration's frames, fixed from then on: :func:`calibrated_threshold`),
   farthest-point diverse, up to the per-iteration and total label budgets (``selected.json``); when the
   uncertain fraction is below ``target_uncertain_fraction`` the loop stops here;
3. ``label``: QM labels of the selected frames appended to ``active.labels_path``;
4. ``train``: the ensemble retrained from the previous weights for ``retrain_epochs`` on all labels, exported
   (``iteration_NN/model.pt``) and scored on the held-out store ``test_labels_path``.

The per-iteration table is written as ``active_learning.csv`` and ``active_learning.json`` with a plot
``active_learning.png`` (uncertain fraction, held-out force errors, labels added).

>>> result = run_active_learning(PipelineSettings.from_yaml("al.yaml"), "al_output")  # doctest: +SKIP
>>> result.stopped  # doctest: +SKIP
'max_iterations'
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from biomol_nnp.active.selection import frame_descriptors, select_frames, uncertain_fraction
from biomol_nnp.config import ActiveLearningSettings, PipelineSettings
from biomol_nnp.exceptions import ConfigError, SimulationError
from biomol_nnp.io import write_json_atomic, write_text_atomic

logger = logging.getLogger(__name__)

PHASES = ("walkers", "select", "label", "train")
"""Phases of one iteration, in order."""
STATE_FILE = "state.json"
TABLE_CSV = "active_learning.csv"
TABLE_JSON = "active_learning.json"
PLOT_FILE = "active_learning.png"
TABLE_COLUMNS = (
    "iteration",
    "frames",
    "walkers_failed",
    "uncertain_fraction",
    "mean_max_force_std_kj_per_mol_nm",
    "force_std_threshold_kj_per_mol_nm",
    "selected",
    "labels_added",
    "labels_failed",
    "labels_total_added",
    "heldout_force_mae_kcal_per_mol_A",
    "heldout_energy_mae_kcal_per_mol",
    "split_test_force_mae_kcal_per_mol_A",
    "walkers_seconds",
    "label_seconds",
    "train_seconds",
    "model",
)


@dataclass
class ActiveLearningResult:
    """Outcome of :func:`run_active_learning`.

    Attributes
    ----------
    rows : list of dict
        The per-iteration table (row 0: the initial model).
    stopped : str
        Why the loop ended: ``"converged"``, ``"max_iterations"``, ``"max_labels"`` or ``"no_uncertain_frames"``.
    model : pathlib.Path
        The latest deployed model.
    output_dir : pathlib.Path
    """

    rows: list[dict[str, Any]]
    stopped: str
    model: Path
    output_dir: Path


def check_settings(active: ActiveLearningSettings) -> None:
    """Refuse a configuration the loop cannot start from, naming the setting and the fix.

    Raises
    ------
    ConfigError
        No or a missing initial model or label store, a store without ok labels, walkers too short to
        give a frame, or a selection ceiling not above the threshold.
    """
    from biomol_nnp.qm.labels import LabelStore

    ceiling = active.selection_ceiling_kj_per_mol_nm
    if (
        ceiling is not None
        and active.threshold_quantile is None
        and ceiling <= active.force_std_threshold_kj_per_mol_nm
    ):
        raise ConfigError(
            f"active.selection_ceiling_kj_per_mol_nm={ceiling:g} is not above force_std_threshold_kj_per_mol_nm="
            f"{active.force_std_threshold_kj_per_mol_nm:g}, so no frame could be selected; raise the ceiling or "
            "set it to null"
        )
    if active.initial_model is None or not Path(active.initial_model).is_file():
        raise ConfigError(
            f"active.initial_model={None if active.initial_model is None else str(active.initial_model)!r} is not "
            "a file; give the model.pt to start from (train one with `biomol-nnp train`)"
        )
    for name in ("labels_path", "test_labels_path"):
        path = getattr(active, name)
        if path is None and name == "test_labels_path":
            continue
        if path is None or not Path(path).is_file() or LabelStore(path).statuses()["ok"] == 0:
            raise ConfigError(
                f"active.{name}={None if path is None else str(path)!r} is not a label store with ok labels; give "
                "the labels the initial model was trained on (`biomol-nnp label`)"
            )
    if active.walker_steps < active.frame_interval:
        raise ConfigError(
            f"active.walker_steps={active.walker_steps} is shorter than active.frame_interval="
            f"{active.frame_interval}, so no walker would keep a frame; raise walker_steps or lower frame_interval"
        )


def run_active_learning(
    settings: PipelineSettings, output_dir: str | os.PathLike, restart: bool = False, progress: bool = False
) -> ActiveLearningResult:
    """Run (or resume) the active-learning loop described by ``settings.active`` into ``output_dir``.

    Parameters
    ----------
    settings : PipelineSettings
        ``active`` (the loop), ``system`` and ``simulation`` (the walkers), ``sampling.point_charge_cutoff_nm``
        (carving), ``labels`` (QM method) and ``train`` (loss weights, batch size, split).
    output_dir : path-like
        Folder of the state file, the per-iteration folders and the table.
    restart : bool
        Ignore an existing state file and start from ``active.initial_model`` (labels already in the store
        are kept and not recomputed).
    progress : bool
        Show progress bars while labelling.

    Returns
    -------
    ActiveLearningResult
    """
    active = settings.active
    check_settings(active)
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    state_path = output / STATE_FILE
    state = json.loads(state_path.read_text()) if state_path.exists() and not restart else None
    if state is None:
        state = {"iteration": 1, "done": [], "model": str(active.initial_model), "rows": [], "stopped": None}
        state["rows"].append({"iteration": 0, "model": state["model"], **_heldout_row(active, state["model"])})
        _save(output, state)
    else:
        logger.info("resuming %s at iteration %d after %s", output, state["iteration"], state["done"] or "nothing")
    settings.to_yaml(output / "settings.yaml")
    with ExitStack() as stack:
        client = None
        while state["stopped"] is None:
            if client is None and (active.workers > 0 or active.scheduler_address):
                from biomol_nnp.qm.distributed import make_client

                client = make_client(active.workers, active.scheduler_address, stack)
            _run_iteration(settings, output, state, client, progress)
    write_plot(state["rows"], output / PLOT_FILE)
    logger.info(
        "active learning stopped (%s); table %s, model %s", state["stopped"], output / TABLE_CSV, state["model"]
    )
    return ActiveLearningResult(state["rows"], state["stopped"], Path(state["model"]), output)


def _run_iteration(
    settings: PipelineSettings, output: Path, state: dict[str, Any], client: Any, progress: bool
) -> None:
    """Run the unfinished phases of the current iteration, saving the state after each."""
    iteration = state["iteration"]
    folder = output / f"iteration_{iteration:02d}"
    if len(state["rows"]) <= iteration:
        state["rows"].append({"iteration": iteration, "model": state["model"]})
    row = state["rows"][iteration]
    phases = {"walkers": _walkers_phase, "select": _select_phase, "label": _label_phase, "train": _train_phase}
    for name in PHASES:
        if name in state["done"]:
            continue
        started = time.perf_counter()
        logger.info("iteration %d: %s", iteration, name)
        phases[name](settings, folder, state, row, client, progress)
        row[f"{name}_seconds"] = time.perf_counter() - started
        state["done"].append(name)
        _save(output, state)
        if state["stopped"] is not None:
            return
    active = settings.active
    if iteration >= active.max_iterations:
        state["stopped"] = "max_iterations"
    elif sum(int(r.get("labels_added", 0)) for r in state["rows"]) >= active.max_labels:
        state["stopped"] = "max_labels"
    else:
        state["iteration"], state["done"] = iteration + 1, []
    _save(output, state)
    write_plot(state["rows"], output / PLOT_FILE)


def _walkers_phase(
    settings: PipelineSettings, folder: Path, state: dict[str, Any], row: dict[str, Any], client: Any, progress: bool
) -> None:
    from biomol_nnp.active.walkers import run_walkers
    from biomol_nnp.qm.configurations import write_configurations

    results = run_walkers(settings, state["model"], state["iteration"], client)
    configs = [c for r in results for c in r.configs]
    if not configs:
        reasons = "; ".join(f"walker {r.walker}: {r.error}" for r in results)
        raise SimulationError(
            f"no walker of iteration {state['iteration']} produced a frame ({reasons}); check the model with "
            "`biomol-nnp run` or lower simulation.timestep_fs"
        )
    write_configurations(configs, folder / "frames.h5")
    force_std = np.array([s for r in results for s in r.force_std])
    threshold = calibrated_threshold(settings.active, state, force_std)
    write_json_atomic(
        folder / "walkers.json", {"walkers": [r.summary() for r in results], "threshold_kj_per_mol_nm": threshold}
    )
    row.update(
        frames=len(configs),
        force_std_threshold_kj_per_mol_nm=threshold,
        walkers_failed=sum(bool(r.error) for r in results),
        uncertain_fraction=uncertain_fraction(force_std, threshold),
        mean_max_force_std_kj_per_mol_nm=float(np.nanmean(force_std)),
        walker_seconds=float(sum(r.seconds for r in results)),
    )
    logger.info(
        "iteration %d: %d frames from %d walkers (%d failed), uncertain fraction %.2f",
        state["iteration"],
        len(configs),
        len(results),
        row["walkers_failed"],
        row["uncertain_fraction"],
    )


def calibrated_threshold(active: ActiveLearningSettings, state: dict[str, Any], force_std: np.ndarray) -> float:
    """The uncertainty threshold of the loop, kJ/mol/nm: ``active.force_std_threshold_kj_per_mol_nm``, or with
    ``active.threshold_quantile`` that quantile of the first walker round's ``force_std``, stored in ``state``
    (``"threshold"``) and kept for every later iteration and a resumed run.

    Raises
    ------
    ConfigError
        The calibrated threshold is not below ``active.selection_ceiling_kj_per_mol_nm``, so no frame could be
        selected.
    """
    if "threshold" in state:
        return float(state["threshold"])
    if active.threshold_quantile is None:
        return active.force_std_threshold_kj_per_mol_nm
    finite = force_std[np.isfinite(force_std)]
    if finite.size == 0:  # no usable frame: keep the fixed threshold, calibrate on the next round
        return active.force_std_threshold_kj_per_mol_nm
    threshold = float(np.quantile(finite, active.threshold_quantile))
    ceiling = active.selection_ceiling_kj_per_mol_nm
    if ceiling is not None and ceiling <= threshold:
        raise ConfigError(
            f"active.selection_ceiling_kj_per_mol_nm={ceiling:g} is not above the threshold calibrated from the first "
            f"walkers ({threshold:.1f} kJ/mol/nm, quantile {active.threshold_quantile:g}), so no frame could be "
            "selected; raise the ceiling or set it to null"
        )
    state["threshold"] = threshold
    logger.info(
        "uncertainty threshold: %.1f kJ/mol/nm, the %g quantile of %d first-iteration frames",
        threshold,
        active.threshold_quantile,
        finite.size,
    )
    return threshold


def _select_phase(
    settings: PipelineSettings, folder: Path, state: dict[str, Any], row: dict[str, Any], client: Any, progress: bool
) -> None:
    from biomol_nnp.qm.configurations import read_configurations

    active = settings.active
    configs = read_configurations(folder / "frames.h5")
    scored = json.loads((folder / "walkers.json").read_text())
    force_std = np.array([s for w in scored["walkers"] for s in w["max_force_std_kj_per_mol_nm"]])
    spent = sum(int(r.get("labels_added", 0)) for r in state["rows"])
    budget = max(0, min(active.labels_per_iteration, active.max_labels - spent))
    converged = row["uncertain_fraction"] < active.target_uncertain_fraction
    chosen = (
        []
        if converged
        else select_frames(
            force_std,
            frame_descriptors([c.positions for c in configs]),
            scored["threshold_kj_per_mol_nm"],  # the one the walkers phase scored with (calibrated_threshold)
            budget,
            active.selection_ceiling_kj_per_mol_nm,
        )
    )
    write_json_atomic(folder / "selected.json", {"frames": chosen, "budget": budget, "converged": converged})
    row["selected"] = len(chosen)
    if converged:
        state["stopped"] = "converged"
    elif not chosen:
        state["stopped"] = "no_uncertain_frames"


def _label_phase(
    settings: PipelineSettings, folder: Path, state: dict[str, Any], row: dict[str, Any], client: Any, progress: bool
) -> None:
    from biomol_nnp.qm.configurations import read_configurations
    from biomol_nnp.qm.labeling import label_configurations
    from biomol_nnp.qm.labels import LabelStore, config_hash

    configs = read_configurations(folder / "frames.h5")
    chosen = [configs[i] for i in json.loads((folder / "selected.json").read_text())["frames"]]
    store_path = Path(str(settings.active.labels_path))
    label_configurations(chosen, store_path, settings.labels, progress=progress, client=client)
    latest = LabelStore(store_path).latest_records()  # counted from the store: right after a resumed labelling too
    statuses = [latest.get(config_hash(c), {}).get("status") for c in chosen]
    row.update(labels_added=statuses.count("ok"), labels_failed=len(chosen) - statuses.count("ok"))
    row["labels_total_added"] = sum(int(r.get("labels_added", 0)) for r in state["rows"])


def _train_phase(
    settings: PipelineSettings, folder: Path, state: dict[str, Any], row: dict[str, Any], client: Any, progress: bool
) -> None:
    from biomol_nnp.active.retrain import export_ensemble, finetune, load_ensemble
    from biomol_nnp.qm.labels import LabelStore
    from biomol_nnp.train.data import samples_from_store

    active = settings.active
    store = LabelStore(Path(str(active.labels_path)))
    samples = samples_from_store(store)
    model, model_settings, metadata = load_ensemble(state["model"])
    outcome = finetune(
        model, samples, model_settings, settings.train, active.retrain_epochs, active.retrain_learning_rate
    )
    path = export_ensemble(outcome.model, model_settings, metadata, samples, store.content_hash(), folder / "model.pt")
    write_json_atomic(folder / "metrics.json", {**outcome.metrics, "history": outcome.history})
    state["model"] = str(path)
    row.update(
        model=str(path),
        split_test_force_mae_kcal_per_mol_A=outcome.metrics["test"].get("force_mae_kcal_per_mol_A", float("nan")),
        **_heldout_row(active, str(path)),
    )


def _heldout_row(active: ActiveLearningSettings, model_path: str) -> dict[str, float]:
    """Held-out errors of a model on ``active.test_labels_path`` (empty without a held-out store)."""
    if active.test_labels_path is None:
        return {}
    from biomol_nnp.active.retrain import held_out_errors
    from biomol_nnp.models.export import load_model
    from biomol_nnp.qm.labels import LabelStore

    module, _ = load_model(model_path)
    errors = held_out_errors(module, LabelStore(active.test_labels_path).load_training_arrays())
    return {
        "heldout_force_mae_kcal_per_mol_A": errors["force_mae_kcal_per_mol_A"],
        "heldout_energy_mae_kcal_per_mol": errors["energy_mae_kcal_per_mol"],
    }


def _save(output: Path, state: dict[str, Any]) -> None:
    """Write the state file, then the table (CSV and JSON), each atomically."""
    write_json_atomic(output / STATE_FILE, state)
    write_json_atomic(output / TABLE_JSON, {"stopped": state["stopped"], "rows": state["rows"]})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=TABLE_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(state["rows"])
    write_text_atomic(output / TABLE_CSV, buffer.getvalue())


def write_plot(rows: list[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Three panels per iteration: uncertain fraction, held-out force MAE, labels added (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from biomol_nnp.io import atomic_path

    def column(key: str) -> tuple[list[int], list[float]]:
        points = [(int(r["iteration"]), float(r[key])) for r in rows if r.get(key) is not None]
        return [p[0] for p in points], [p[1] for p in points]

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    x, y = column("uncertain_fraction")
    axes[0].plot(x, y, "o-")
    axes[0].set(xlabel="iteration", ylabel="uncertain fraction", ylim=(0, 1.05), title="walker frames above threshold")
    for key, label in (
        ("heldout_force_mae_kcal_per_mol_A", "held-out set (QM/MM)"),
        ("split_test_force_mae_kcal_per_mol_A", "trainer split (vacuum)"),
    ):
        x, y = column(key)
        if x:
            axes[1].plot(x, y, "o-", label=label)
    axes[1].set(xlabel="iteration (0: initial model)", ylabel="force MAE (kcal/mol/A)", title="test errors")
    axes[1].legend(fontsize=8)
    x, y = column("labels_added")
    axes[2].bar(x, y)
    axes[2].set(xlabel="iteration", ylabel="labels added", title="QM labels")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(path)
