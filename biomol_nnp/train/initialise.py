"""Data-dependent initialisation of a model before training, for every architecture.

``initialise(samples, model_settings, settings) -> (model, self_energies)`` builds a seeded ensemble
(`biomol_nnp.models.registry.build_model`) and sets its shared buffers from the training samples:

- per-element reference (self) energies by a ridge-regularised linear regression of the vacuum energies
  on element counts (`fit_self_energies`);
- ``energy_scale``: the spread of the per-atom residual energy, so network outputs are O(1);
- core-repulsion onsets below the shortest distance of each element pair seen in training;
- the embedding kernel's softening widths per region element and MM-charge sign, by nonlinear least squares of
  the labelled embedding energies on the labelled vacuum charges (`fit_embedding_widths`);
- what the architecture needs: ANI descriptor standardisation, PaiNN message normalisation.

>>> model, self_energies = initialise(train_samples, ModelSettings(), TrainSettings())  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.optimize
import torch

from biomol_nnp.config import ModelSettings, TrainSettings
from biomol_nnp.exceptions import InputError
from biomol_nnp.models.ani import NNPEnsemble
from biomol_nnp.models.ensemble import EnsembleModel
from biomol_nnp.models.painn import PaiNNEnsemble
from biomol_nnp.models.registry import build_model
from biomol_nnp.train.data import TrainingSample, collate
from biomol_nnp.units import ELECTROSTATIC_CONSTANT

logger = logging.getLogger(__name__)

SELF_ENERGY_RIDGE = 1e-6
"""Ridge strength of the self-energy regression, relative to the mean squared element count."""

REPULSION_ONSET_FRACTION = 0.85
"""The core repulsion starts at this fraction of the shortest distance seen in training for each element pair."""

DEFAULT_REPULSION_ONSET_NM = 0.08
"""Onset for element pairs that never occur in the training data, nm."""

FEATURE_STD_FLOOR = 1e-2
"""Smallest feature spread used for standardisation (features are sums of O(1) terms)."""

ENERGY_SCALE_FLOOR = 1.0
"""Smallest energy scale, kJ/mol per atom (a nearly constant residual must not shrink the outputs)."""


def element_positions(elements: Sequence[int]) -> dict[int, int]:
    """Atomic number -> index among the model's elements (sorted), the order of every per-element buffer."""
    return {z: i for i, z in enumerate(sorted(elements))}


def element_counts(samples: Sequence[TrainingSample], elements: Sequence[int]) -> np.ndarray:
    """Counts [S, E] of each model element (sorted) in each sample; unknown elements raise InputError."""
    index = element_positions(elements)
    counts = np.zeros((len(samples), len(index)))
    for row, sample in enumerate(samples):
        for z in sample.atomic_numbers:
            if int(z) not in index:
                raise InputError(
                    f"atomic number {int(z)} in sample {row} (source {sample.source!r}, trajectory "
                    f"{sample.trajectory_id}) is not among the model elements {sorted(elements)}; "
                    "add it to ModelSettings.elements"
                )
            counts[row, index[int(z)]] += 1
    return counts


def fit_self_energies(
    samples: Sequence[TrainingSample], elements: Sequence[int], ridge: float = SELF_ENERGY_RIDGE
) -> np.ndarray:
    """Per-element reference energies [E] kJ/mol: ridge regression of vacuum energies on element counts.

    Least squares on counts is rank deficient when the data hold fewer independent compositions than
    elements (a single molecule: one composition). The ridge term pulls every reference energy toward one
    fixed prior, the mean energy per atom of the data, with strength ``ridge`` times the mean squared count:
    directions the data determine are fitted (to a relative bias of about ``ridge``), directions they
    cannot determine take the prior, so the solution is unique and does not depend on round-off. For a
    single composition every element gets the mean energy per atom, and the energies are fitted exactly.
    """
    counts = element_counts(samples, elements)
    energies = np.array([s.energy for s in samples], dtype=np.float64)
    prior = np.full(counts.shape[1], energies.sum() / counts.sum())
    normal = counts.T @ counts
    strength = ridge * max(float(np.trace(normal)) / counts.shape[1], 1.0)
    rhs = counts.T @ (energies - counts @ prior)
    return prior + np.linalg.solve(normal + strength * np.eye(counts.shape[1]), rhs)


def residual_energies_per_atom(
    samples: Sequence[TrainingSample], self_energies: np.ndarray, elements: Sequence[int]
) -> np.ndarray:
    """(E - sum of element reference energies) / N for each sample [S], kJ/mol per atom."""
    counts = element_counts(samples, elements)
    energies = np.array([s.energy for s in samples], dtype=np.float64)
    return (energies - counts @ self_energies) / counts.sum(1)


def set_repulsion_onsets(model: EnsembleModel, samples: Sequence[TrainingSample], elements: Sequence[int]) -> None:
    """Core-repulsion onsets [S, S] nm from the shortest distance of each element pair in ``samples``."""
    index = element_positions(elements)
    size = len(index)
    shortest = np.full((size, size), np.inf)
    for sample in samples:
        species = np.array([index[int(z)] for z in sample.atomic_numbers])
        distances = np.linalg.norm(sample.positions[:, None] - sample.positions[None], axis=-1)
        np.fill_diagonal(distances, np.inf)
        for a in range(size):
            for b in range(size):
                block = distances[np.ix_(species == a, species == b)]
                if block.size:
                    shortest[a, b] = min(shortest[a, b], block.min())
    onset = np.where(np.isfinite(shortest), REPULSION_ONSET_FRACTION * shortest, DEFAULT_REPULSION_ONSET_NM)
    model.repulsion_onset.copy_(torch.from_numpy(onset))


WIDTH_FIT_PAIRS = 4_000_000
"""Most region-MM pairs used by the embedding-width fit (frames are taken evenly spaced up to this)."""

WIDTH_FIT_MIN_FRAMES = 8
"""Fewer frames with point charges than this: the widths keep their default."""

WIDTH_BOUNDS_NM = (0.02, 0.5)
"""Range of fitted softening widths, nm."""


@dataclass
class WidthFitData:
    """Region-MM pairs of the frames used by the width fit, flattened over frames.

    ``coupling`` k_e q_a q_b [P] kJ/mol nm, ``squared`` r^2 [P] nm^2, ``group`` (element, sign) index [P],
    ``frame`` [P] and the labelled embedding energies [F] kJ/mol.
    """

    coupling: np.ndarray
    squared: np.ndarray
    group: np.ndarray
    frame: np.ndarray
    energies: np.ndarray


def width_fit_data(samples: Sequence[TrainingSample], elements: Sequence[int]) -> WidthFitData | None:
    """The pairs of evenly spaced embedded frames with finite labels, or None when fewer than the minimum."""
    index = element_positions(elements)
    usable = [
        s
        for s in samples
        if len(s.mm_charges) > 0 and np.isfinite(s.embedding_energy) and np.all(np.isfinite(s.charges))
    ]
    if len(usable) < WIDTH_FIT_MIN_FRAMES:
        return None
    per_frame = max(len(s.positions) * len(s.mm_charges) for s in usable)
    count = max(WIDTH_FIT_MIN_FRAMES, min(len(usable), WIDTH_FIT_PAIRS // per_frame))
    chosen = [usable[i] for i in np.unique(np.linspace(0, len(usable) - 1, count).round().astype(int))]
    parts: list[tuple[np.ndarray, ...]] = []
    for row, sample in enumerate(chosen):
        species = np.array([index[int(z)] for z in sample.atomic_numbers])
        vectors = sample.positions[:, None] - sample.mm_positions[None]
        group = 2 * species[:, None] + (sample.mm_charges < 0)[None]
        coupling = ELECTROSTATIC_CONSTANT * sample.charges[:, None] * sample.mm_charges[None]
        squared = (vectors * vectors).sum(-1)
        parts.append((coupling.ravel(), squared.ravel(), group.ravel(), np.full(squared.size, row)))
    coupling, squared, group, frame = (np.concatenate(column) for column in zip(*parts, strict=True))
    energies = np.array([s.embedding_energy for s in chosen])
    return WidthFitData(coupling, squared, group, frame, energies)


def fit_embedding_widths(samples: Sequence[TrainingSample], elements: Sequence[int], start: np.ndarray) -> np.ndarray:
    """Softening widths [E, 2] nm of the embedding kernel, per region element and MM-charge sign.

    Least squares of sum_ab k_e q_a q_b / sqrt(r_ab^2 + w^2) against the labelled embedding energies, with the
    labelled vacuum charges q_a: the width at which the QM charges see the MM charges. GFN2-xTB damps its
    coupling to point charges with the Klopman-Ohno form, w = 1 / mean hardness, about 0.1 nm, so a bare or
    barely damped Coulomb kernel misplaces the energy of every hydrogen-bonded water by kJ/mol. The network's
    charges and polarisabilities then learn the rest. The fit starts from ``start`` [E, 2] nm (defaults or a
    trained model's widths); element-sign groups absent from the data keep their start value.
    """
    widths = np.array(start, dtype=np.float64)
    data = width_fit_data(samples, elements)
    if data is None:
        return widths
    present = np.unique(data.group)
    position = np.searchsorted(present, data.group)
    frames = len(data.energies)

    def softened(w: np.ndarray) -> np.ndarray:
        return 1.0 / np.sqrt(data.squared + w[position] ** 2)

    def residuals(w: np.ndarray) -> np.ndarray:
        return np.bincount(data.frame, data.coupling * softened(w), frames) - data.energies

    def jacobian(w: np.ndarray) -> np.ndarray:
        slope = -data.coupling * w[position] * softened(w) ** 3
        flat = np.bincount(data.frame * len(present) + position, slope, frames * len(present))
        return flat.reshape(frames, len(present))

    initial = np.clip(widths.reshape(-1)[present], *WIDTH_BOUNDS_NM)
    fit = scipy.optimize.least_squares(residuals, initial, jac=jacobian, bounds=WIDTH_BOUNDS_NM, method="trf")
    widths.reshape(-1)[present] = fit.x
    logger.info(
        "embedding widths fitted on %d frames: mean |error| %.2f kJ/mol with the labelled charges (%.2f at the start)",
        frames,
        float(np.abs(fit.fun).mean()),
        float(np.abs(residuals(initial)).mean()),
    )
    return widths


def refit_embedding_widths(model: EnsembleModel, samples: Sequence[TrainingSample], elements: Sequence[int]) -> None:
    """Fit the model's embedding-kernel widths to ``samples``, starting from its current ones."""
    start = model.kernel.widths.double().numpy()
    model.kernel.widths.copy_(torch.from_numpy(fit_embedding_widths(samples, elements, start)))


FEATURE_CHUNK = 64
"""Configurations per descriptor evaluation when standardising (bounds the memory of large datasets)."""


def standardise_features(model: EnsembleModel, samples: Sequence[TrainingSample]) -> None:
    """ANI: set the descriptor shift and scale so each feature has zero mean and unit variance on real atoms."""
    assert isinstance(model, NNPEnsemble)
    descriptor = copy.deepcopy(model.descriptor).double()
    chunks = []
    with torch.no_grad():
        for start in range(0, len(samples), FEATURE_CHUNK):
            batch = collate(samples[start : start + FEATURE_CHUNK], torch.float64)
            species = model.species(batch.atomic_numbers)
            chunks.append(descriptor(batch.positions, species)[species >= 0])
        features = torch.cat(chunks)
        mean, std = features.mean(0), features.std(0)
        # a floor on the spread: features that barely vary in training (Gaussian tails, rare element pairs)
        # must not be magnified into huge inputs when a configuration leaves the training data
        floor = max(FEATURE_STD_FLOOR, 0.1 * float(std.median()))
        model.feature_mean.copy_(mean.float())
        model.feature_scale.copy_((1.0 / std.clamp(min=floor)).float())


def mean_neighbours(samples: Sequence[TrainingSample], cutoff: float) -> float:
    """Mean number of neighbours closer than ``cutoff`` (nm) per atom in ``samples``."""
    pairs = atoms = 0
    for sample in samples:
        distances = np.linalg.norm(sample.positions[:, None] - sample.positions[None], axis=-1)
        pairs += int(np.sum(distances < cutoff)) - len(distances)
        atoms += len(distances)
    return pairs / max(atoms, 1)


def normalise_messages(model: EnsembleModel, samples: Sequence[TrainingSample]) -> None:
    """PaiNN: messages are divided by the mean neighbour count of the training data (at least 1)."""
    assert isinstance(model, PaiNNEnsemble)
    model.message_scale.fill_(1.0 / max(mean_neighbours(samples, model.cutoff), 1.0))


ARCHITECTURE_STEPS: dict[str, Callable[[EnsembleModel, Sequence[TrainingSample]], None]] = {
    "ani": standardise_features,
    "painn": normalise_messages,
}
"""What each architecture sets from the data besides self energies, energy scale and repulsion."""


def initialise(
    samples: Sequence[TrainingSample], model_settings: ModelSettings, settings: TrainSettings
) -> tuple[EnsembleModel, np.ndarray]:
    """A seeded ensemble (float32 buffers) with its data-dependent buffers set; returns it and the self energies."""
    if not samples:
        raise InputError("initialise needs at least one training sample; label configurations first")
    torch.manual_seed(settings.seed)
    model = build_model(model_settings, settings.ensemble_size)
    self_energies = fit_self_energies(samples, model_settings.elements)
    model.self_energies.copy_(torch.from_numpy(self_energies))
    residual = residual_energies_per_atom(samples, self_energies, model_settings.elements)
    model.energy_scale.fill_(max(float(np.std(residual)), ENERGY_SCALE_FLOOR))
    set_repulsion_onsets(model, samples, model_settings.elements)
    refit_embedding_widths(model, samples, model_settings.elements)
    ARCHITECTURE_STEPS[model_settings.architecture](model, samples)
    return model, self_energies
