"""Evidence for issue 6: active learning from a vacuum-only model on solvated alanine dipeptide.

1. Initial model: GFN2-xTB labels of vacuum MM-MD frames only (500 K), an ensemble trained on them.
2. Held-out set: solvated MM-MD frames (300 K, other seeds), labelled once with GFN2-xTB/MM (the region in
   the field of the TIP3P point charges); never used in training.
3. Three iterations of `biomol-nnp active-learn` on the solvated dipeptide: 12 walkers per iteration (Dask tasks),
   each 2 ps of pure MM (minimised on the MM surface) and then 200 NNP/MM steps at 300 K, 1 fs, a frame every 10
   steps; up to 48 uncertain + diverse frames labelled with GFN2-xTB/MM per iteration; 40 warm-started epochs from
   2e-4 on all labels (initial + added); then one more round of walkers with the final model to measure its
   uncertain fraction.

Threshold rule (fixed before the run): a frame is uncertain when the ensemble's largest per-atom force standard
deviation exceeds the MEDIAN of the first iteration's walker frames (driven by the initial model;
``active.threshold_quantile = 0.5``), fixed for the later iterations and the final round, so the fraction is 0.5 at
iteration 1 by construction and a falling fraction shows the models learning the configurations they explore. The
initial model's median spread on its own vacuum training frames is reported too, with the share of the first
iteration's frames above it. A walker stops after a frame above 10x that vacuum median (far off the model's
domain).

Reported per model (0 = initial): force MAE against GFN2-xTB/MM on the held-out frames (model forces with the
electrostatic embedding vs QM forces with the point charges) and the uncertain fraction of the walkers it drove.
Target: >= 30 % lower held-out force MAE after three iterations, and a falling uncertain fraction.

Run (about 19 min on 2 shared cores with the data cached, ~10 min more to train the initial model and ~15 min to
label the held-out set; data cached in benchmarks/data/active_learning/):

    nice .venv/bin/python benchmarks/active_learning.py                # 12 walkers per round
    nice .venv/bin/python benchmarks/active_learning.py --walkers 8    # the smaller run, its own files

Writes benchmarks/results/active_learning.json and active_learning.png.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "active_learning"
RESULTS = HERE / "results"
TARGET_REDUCTION = 0.30
WALKERS = 12
WALKER_STOP_FACTOR = 10.0
"""A walker stops after a frame whose max force std exceeds this times the vacuum training frames' median."""
THRESHOLD_RULE = (
    "median max-force-std of the first iteration's walker frames (driven by the initial model), fixed for the later "
    "iterations and the final round (active.threshold_quantile = 0.5): fraction 0.5 at iteration 1 by construction"
)

logger = logging.getLogger("benchmarks.active_learning")


def benchmark_settings() -> Any:
    """All settings of the run (stated in the result JSON)."""
    from biomol_nnp.config import PipelineSettings

    s = PipelineSettings()
    s.sampling.solvated_frames, s.sampling.vacuum_frames = 0, 240
    s.sampling.trajectories_per_phase = 4
    s.sampling.equilibration_steps, s.sampling.steps_between_frames = 500, 100
    s.train.ensemble_size, s.train.epochs, s.train.embedding_weight = 3, 100, 0.0  # vacuum labels: no embedding
    s.simulation.temperature_k, s.simulation.timestep_fs = 300.0, 1.0
    s.active = s.active.model_copy(
        update={
            "initial_model": DATA / "initial_model" / "model.pt",
            "labels_path": DATA / "run" / "labels.h5",
            "test_labels_path": DATA / "test_labels.h5",
            "walkers": WALKERS,
            "walker_steps": 200,
            "frame_interval": 10,
            "minimize_iterations": 50,  # on the MM surface, before the MM equilibration
            "mm_equilibration_steps": 2000,  # walkers start in equilibrated MM solvent, as the held-out frames
            "threshold_quantile": 0.5,  # the median spread of the first walker round, fixed afterwards
            "force_std_threshold_kj_per_mol_nm": 100.0,  # replaced by the calibrated one in iteration 1
            "target_uncertain_fraction": 0.0,  # always three iterations (the evidence asks for three)
            "labels_per_iteration": 48,
            "max_iterations": 3,
            "max_labels": 144,
            "retrain_epochs": 40,
            "retrain_learning_rate": 2e-4,  # the initial training ended at 1.5e-4; 2e-3 threw it out of its minimum
            "workers": 2,
        }
    )
    return s


def prepare_data(settings: Any) -> dict[str, float]:
    """Initial vacuum labels and model, and the held-out solvated labels (cached)."""
    from biomol_nnp.pipeline import sample_and_label, train_and_export

    timings: dict[str, float] = {}
    started = time.perf_counter()
    if not (DATA / "initial_model" / "model.pt").exists():
        sample_and_label(settings, DATA / "vacuum_labels.h5")
        train_and_export(settings, DATA / "vacuum_labels.h5", DATA / "initial_model", resume=True)
    timings["initial_model_seconds"] = time.perf_counter() - started
    started = time.perf_counter()
    if not (DATA / "test_labels.h5.done").exists():
        held_out = settings.model_copy(deep=True)
        held_out.sampling.solvated_frames, held_out.sampling.vacuum_frames = 60, 0
        held_out.sampling.trajectories_per_phase, held_out.sampling.seed = 3, 777
        held_out.sampling.temperature_k = 300.0
        sample_and_label(held_out, DATA / "test_labels.h5")
        (DATA / "test_labels.h5.done").write_text("ok\n")
    timings["held_out_labels_seconds"] = time.perf_counter() - started
    return timings


def vacuum_spread(model: Path, labels: Path) -> float:
    """The median max-force-std of the initial model on its own (vacuum) training frames, kJ/mol/nm.

    Reported for reference and the scale of the walkers' stop: every solvated frame lies above it, so as a
    threshold it would leave the uncertain fraction at 1.0 whatever the loop learns.
    """
    import numpy as np

    from biomol_nnp.models.export import load_model
    from biomol_nnp.qm.labels import LabelStore
    from biomol_nnp.simulate.uncertainty import ensemble_uncertainty

    module, _ = load_model(model)
    records = LabelStore(labels).load_training_arrays()
    spreads = [ensemble_uncertainty(module, r.positions, r.atomic_numbers, r.total_charge)[1] for r in records]
    return float(np.median(spreads))


def first_round_above(loop_dir: Path, threshold: float) -> float:
    """Fraction of the first iteration's walker frames whose max force std exceeds ``threshold``."""
    import numpy as np

    from biomol_nnp.active.selection import uncertain_fraction

    walkers = json.loads((loop_dir / "iteration_01" / "walkers.json").read_text())["walkers"]
    return uncertain_fraction(np.array([s for w in walkers for s in w["max_force_std_kj_per_mol_nm"]]), threshold)


def falls(values: list[float]) -> bool:
    """Whether every value is below the one before it."""
    return all(b < a for a, b in zip(values, values[1:], strict=False))


def final_fraction(settings: Any, model: Path, threshold: float) -> float:
    """Uncertain fraction of one more round of walkers driven by the final model."""
    from contextlib import ExitStack

    import numpy as np

    from biomol_nnp.active.selection import uncertain_fraction
    from biomol_nnp.active.walkers import run_walkers
    from biomol_nnp.qm.distributed import make_client

    with ExitStack() as stack:
        client = make_client(settings.active.workers, None, stack)
        results = run_walkers(settings, model, settings.active.max_iterations + 1, client)
    stds = np.array([s for r in results for s in r.force_std])
    return uncertain_fraction(stds, threshold)


def plot(models: list[int], mae: list[float], fractions: list[float], labels: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from biomol_nnp.io import atomic_path

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    axes[0].plot(models[: len(fractions)], fractions, "o-")
    axes[0].set(
        xlabel="model (0: vacuum-only)",
        ylabel="uncertain fraction",
        ylim=(0, 1.05),
        title="walker frames above threshold",
    )
    axes[1].plot(models, mae, "o-")
    axes[1].set(
        xlabel="model (0: vacuum-only)",
        ylabel="force MAE (kcal/mol/A)",
        title="held-out solvated frames vs GFN2-xTB/MM",
    )
    axes[2].bar(range(1, len(labels) + 1), labels)
    axes[2].set(xlabel="iteration", ylabel="labels added", title="GFN2-xTB/MM labels")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def main() -> None:
    from biomol_nnp.active import run_active_learning
    from biomol_nnp.io import write_json_atomic
    from biomol_nnp.qm.labels import LabelStore

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resume", action="store_true", help="continue an interrupted loop in data/.../run")
    parser.add_argument(
        "--no-final-walkers", action="store_true", help="skip the extra walker round that scores the final model"
    )
    parser.add_argument(
        "--report-only", action="store_true", help="write the result from the loop's state as it is (no computation)"
    )
    parser.add_argument(
        "--walkers",
        type=int,
        default=WALKERS,
        help=f"walkers per round (default {WALKERS}); another count writes run_<n>walkers/ and "
        "active_learning_<n>walkers.json/.png",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = benchmark_settings()
    started = time.perf_counter()
    settings.active.walkers = args.walkers
    name = "active_learning" if args.walkers == WALKERS else f"active_learning_{args.walkers}walkers"
    run_dir = DATA / ("run" if args.walkers == WALKERS else f"run_{args.walkers}walkers")
    settings.active.labels_path = run_dir / "labels.h5"
    timings: dict[str, float] = {}
    if not args.report_only:
        timings = prepare_data(settings)
    vacuum = vacuum_spread(DATA / "initial_model" / "model.pt", DATA / "vacuum_labels.h5")
    settings.active.walker_stop_force_std_kj_per_mol_nm = WALKER_STOP_FACTOR * vacuum  # far off the domain: stop
    settings.train.embedding_weight = 1.0  # solvated labels carry the embedding energy
    if not args.report_only:
        if not args.resume:
            shutil.rmtree(run_dir, ignore_errors=True)
            run_dir.mkdir(parents=True)
            shutil.copy(DATA / "vacuum_labels.h5", run_dir / "labels.h5")
        loop_started = time.perf_counter()
        run_active_learning(settings, run_dir / "loop")
        timings["active_learning_seconds"] = time.perf_counter() - loop_started
    state = json.loads((run_dir / "loop" / "state.json").read_text())
    rows, stopped = state["rows"], state["stopped"]
    threshold = float(state.get("threshold", settings.active.force_std_threshold_kj_per_mol_nm))
    fractions = [float(r["uncertain_fraction"]) for r in rows[1:] if "uncertain_fraction" in r]
    final = run_dir / "loop" / "final_round.json"  # the final model's walker round, kept for --report-only
    if not args.no_final_walkers and not args.report_only:
        final_started = time.perf_counter()
        write_json_atomic(
            final,
            {"model": state["model"], "uncertain_fraction": final_fraction(settings, Path(state["model"]), threshold)},
        )
        timings["final_walkers_seconds"] = time.perf_counter() - final_started
    if not args.no_final_walkers and final.exists() and json.loads(final.read_text())["model"] == state["model"]:
        fractions.append(float(json.loads(final.read_text())["uncertain_fraction"]))
    scored = [r for r in rows if "heldout_force_mae_kcal_per_mol_A" in r]
    mae = [float(r["heldout_force_mae_kcal_per_mol_A"]) for r in scored]
    labels = [int(r.get("labels_added", 0)) for r in rows[1:]]
    reduction = 1.0 - mae[-1] / mae[0]
    timings["total_seconds"] = time.perf_counter() - started
    outcome = {
        "benchmark": "active_learning",
        "system": "alanine dipeptide (ACE-ALA-NME = ML region, 22 atoms) in TIP3P water, amber14, PME",
        "qm_method": "GFN2-xTB (xtb-python), point charges of waters within 1 nm",
        "held_out": {
            "configurations": len(LabelStore(settings.active.test_labels_path).load_training_arrays()),
            "what": "solvated MM-MD frames at 300 K (3 trajectories, seed 777), labelled once with GFN2-xTB/MM, "
            "never trained on",
        },
        "initial_model": "trained on 240 vacuum MM-MD frames (500 K, 4 trajectories; 1 held out) only",
        "models": list(range(len(mae))),
        "heldout_force_mae_kcal_per_mol_A": mae,
        "heldout_energy_mae_kcal_per_mol": [float(r["heldout_energy_mae_kcal_per_mol"]) for r in scored],
        "uncertain_fraction_by_model": fractions,
        "uncertain_fraction_falls_each_iteration": falls(fractions),
        "uncertain_fraction_falls_over_the_loop_rounds": falls(fractions[: len(rows) - 1]),
        "labels_added": labels,
        "force_std_threshold_kj_per_mol_nm": threshold,
        "threshold_rule": THRESHOLD_RULE,
        "vacuum_training_frames_median_force_std_kj_per_mol_nm": vacuum,
        "iteration_1_fraction_above_the_vacuum_median": first_round_above(run_dir / "loop", vacuum),
        "walker_stop_force_std_kj_per_mol_nm": settings.active.walker_stop_force_std_kj_per_mol_nm,
        "force_mae_reduction": reduction,
        "target_reduction": TARGET_REDUCTION,
        "target_met": reduction >= TARGET_REDUCTION,
        "stopped": stopped,
        "complete": stopped is not None,
        "rows": rows,
        "timings_seconds": timings,
        "settings": settings.model_dump(mode="json"),
        "machine": f"{platform.machine()}, {platform.python_version()}; 2 CPU cores shared with other jobs",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json_atomic(RESULTS / f"{name}.json", outcome)
    plot(outcome["models"], mae, fractions, labels, RESULTS / f"{name}.png")

    logger.info(
        "held-out force MAE %s kcal/mol/A (reduction %.0f %%), uncertain fraction %s, %.0f s",
        [round(m, 3) for m in mae],
        100 * reduction,
        [round(f, 3) for f in fractions],
        timings["total_seconds"],
    )


if __name__ == "__main__":
    main()
