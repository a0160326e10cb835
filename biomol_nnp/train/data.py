"""Training samples, trajectory-wise splits and padded batches.

A batch pads regions to the largest atom count with atomic number 0 and MM environments to the
largest charge count with zero charges, so padding contributes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from biomol_nnp.exceptions import InputError
from biomol_nnp.qm.labels import LabelStore


@dataclass(frozen=True)
class TrainingSample:
    """One labelled configuration (OpenMM units).

    atomic_numbers [N]; positions [N, 3] nm; energy kJ/mol and forces [N, 3] kJ/mol/nm of the region
    in vacuum; charges [N] e in vacuum; mm_positions [M, 3] nm and mm_charges [M] e of the environment;
    embedding_energy kJ/mol (QM with the MM charges minus QM in vacuum), NaN when M = 0;
    embedding_forces [N, 3] kJ/mol/nm, the same difference for the forces on the region atoms
    (minus the gradient of the embedding energy), None when M = 0 or not labelled.
    """

    atomic_numbers: np.ndarray
    positions: np.ndarray
    total_charge: float
    energy: float
    forces: np.ndarray
    charges: np.ndarray
    mm_positions: np.ndarray
    mm_charges: np.ndarray
    embedding_energy: float
    trajectory_id: int
    source: str
    frame: int = -1
    embedding_forces: np.ndarray | None = None

    def describe(self, index: int) -> str:
        """How error messages name this sample: its position in the dataset and its provenance."""
        return f"record {index} (source {self.source!r}, trajectory {self.trajectory_id}, frame {self.frame})"


@dataclass
class Batch:
    """Padded tensors of several samples."""

    atomic_numbers: torch.Tensor  # [B, N]
    positions: torch.Tensor  # [B, N, 3]
    total_charge: torch.Tensor  # [B]
    energy: torch.Tensor  # [B], float64
    forces: torch.Tensor  # [B, N, 3]
    charges: torch.Tensor  # [B, N]
    mm_positions: torch.Tensor  # [B, M, 3]
    mm_charges: torch.Tensor  # [B, M]
    embedding_energy: torch.Tensor  # [B]
    has_embedding: torch.Tensor  # [B] bool
    embedding_forces: torch.Tensor  # [B, N, 3], zero where not labelled
    has_embedding_forces: torch.Tensor  # [B] bool


def collate(samples: Sequence[TrainingSample], dtype: torch.dtype) -> Batch:
    """Pad and stack samples into one batch."""
    size = max(len(s.atomic_numbers) for s in samples)
    mm_size = max(len(s.mm_charges) for s in samples)

    def pad(array: np.ndarray, length: int, width: tuple[int, ...] = ()) -> np.ndarray:
        out = np.zeros((length, *width), dtype=array.dtype)
        out[: len(array)] = array
        return out

    def stack(name: str, length: int, width: tuple[int, ...] = ()) -> torch.Tensor:
        return torch.from_numpy(np.stack([pad(np.asarray(getattr(s, name)), length, width) for s in samples]))

    embedding = torch.tensor([s.embedding_energy for s in samples], dtype=dtype)
    embedding_forces = [np.zeros((size, 3)) if s.embedding_forces is None else s.embedding_forces for s in samples]
    return Batch(
        atomic_numbers=stack("atomic_numbers", size).long(),
        positions=stack("positions", size, (3,)).to(dtype),
        total_charge=torch.tensor([s.total_charge for s in samples], dtype=dtype),
        energy=torch.tensor([s.energy for s in samples], dtype=torch.float64),
        forces=stack("forces", size, (3,)).to(dtype),
        charges=stack("charges", size).to(dtype),
        mm_positions=stack("mm_positions", mm_size, (3,)).to(dtype),
        mm_charges=stack("mm_charges", mm_size).to(dtype),
        embedding_energy=torch.nan_to_num(embedding),
        has_embedding=~torch.isnan(embedding),
        embedding_forces=torch.from_numpy(np.stack([pad(f, size, (3,)) for f in embedding_forces])).to(dtype),
        has_embedding_forces=torch.tensor([s.embedding_forces is not None for s in samples]),
    )


def epoch_batches(samples: Sequence[TrainingSample], batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled index batches of one epoch, each drawn from frames of one kind: with MM charges or in vacuum.

    Keeping vacuum frames apart means their batches carry no padding charges (a solvated frame has about
    a thousand), which is most of the cost of a mixed batch.
    """
    embedded = np.array([len(s.mm_charges) > 0 for s in samples], dtype=bool)
    batches = []
    for group in (np.flatnonzero(embedded), np.flatnonzero(~embedded)):
        group = rng.permutation(group)
        batches += [group[start : start + batch_size] for start in range(0, len(group), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def split_by_trajectory(
    samples: Sequence[TrainingSample], test_fraction: float, seed: int = 0
) -> tuple[list[TrainingSample], list[TrainingSample]]:
    """Hold out whole trajectories (per source) so the test set is not correlated with training frames.

    From each source (for example solvated and vacuum MD) ``ceil(test_fraction * n)`` of its ``n``
    trajectories are held out, at least one when a source has two or more. A source with a single
    trajectory goes entirely to training; if no source has two trajectories the last
    ``test_fraction`` of frames of each trajectory is held out instead (a time split).
    """
    if not samples:
        raise InputError("no labelled samples to split; label configurations first (`biomol-nnp label`)")
    rng = np.random.default_rng(seed)
    by_source: dict[str, list[int]] = {}
    for sample in samples:
        ids = by_source.setdefault(sample.source, [])
        if sample.trajectory_id not in ids:
            ids.append(sample.trajectory_id)
    held_out: set[tuple[str, int]] = set()
    for source, ids in by_source.items():
        if len(ids) >= 2:
            count = min(len(ids) - 1, max(1, math.ceil(test_fraction * len(ids))))
            held_out.update((source, int(i)) for i in rng.choice(ids, size=count, replace=False))
    if held_out:
        test = [s for s in samples if (s.source, s.trajectory_id) in held_out]
        train = [s for s in samples if (s.source, s.trajectory_id) not in held_out]
        return train, test
    train, test = [], []
    groups: dict[tuple[str, int], list[TrainingSample]] = {}
    for sample in samples:
        groups.setdefault((sample.source, sample.trajectory_id), []).append(sample)
    for group in groups.values():
        cut = max(1, int(round(len(group) * (1.0 - test_fraction))))
        train += group[:cut]
        test += group[cut:]
    return train, test


def split_validation(
    samples: Sequence[TrainingSample], fraction: float, seed: int = 0
) -> tuple[list[TrainingSample], list[TrainingSample]]:
    """Random frames (at least one) set aside from the training set for early stopping: (train, validation)."""
    if len(samples) < 2:
        raise InputError(
            f"the training split holds {len(samples)} configuration(s); at least 2 are needed (one to train on, "
            "one to validate); label more frames or lower validation_fraction"
        )
    count = min(len(samples) - 1, max(1, round(fraction * len(samples))))
    chosen = set(np.random.default_rng(seed).choice(len(samples), size=count, replace=False).tolist())
    train = [s for i, s in enumerate(samples) if i not in chosen]
    return train, [s for i, s in enumerate(samples) if i in chosen]


def samples_from_store(store: LabelStore) -> list[TrainingSample]:
    """Training samples from the ok records of a labels store (embedding energy NaN without point charges)."""
    samples = []
    for record in store.load_training_arrays():
        samples.append(
            TrainingSample(
                atomic_numbers=record.atomic_numbers,
                positions=record.positions,
                total_charge=float(record.total_charge),
                energy=float(record.energy),
                forces=record.forces,
                charges=record.charges,
                mm_positions=record.mm_positions,
                mm_charges=record.mm_charges,
                embedding_energy=float(record.embedding_energy) if record.has_point_charges else float("nan"),
                embedding_forces=record.embedded_forces - record.forces if record.has_point_charges else None,
                trajectory_id=int(record.trajectory_id),
                source=str(record.source),
                frame=int(record.frame),
            )
        )
    if not samples:
        raise InputError(
            f"{store.path} holds no successfully labelled configuration; check its failure reasons "
            "(`LabelStore.failure_reasons()`) and label again"
        )
    return samples
