"""Train the gas-phase NNP that the torsion refit benchmark uses as its target (issue 7).

Our own pipeline, end to end, on one core:

1. **Configurations** of the five capped dipeptides (``systems/dipeptides/{ala,gly,ser,val,asn}.pdb``):
   vacuum ff14SB Langevin MD at 500 K from the minimised PDB (``MD_TRAJECTORIES`` independent runs of
   ``MD_FRAMES`` frames each, ``MD_STRIDE`` steps of 1 fs apart) plus every geometry of the cached GFN2-xTB
   relaxed torsion scans (``benchmarks/data/refit_nnp_targets/<mol>_<dihedral>[_o15].npz``): they cover the
   torsion space the profiles need.
2. **Labels**: GFN2-xTB in vacuum (``biomol_nnp.qm.labeling.label_configurations``, the same engine as the
   scans, ``workers=0``: in this process), appended to ``labels.h5`` as they finish (a rerun skips what is there).
3. **Training**: ``biomol_nnp.pipeline.train_and_export`` (ANI architecture, ``ENSEMBLE_SIZE`` member(s),
   one torch thread), checkpointed in ``nnp/checkpoints`` (``resume=True``), exported to ``nnp/model.pt``.

Test split: whole MD trajectories (one of ``MD_TRAJECTORIES`` per molecule is held out); every scan point is a
training frame (each scan source is one trajectory, which ``split_by_trajectory`` keeps in training).

Run (about 40 CPU-minutes; the benchmark calls ``ensure_model`` itself)::

    OMP_NUM_THREADS=1 nice .venv/bin/python scripts/refit_with_nnp/train_dipeptide_nnp.py

Writes ``benchmarks/data/refit_nnp_targets/{labels.h5, nnp/model.pt, nnp/metrics.json, stages.json}``
(gitignored cache).
"""

from __future__ import annotations

import json
import logging
import os
import resource
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import openmm  # noqa: E402
from openmm import unit  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "benchmarks" / "data" / "refit_nnp_targets"
LABELS = CACHE / "labels.h5"
MODEL_DIR = CACHE / "nnp"
STAGES = CACHE / "stages.json"
MOLECULES = ("ala", "gly", "ser", "val", "asn")
BASE = ("amber14-all.xml",)
MD_TEMPERATURE_K = 500.0
MD_TRAJECTORIES = 4
MD_FRAMES = 40
MD_STRIDE = 100
MD_EQUILIBRATION = 1000
EPOCHS = 200
ENSEMBLE_SIZE = 1

logger = logging.getLogger(__name__)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def md_configurations(name: str) -> list[Any]:
    """Vacuum ff14SB Langevin frames at ``MD_TEMPERATURE_K`` of one dipeptide, one trajectory per seed."""
    from biomol_nnp.qm.sampling import Configuration
    from forcefield_refit.molecules import load_molecule

    molecule = load_molecule(ROOT / "systems" / "dipeptides" / f"{name}.pdb")
    numbers = np.array([a.element.atomic_number for a in molecule.topology.atoms()])
    configs = []
    for trajectory in range(MD_TRAJECTORIES):
        integrator = openmm.LangevinMiddleIntegrator(MD_TEMPERATURE_K, 1.0, 0.001)
        integrator.setRandomNumberSeed(1 + trajectory)
        context = openmm.Context(molecule.system(BASE), integrator, openmm.Platform.getPlatformByName("Reference"))
        context.setPositions(molecule.positions)
        openmm.LocalEnergyMinimizer.minimize(context)  # the Asn PDB has a 0.1 nm O...H clash: MD from it explodes
        context.setVelocitiesToTemperature(MD_TEMPERATURE_K, 1 + trajectory)
        integrator.step(MD_EQUILIBRATION)
        for frame in range(MD_FRAMES):
            integrator.step(MD_STRIDE)
            x = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
            configs.append(Configuration(numbers, x, 0, source=f"md-{name}", trajectory_id=trajectory, frame=frame))
    return configs


def scan_configurations(name: str) -> list[Any]:
    """Every geometry of the cached GFN2-xTB relaxed scans of one dipeptide (one trajectory per source)."""
    from biomol_nnp.qm.sampling import Configuration
    from forcefield_refit.molecules import load_molecule

    molecule = load_molecule(ROOT / "systems" / "dipeptides" / f"{name}.pdb")
    numbers = np.array([a.element.atomic_number for a in molecule.topology.atoms()])
    configs = []
    for path in sorted(CACHE.glob(f"{name}_*.npz")):
        with np.load(path) as data:
            for frame, x in enumerate(data["positions"]):
                configs.append(Configuration(numbers, x, 0, source=f"scan-{path.stem}", trajectory_id=0, frame=frame))
    return configs


def settings() -> Any:
    """Pipeline settings of the target NNP: GFN2-xTB vacuum labels (no embedding term), ANI, one member."""
    from biomol_nnp.config import LabelSettings, ModelSettings, PipelineSettings, TrainSettings

    return PipelineSettings(
        labels=LabelSettings(workers=0),
        model=ModelSettings(architecture="ani"),
        train=TrainSettings(
            ensemble_size=ENSEMBLE_SIZE,
            epochs=EPOCHS,
            learning_rate=5e-3,
            validation_fraction=0.25,
            workers=1,
            checkpoint_interval=5,
            embedding_weight=0.0,
        ),
    )


def _record(stage: str, cpu_s: float | None, wall_s: float, **extra: Any) -> None:
    stages = json.loads(STAGES.read_text()) if STAGES.exists() else {}
    stages[stage] = {"cpu_s": cpu_s, "wall_s": wall_s, **extra}
    tmp = STAGES.with_suffix(".tmp")
    tmp.write_text(json.dumps(stages, indent=2) + "\n")
    os.replace(tmp, STAGES)


def label() -> None:
    """Sample and label every configuration (skips those already in ``labels.h5``)."""
    from biomol_nnp.qm.labeling import label_configurations

    cpu, wall = _cpu_s(), time.perf_counter()
    configs = [c for name in MOLECULES for c in md_configurations(name) + scan_configurations(name)]
    md_cpu = _cpu_s() - cpu
    report = label_configurations(configs, LABELS, settings().labels, progress=False)
    if report.n_ok == 0:  # everything was labelled by an earlier run: keep that run's timing
        return
    _record(
        "sample_and_label",
        _cpu_s() - cpu,
        time.perf_counter() - wall,
        md_cpu_s=md_cpu,
        configurations=len(configs),
        report=str(report),
    )


def ensure_model(progress: bool = False) -> Path:
    """``nnp/model.pt``: labelled and trained unless already there (resumes an interrupted training)."""
    import torch

    from biomol_nnp.pipeline import train_and_export

    model = MODEL_DIR / "model.pt"
    if model.exists():
        return model
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    label()
    cpu, wall = _cpu_s(), time.perf_counter()
    out = train_and_export(settings(), LABELS, MODEL_DIR, progress=progress, resume=True)
    _record("train", _cpu_s() - cpu, time.perf_counter() - wall, test=out["metrics"]["test"])
    return model


def export_best_so_far() -> Path:
    """Export the best validation state of an unfinished training (when the CPU budget runs out).

    The same split, shared-buffer initialisation and metadata as ``train_and_export``, built from the public
    trainer API (``split_samples``, ``MemberResult``, ``merge_members``, ``evaluate_all``) and the member
    checkpoint; ``metrics.json`` records the epoch it stopped at.
    """
    import torch

    from biomol_nnp.io import write_json_atomic
    from biomol_nnp.models.export import build_metadata, save_model
    from biomol_nnp.models.registry import model_cutoff
    from biomol_nnp.qm.labels import LabelStore
    from biomol_nnp.train.data import samples_from_store
    from biomol_nnp.train.trainer import MemberResult, evaluate_all, merge_members, split_samples

    torch.set_num_threads(1)
    config = settings()
    store = LabelStore(LABELS)
    samples = samples_from_store(store)
    train, validation, test = split_samples(samples, config.train)
    state = torch.load(MODEL_DIR / "checkpoints" / "member_000.pt", weights_only=False)
    history = json.loads(state["history"])
    member = MemberResult(
        0, dict(state["best_model"]), history, float(state["best_loss"]), float(state["seconds"]), True
    )
    model = merge_members(train, config.model, config.train, [member])
    metrics: dict[str, Any] = {
        name: evaluate_all(model, split, torch.float64)[0]
        for name, split in (("train", train), ("validation", validation), ("test", test))
    }
    metrics["training"] = {"seconds": member.seconds, "epochs": config.train.epochs, "epochs_run": int(state["epoch"])}
    metadata = build_metadata(
        config.model.elements,
        model_cutoff(config.model),
        config.model.embedding_cutoff_nm,
        config.train.ensemble_size,
        config.labels.method,
        store.content_hash(),
        embedding_switch_width_nm=config.model.embedding_switch_width_nm,
        training_total_charges=[0],
        architecture=config.model.architecture,
        dtype="float64",
        settings=config.model.model_dump(mode="json"),
    )
    path = save_model(model, MODEL_DIR / "model.pt", metadata)
    write_json_atomic(MODEL_DIR / "metrics.json", metrics)
    # the checkpoint holds the member's training wall time only; its CPU time died with the killed process
    _record("train", None, float(state["seconds"]), test=metrics["test"], epochs_run=int(state["epoch"]))
    return path


if __name__ == "__main__":
    import sys

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if "--export-best-so-far" in sys.argv:
        export_best_so_far()
    else:
        ensure_model(progress=False)
