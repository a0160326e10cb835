"""Checks of a training set and its settings that run before any training.

Every problem raises with a message that names the record (its index, source, trajectory and frame)
or the setting, the value found, what is allowed and how to fix it, so a broken label or a settings
file that contradicts the data fails in seconds instead of after hours of training.

>>> validate_samples(samples, ModelSettings().elements, TrainSettings())  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from biomol_nnp.config import TrainSettings
from biomol_nnp.exceptions import ConfigError, InputError
from biomol_nnp.train.data import TrainingSample

logger = logging.getLogger(__name__)

CHARGE_SUM_TOLERANCE = 0.01
"""Largest accepted difference between the sum of a record's atomic charges and its total charge, e."""


def has_charges(sample: TrainingSample) -> bool:
    """Whether a record carries atomic-charge labels (one finite value per atom)."""
    return len(sample.charges) == len(sample.atomic_numbers) and bool(np.all(np.isfinite(sample.charges)))


def has_embedding(sample: TrainingSample) -> bool:
    """Whether a record carries an embedding-energy label (MM charges present, finite value)."""
    return len(sample.mm_charges) > 0 and bool(np.isfinite(sample.embedding_energy))


def validate_samples(samples: Sequence[TrainingSample], elements: Sequence[int], settings: TrainSettings) -> None:
    """Refuse a dataset that cannot be trained on with ``settings``.

    Raises
    ------
    InputError
        No samples; a record with inconsistent array shapes, an element outside ``elements``, a NaN or
        infinite value, a force component above ``settings.max_force_kj_per_mol_nm`` or charges that do
        not sum to its total charge.
    ConfigError
        Loss weights that contradict the data (charge or embedding-energy loss without such labels).
    """
    if not samples:
        raise InputError("the training set is empty; label configurations first (`biomol-nnp label`)")
    allowed = {int(z) for z in elements}
    for index, sample in enumerate(samples):
        check_record(sample, index, allowed, settings)
    check_weights(samples, settings)


def check_record(sample: TrainingSample, index: int, elements: set[int], settings: TrainSettings) -> None:
    """Shapes, elements, finite values, force bound and charge sum of one record."""
    name = sample.describe(index)
    n, m = len(sample.atomic_numbers), len(sample.mm_charges)
    for field, array, shape in (
        ("positions", sample.positions, (n, 3)),
        ("forces", sample.forces, (n, 3)),
        ("mm_positions", sample.mm_positions, (m, 3)),
        *([("embedding_forces", sample.embedding_forces, (n, 3))] if sample.embedding_forces is not None else []),
    ):
        if np.shape(array) != shape:
            raise InputError(f"{name}: {field} has shape {np.shape(array)}, expected {shape} for {n} atoms, {m} MM")
    unknown = sorted({int(z) for z in sample.atomic_numbers} - elements)
    if unknown:
        raise InputError(
            f"{name}: atomic number(s) {unknown} not among the model's elements {sorted(elements)}; add them to "
            "ModelSettings.elements or drop the record"
        )
    values = {
        "positions": sample.positions,
        "energy": np.asarray(sample.energy),
        "forces": sample.forces,
        "mm_positions": sample.mm_positions,
        "mm_charges": sample.mm_charges,
    }
    if len(sample.charges):
        values["charges"] = sample.charges
    if not np.isnan(sample.embedding_energy):
        values["embedding_energy"] = np.asarray(sample.embedding_energy)
    if sample.embedding_forces is not None:
        values["embedding_forces"] = sample.embedding_forces
    for field, array in values.items():
        if not np.all(np.isfinite(array)):
            raise InputError(
                f"{name}: {field} contains NaN or infinite values; relabel or drop the record (failed QM run?)"
            )
    check_force_bound(sample, name, settings.max_force_kj_per_mol_nm)
    if has_charges(sample) and abs(float(np.sum(sample.charges)) - sample.total_charge) > CHARGE_SUM_TOLERANCE:
        raise InputError(
            f"{name}: atomic charges sum to {float(np.sum(sample.charges)):.4f} e but the total charge is "
            f"{sample.total_charge:g} e (tolerance {CHARGE_SUM_TOLERANCE} e); the labels and the region's charge "
            "disagree: relabel with the right total charge"
        )


def check_force_bound(sample: TrainingSample, name: str, bound: float) -> None:
    """Refuse a force component above ``bound`` kJ/mol/nm (an absurd label)."""
    largest = np.abs(sample.forces)
    if largest.size and float(largest.max()) > bound:
        atom = int(np.unravel_index(int(np.argmax(largest)), largest.shape)[0])
        raise InputError(
            f"{name}: force on atom {atom} (Z={int(sample.atomic_numbers[atom])}) has a component of "
            f"{float(largest.max()):.4g} kJ/mol/nm, above TrainSettings.max_force_kj_per_mol_nm = {bound:g}; "
            "the geometry is likely broken (overlapping atoms): drop the record, or raise the bound if it is real"
        )


def check_weights(samples: Sequence[TrainingSample], settings: TrainSettings) -> None:
    """Loss weights that need labels the data does not have."""
    if settings.energy_weight == 0 and settings.force_weight == 0:
        raise ConfigError(
            "energy_weight and force_weight are both 0, so the vacuum energy is not trained; set at least one > 0"
        )
    if settings.charge_weight > 0:
        missing = [i for i, s in enumerate(samples) if not has_charges(s)]
        if missing:
            raise ConfigError(
                f"charge_weight = {settings.charge_weight:g} but {samples[missing[0]].describe(missing[0])} "
                f"(and {len(missing) - 1} more of {len(samples)}) has no atomic-charge labels; set charge_weight: 0 "
                "or label with a method that returns charges"
            )
    if settings.embedding_weight > 0 and not any(has_embedding(s) for s in samples):
        raise ConfigError(
            f"embedding_weight = {settings.embedding_weight:g} but none of the {len(samples)} records has an "
            "embedding-energy label (no MM point charges); set embedding_weight: 0 or label configurations with "
            "their point charges (solvated frames)"
        )


def validate_split(
    train: Sequence[TrainingSample], validation: Sequence[TrainingSample], test: Sequence[TrainingSample]
) -> None:
    """Refuse an empty training, validation or test split, naming the setting that decides it."""
    for name, split, setting in (
        ("training", train, "validation_fraction"),
        ("validation", validation, "early_stopping_fraction"),
        ("test", test, "validation_fraction"),
    ):
        if not split:
            raise InputError(
                f"the {name} split is empty; sample more frames or trajectories (whole trajectories are held out "
                f"for testing), or change TrainSettings.{setting}"
            )
    if any(has_embedding(s) for s in test) and not any(has_embedding(s) for s in train):
        logger.warning("only held-out trajectories carry embedding-energy labels; the embedding head is untrained")
