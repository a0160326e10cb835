"""Warm-started retraining of a deployed ensemble, its export, and its errors on held-out labels.

The deployed ``model.pt`` is TorchScript with the model settings in its metadata, so
:func:`load_ensemble` rebuilds the trainable :class:`~biomol_nnp.models.ani.NNPEnsemble` with the same
weights, self energies and feature standardisation. :func:`finetune` continues training on all the labels
in the trainer's loop (split by trajectory as the trainer does, the best epoch on the held-out loss kept,
the starting weights included); only the core-repulsion onsets move, down to the shortest contacts of the new data.

>>> model, model_settings, metadata = load_ensemble("model.pt")  # doctest: +SKIP
>>> outcome = finetune(model, samples, model_settings, TrainSettings(), epochs=20, learning_rate=1e-3)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from biomol_nnp.active.walkers import ACTIVE_SOURCE
from biomol_nnp.config import ModelSettings, TrainSettings
from biomol_nnp.exceptions import ModelFileError
from biomol_nnp.models.ani import NNPEnsemble, build_ensemble
from biomol_nnp.qm.labels import LabeledConfiguration
from biomol_nnp.train.data import TrainingSample, split_validation
from biomol_nnp.train.initialise import refit_embedding_widths, set_repulsion_onsets
from biomol_nnp.train.trainer import FORCE_KJ_NM_TO_KCAL_A, evaluate, split_samples, train_member
from biomol_nnp.units import KJ_TO_KCAL

logger = logging.getLogger(__name__)


@dataclass
class FinetuneResult:
    """The retrained ensemble (float64), the trainer's metrics on its train/test split, the loss history."""

    model: NNPEnsemble
    metrics: dict[str, dict[str, float]]
    history: list[dict[str, float]]


def load_ensemble(path: str | os.PathLike) -> tuple[NNPEnsemble, ModelSettings, dict[str, Any]]:
    """Trainable ensemble (float64) with the weights of a deployed model, its ModelSettings and metadata.

    Raises
    ------
    ModelFileError
        The file is not a deployed model, or was not written by the ANI trainer (no model settings in its
        metadata), so its weights cannot be trained further.
    """
    from biomol_nnp.models.export import load_model

    module, metadata = load_model(path)
    if metadata.get("architecture", "ani") != "ani" or "settings" not in metadata:
        raise ModelFileError(
            f"{str(path)!r} has no ANI model settings in its metadata (architecture "
            f"{metadata.get('architecture')!r}); warm-started retraining needs a model exported by "
            "`biomol-nnp train`"
        )
    model_settings = ModelSettings.model_validate(metadata["settings"])
    model = build_ensemble(model_settings, int(metadata["ensemble_size"])).double()
    try:
        model.load_state_dict(module.state_dict())
    except RuntimeError as err:
        raise ModelFileError(f"the weights in {str(path)!r} do not fit its model settings: {err}") from err
    model.eval()
    return model, model_settings, metadata


def finetune(
    model: NNPEnsemble,
    samples: Sequence[TrainingSample],
    model_settings: ModelSettings,
    settings: TrainSettings,
    epochs: int,
    learning_rate: float,
) -> FinetuneResult:
    """Continue training ``model`` on ``samples`` for ``epochs`` starting at ``learning_rate``.

    The trainer's loop does the work (:func:`~biomol_nnp.train.trainer.train_member` with the model as
    its warm start, all members together): its splits (whole test trajectories, random validation
    frames: :func:`~biomol_nnp.train.trainer.split_samples`), loss, batch size, dtype, learning-rate
    schedule and early stopping. The state with the best validation loss is kept, the starting weights
    included, so retraining never returns a model worse on the validation frames. The test split is drawn
    from the labels the loop started with only: every frame the loop labelled is trained on (a share of them,
    at random, validates), since the loop bought them for the model's weak spots.
    """
    train, validation, test = split_active(samples, settings)
    previous_onsets = model.repulsion_onset.clone()
    set_repulsion_onsets(model, train, model_settings.elements)
    model.repulsion_onset.copy_(torch.minimum(previous_onsets, model.repulsion_onset))
    refit_embedding_widths(model, train, model_settings.elements)  # the labelled solvated frames fix the kernel
    warm = settings.model_copy(update={"epochs": epochs, "learning_rate": learning_rate})
    started = time.perf_counter()
    result = train_member(train, validation, model_settings, warm, 0, start_model=model)
    model.load_state_dict(result.state)
    model = model.double().eval()
    metrics = {name: evaluate(model, split, torch.float64) for name, split in (("train", train), ("test", test))}
    metrics["training"] = {
        "seconds": time.perf_counter() - started,
        "epochs": float(epochs),
        "epochs_run": float(len(result.history)),
        "best_validation_loss": result.best_loss,
    }
    logger.info(
        "warm-started retraining: %d epochs on %d configurations, test %s",
        len(result.history),
        len(train),
        metrics["test"],
    )
    return FinetuneResult(model=model, metrics=metrics, history=result.history)


def split_active(
    samples: Sequence[TrainingSample], settings: TrainSettings
) -> tuple[list[TrainingSample], list[TrainingSample], list[TrainingSample]]:
    """(train, validation, test): the trainer's split of the starting labels; the loop's labels join train/validation.

    Without at least 2 starting labels the trainer's split of all labels is used.
    """
    base = [s for s in samples if s.source != ACTIVE_SOURCE]
    added = [s for s in samples if s.source == ACTIVE_SOURCE]
    if len(base) < 2 or not added:
        return split_samples(samples, settings)
    train, validation, test = split_samples(base, settings)
    if len(added) == 1:
        return train + added, validation, test
    more_train, more_validation = split_validation(added, settings.early_stopping_fraction, settings.seed)
    return train + more_train, validation + more_validation, test


def export_ensemble(
    model: NNPEnsemble,
    model_settings: ModelSettings,
    previous_metadata: dict[str, Any],
    samples: Sequence[TrainingSample],
    training_data_hash: str,
    path: str | os.PathLike,
) -> Path:
    """Write the retrained ensemble as a deployed model with the previous model's metadata, updated."""
    from biomol_nnp.models.export import build_metadata, save_model

    keep = {k: v for k, v in previous_metadata.items() if k not in _BUILT_KEYS}
    metadata = build_metadata(
        model_settings.elements,
        model_settings.radial_cutoff_nm,
        model_settings.embedding_cutoff_nm,
        len(model.members),
        previous_metadata["qm_method"],
        training_data_hash,
        embedding_switch_width_nm=model_settings.embedding_switch_width_nm,
        **{
            **keep,
            "training_total_charges": sorted({int(round(s.total_charge)) for s in samples}),
            "settings": model_settings.model_dump(mode="json"),
        },
    )
    return save_model(model, path, metadata)


_BUILT_KEYS = (
    "format",
    "format_version",
    "elements",
    "cutoff_nm",
    "embedding_cutoff_nm",
    "embedding_switch_width_nm",
    "units",
    "ensemble_size",
    "qm_method",
    "training_data_hash",
    "package_version",
)


def held_out_errors(module: Any, records: Sequence[LabeledConfiguration]) -> dict[str, float]:
    """Errors of a deployed model against QM labels *with* their point charges (e.g. xTB/MM).

    The model (vacuum + embedding energy, forces by autograd, ensemble mean) is compared with each record's
    ``embedded_energy`` and ``embedded_forces`` on the region atoms.

    Returns
    -------
    dict
        ``force_mae_kcal_per_mol_A``, ``force_mae_kj_per_mol_nm``, ``energy_mae_kcal_per_mol``,
        ``mean_max_force_std_kj_per_mol_nm`` (ensemble spread) and ``configurations``.
    """
    from biomol_nnp.simulate.uncertainty import member_energies_forces

    force_errors, energy_errors, spreads = [], [], []
    for record in records:
        energies, forces = member_energies_forces(
            module, record.positions, record.atomic_numbers, record.total_charge, record.mm_positions, record.mm_charges
        )
        region = forces[:, : len(record.atomic_numbers)]
        force_errors.append(np.abs(region.mean(0) - record.embedded_forces).ravel())
        energy_errors.append(abs(float(energies.mean()) - record.embedded_energy))
        spreads.append(float(np.sqrt(((region - region.mean(0)) ** 2).sum(-1).mean(0)).max()))
    if not records:
        return {}
    force_mae = float(np.concatenate(force_errors).mean())
    return {
        "force_mae_kj_per_mol_nm": force_mae,
        "force_mae_kcal_per_mol_A": force_mae * FORCE_KJ_NM_TO_KCAL_A,
        "energy_mae_kcal_per_mol": float(np.mean(energy_errors)) * KJ_TO_KCAL,
        "mean_max_force_std_kj_per_mol_nm": float(np.mean(spreads)),
        "configurations": float(len(records)),
    }
