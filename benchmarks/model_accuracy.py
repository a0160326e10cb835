"""Accuracy of the trained models against GFN2-xTB labels (issue 4 targets).

Cases, each labelled with GFN2-xTB (xtb-python) and cached under benchmarks/data/ (gitignored):

- alanine dipeptide: MM MD frames at 300 K (the temperature the model is used at) of the solvated system
  (with the TIP3P/Amber point charges within 1.0 nm, so embedding-energy labels exist) and of the vacuum
  system, several independent
  trajectories per phase; the test set is whole trajectories never used in training.
- water clusters of 2 to 20 molecules carved from the shipped solvated box; the test set is whole
  cluster sizes (trajectory id = size) never used in training.

For each architecture in the model registry (``ani``, and ``painn`` where it exists) and each case one
model is trained on the CPU and the held-out mean absolute errors are compared with the targets:
energy <= 0.5 kcal/mol, forces <= 1.0 kcal/mol/A, embedding energy <= 0.5 kcal/mol (dipeptide);
forces <= 1.0 kcal/mol/A (water). Training wall time on this machine is reported.
Writes benchmarks/results/model_accuracy.json and parity plots next to it.

Run: nice .venv/bin/python benchmarks/model_accuracy.py [--quick]   (default run: see the JSON's
``run_length``; --quick trains a few epochs for a smoke test)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from biomol_nnp.config import LabelSettings, ModelSettings, PipelineSettings, SystemSettings, TrainSettings
from biomol_nnp.io import write_json_atomic

logger = logging.getLogger("model_accuracy")

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
RESULTS = HERE / "results"
OUT = RESULTS / "model_accuracy.json"

TARGETS = {
    "dipeptide": {"energy_mae_kcal_per_mol": 0.5, "force_mae_kcal_per_mol_A": 1.0, "embedding_mae_kcal_per_mol": 0.5},
    "water_clusters": {"force_mae_kcal_per_mol_A": 1.0},
}

DIPEPTIDE_SAMPLING = {
    "solvated_frames": 1200,
    "vacuum_frames": 600,
    "trajectories_per_phase": 8,
    "steps_between_frames": 50,
    "equilibration_steps": 500,
    "temperature_k": 300.0,
}
WATER_SIZES = tuple(range(2, 21))
WATER_PER_SIZE = 30


def dipeptide_labels() -> Path:
    """GFN2-xTB labels of alanine-dipeptide MD frames (cached)."""
    from biomol_nnp.pipeline import sample_and_label

    path = DATA / "dipeptide_labels_300k.h5"
    settings = PipelineSettings()
    for key, value in DIPEPTIDE_SAMPLING.items():
        setattr(settings.sampling, key, value)
    if not (DATA / "dipeptide_labels_300k.done").exists():
        sample_and_label(settings, path, progress=False)
        (DATA / "dipeptide_labels_300k.done").write_text("ok\n")
    return path


def water_labels() -> Path:
    """GFN2-xTB labels of water clusters of 2..20 molecules in vacuum (cached)."""
    from biomol_nnp.qm.clusters import water_clusters
    from biomol_nnp.qm.labeling import label_configurations

    path = DATA / "water_cluster_labels.h5"
    if not (DATA / "water_cluster_labels.done").exists():
        configs = water_clusters(SystemSettings().solvated_pdb, sizes=WATER_SIZES, per_size=WATER_PER_SIZE, seed=7)
        label_configurations(configs, path, LabelSettings())
        (DATA / "water_cluster_labels.done").write_text("ok\n")
    return path


def case_settings(
    case: str, architecture: str, quick: bool, epochs: int | None = None
) -> tuple[ModelSettings, TrainSettings]:
    """Model and training settings of one case (quick: a few epochs, for a smoke test)."""
    model = ModelSettings(elements=[1, 8] if case == "water_clusters" else [1, 6, 7, 8])
    if "architecture" in ModelSettings.model_fields:
        model = model.model_copy(update={"architecture": architecture})
    train = TrainSettings(
        ensemble_size=1,
        epochs=3 if quick else epochs or EPOCHS[case],
        batch_size=16,
        learning_rate=5e-3,
        force_weight=20.0,
        embedding_weight=0.0 if case == "water_clusters" else 1.0,
        validation_fraction=0.2,
        dtype="float32",
    )
    return model, train


EPOCHS = {"dipeptide": 100, "water_clusters": 10}
"""Epochs of the default run (cosine schedule down to learning_rate/20; best validation epoch kept)."""


def architectures() -> list[str]:
    """Architectures in the model registry (``ani`` before the registry exists)."""
    try:
        from biomol_nnp.models.registry import ARCHITECTURES
    except ImportError:
        return ["ani"]
    return sorted(ARCHITECTURES)


def run_case(case: str, labels: Path, architecture: str, quick: bool, epochs: int | None = None) -> dict[str, Any]:
    """Train one model on ``labels`` and measure it on the held-out trajectories."""
    from tqdm.auto import tqdm

    from biomol_nnp.pipeline import write_parity_plot
    from biomol_nnp.qm.labels import LabelStore
    from biomol_nnp.train.data import samples_from_store
    from biomol_nnp.train.trainer import train_ensemble

    model_settings, train_settings = case_settings(case, architecture, quick, epochs)
    samples = samples_from_store(LabelStore(labels))
    bar = tqdm(total=train_settings.epochs * train_settings.ensemble_size, desc=f"{case}/{architecture}")

    def update(done: int, total: int, loss: float) -> None:
        bar.update(done - bar.n)
        bar.set_postfix(loss=f"{loss:.3g}")

    started, cpu = time.perf_counter(), time.process_time()
    result = train_ensemble(samples, model_settings, train_settings, progress=update)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    bar.close()
    plot = RESULTS / f"model_accuracy_{case}_{architecture}.png"
    write_parity_plot(result, plot)
    test = result.metrics["test"]
    met = {key: bool(test[key] <= bound) for key, bound in TARGETS[case].items()}
    return {
        "architecture": architecture,
        "case": case,
        "configurations": {
            "train": len(result.train_samples),
            "validation": len(result.validation_samples),
            "test": len(result.test_samples),
            "test_trajectories": sorted({(s.source, s.trajectory_id) for s in result.test_samples}),
        },
        "test": clean(test),
        "train": clean(result.metrics["train"]),
        "targets": TARGETS[case],
        "targets_met": met,
        "all_targets_met": all(met.values()),
        "training_wall_s": round(seconds, 1),
        "training_cpu_s": round(cpu, 1),
        "epochs_run": result.metrics["training"]["epochs_run"],
        "best_validation_loss": result.metrics["training"]["best_validation_loss"],
        "model_settings": model_settings.model_dump(mode="json"),
        "train_settings": train_settings.model_dump(mode="json"),
        "parity_plot": plot.name,
    }


def clean(metrics: dict[str, float]) -> dict[str, float | None]:
    """Metrics rounded for the JSON; NaN (no such label) becomes null."""
    return {key: (None if np.isnan(value) else round(float(value), 4)) for key, value in metrics.items()}


def report_header() -> dict[str, Any]:
    """What the JSON says about the machine, the run length and the data."""
    return {
        "benchmark": "held-out accuracy of trained NNPs against GFN2-xTB labels (issue 4 targets)",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared with other jobs: "
        "wall times are contended), one torch thread per member",
        "run_length": f"default: {EPOCHS} epochs per model (cosine schedule), one member each; --quick: 3 epochs",
        "data": {
            "dipeptide": f"alanine dipeptide MM MD, {DIPEPTIDE_SAMPLING}; GFN2-xTB (xtb-python) vacuum "
            "and with point charges (1.0 nm); test = whole held-out trajectories per phase",
            "water_clusters": f"{len(WATER_SIZES)} sizes (2-20 waters) x {WATER_PER_SIZE} random centres from "
            "systems/alanine_dipeptide/solvated.pdb, GFN2-xTB in vacuum; test = whole held-out sizes",
        },
    }


def save_entry(out: Path, header: dict[str, Any], key: str, entry: dict[str, Any]) -> None:
    """Add one case to the JSON, keeping the cases other runs (processes) wrote there."""
    report = json.loads(out.read_text()) if out.exists() else {}
    report.update(header)
    report.setdefault("results", {})[key] = entry
    write_json_atomic(out, report)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 epochs per model (smoke test)")
    parser.add_argument("--architectures", nargs="*", help="subset of the registry (default: all)")
    parser.add_argument("--cases", nargs="*", default=["dipeptide", "water_clusters"], help="subset of the cases")
    parser.add_argument("--collect", nargs="*", type=Path, help="merge these partial result JSONs into the output")
    parser.add_argument("--epochs", type=int, help="epochs of every case (default: EPOCHS)")
    parser.add_argument("--output", type=Path, help=f"JSON to add the results to (default {OUT.name} in results/)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    out = args.output or (RESULTS / "model_accuracy_quick.json" if args.quick else OUT)
    header = report_header()
    if args.collect:
        for part in args.collect:
            for key, entry in json.loads(part.read_text())["results"].items():
                save_entry(out, header, f"{key}/{entry['train_settings']['epochs']}_epochs", entry)
        return 0
    labels = {"dipeptide": dipeptide_labels, "water_clusters": water_labels}
    for case in args.cases:
        path = labels[case]()
        for architecture in args.architectures or architectures():
            entry = run_case(case, path, architecture, args.quick, args.epochs)
            save_entry(out, header, f"{case}/{architecture}", entry)
            logger.info("%s/%s: test %s (%.0f s)", case, architecture, entry["test"], entry["training_wall_s"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
