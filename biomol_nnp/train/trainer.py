"""Training of an NNP ensemble on energies, forces, charges and embedding energies.

Every loss term is a mean squared error divided by the variance of its target in the training set,
so the weights in `TrainSettings` are dimensionless. Members share the descriptor computation
and are trained together (their losses are independent sums, so each member's gradient depends
only on its own parameters); they differ by initialisation.

>>> result = train_ensemble(samples, ModelSettings(), TrainSettings(epochs=5))  # doctest: +SKIP
>>> result.metrics["test"]["force_mae_kcal_per_mol_A"]  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from biomol_nnp.config import ModelSettings, TrainSettings
from biomol_nnp.exceptions import InputError
from biomol_nnp.models.ani import NNPEnsemble, build_ensemble
from biomol_nnp.train.data import Batch, TrainingSample, collate, fit_self_energies, split_by_trajectory
from biomol_nnp.units import ANGSTROM_TO_NM, KJ_TO_KCAL

logger = logging.getLogger(__name__)

FORCE_KJ_NM_TO_KCAL_A = KJ_TO_KCAL * ANGSTROM_TO_NM
"""kJ/mol/nm -> kcal/mol/A."""


@dataclass
class Predictions:
    """Member-mean predictions for a batch: energy [B] (without self energies), forces, charges, embedding."""

    energy: torch.Tensor
    forces: torch.Tensor
    charges: torch.Tensor
    embedding: torch.Tensor
    member_energy: torch.Tensor = field(repr=False)
    member_forces: torch.Tensor = field(repr=False)
    member_charges: torch.Tensor = field(repr=False)
    member_embedding: torch.Tensor = field(repr=False)


@dataclass
class TrainingResult:
    """The trained ensemble (float64, ready to export), held-out metrics and the loss history."""

    model: NNPEnsemble
    metrics: dict[str, dict[str, float]]
    history: list[dict[str, float]]
    test_samples: list[TrainingSample]
    train_samples: list[TrainingSample]


def predict(model: NNPEnsemble, batch: Batch, create_graph: bool) -> Predictions:
    """Energies, forces (by autograd, per member), charges and embedding energies for a batch."""
    positions = batch.positions.clone().requires_grad_(True)
    species = model.species(batch.atomic_numbers)
    vacuum, charges, embedding = model.member_terms(
        positions, species, batch.total_charge, batch.mm_positions, batch.mm_charges, torch.zeros(0, 3)
    )
    forces = []
    for member in range(vacuum.shape[0]):
        (gradient,) = torch.autograd.grad(vacuum[member].sum(), positions, create_graph=create_graph, retain_graph=True)
        forces.append(-gradient)
    member_forces = torch.stack(forces)
    return Predictions(
        energy=vacuum.mean(0),
        forces=member_forces.mean(0),
        charges=charges.mean(0),
        embedding=embedding.mean(0),
        member_energy=vacuum,
        member_forces=member_forces,
        member_charges=charges,
        member_embedding=embedding,
    )


class LossFunction:
    """Weighted, variance-normalised squared errors summed over members."""

    def __init__(
        self,
        samples: Sequence[TrainingSample],
        settings: TrainSettings,
        self_energies: np.ndarray,
        elements: Sequence[int],
    ) -> None:
        residual = residual_energies_per_atom(samples, self_energies, elements)
        forces = np.concatenate([s.forces.ravel() for s in samples])
        charges = np.concatenate([s.charges for s in samples])
        embedding = np.array([s.embedding_energy for s in samples if not np.isnan(s.embedding_energy)])
        # scales of each target; the floors keep a (nearly) constant target from dominating the loss
        self.energy_var = max(float(np.var(residual)), 1e-2)
        self.force_var = max(float(np.mean(forces**2)), 1.0)
        self.charge_var = max(float(np.var(charges)), 1e-4)
        self.embedding_var = max(float(np.var(embedding)) if len(embedding) else 1.0, 1.0)
        self.settings = settings
        self.last_terms: dict[str, float] = {}

    def __call__(self, model: NNPEnsemble, batch: Batch, create_graph: bool = True) -> torch.Tensor:
        out = predict(model, batch, create_graph)
        species = model.species(batch.atomic_numbers)
        real = (species >= 0).to(batch.positions.dtype)
        atoms = real.sum(-1)
        target = (batch.energy - model.reference_energy(species).to(torch.float64)).to(batch.positions.dtype)
        energy_error = ((out.member_energy - target) / atoms) ** 2
        force_error = ((out.member_forces - batch.forces) ** 2).sum(-1).sum(-1) / (3 * atoms)
        charge_error = ((out.member_charges - batch.charges) ** 2).sum(-1) / atoms
        mask = batch.has_embedding.to(batch.positions.dtype)
        embedding_error = (out.member_embedding - batch.embedding_energy) ** 2 * mask
        s = self.settings
        terms = {
            "energy": s.energy_weight * energy_error.mean() / self.energy_var,
            "force": s.force_weight * force_error.mean() / self.force_var,
            "charge": s.charge_weight * charge_error.mean() / self.charge_var,
            "embedding": s.embedding_weight * embedding_error.sum() / max(float(mask.sum()), 1.0) / self.embedding_var,
        }
        self.last_terms = {name: float(value.detach()) for name, value in terms.items()}
        loss = terms["energy"] + terms["force"] + terms["charge"] + terms["embedding"]
        return loss * out.member_energy.shape[0]


def evaluate(
    model: NNPEnsemble, samples: Sequence[TrainingSample], dtype: torch.dtype, batch_size: int = 32
) -> dict[str, float]:
    """Mean absolute errors of the ensemble mean on ``samples`` (kJ/mol and kcal/mol based units)."""
    if not samples:
        return {}
    sums = {"energy": 0.0, "force": 0.0, "charge": 0.0, "embedding": 0.0}
    counts = {"energy": 0, "force": 0, "charge": 0, "embedding": 0}
    for start in range(0, len(samples), batch_size):
        batch = collate(samples[start : start + batch_size], dtype)
        out = predict(model, batch, create_graph=False)
        species = model.species(batch.atomic_numbers)
        real = species >= 0
        energy = out.energy.detach().double() + model.reference_energy(species).double()
        sums["energy"] += float((energy - batch.energy).abs().sum())
        counts["energy"] += len(energy)
        sums["force"] += float((out.forces.detach() - batch.forces).abs()[real].sum())
        counts["force"] += int(real.sum()) * 3
        sums["charge"] += float((out.charges.detach() - batch.charges).abs()[real].sum())
        counts["charge"] += int(real.sum())
        emb = (out.embedding.detach() - batch.embedding_energy).abs()[batch.has_embedding]
        sums["embedding"] += float(emb.sum())
        counts["embedding"] += int(batch.has_embedding.sum())
    mae = {key: sums[key] / counts[key] if counts[key] else float("nan") for key in sums}
    return {
        "energy_mae_kcal_per_mol": mae["energy"] * KJ_TO_KCAL,
        "force_mae_kcal_per_mol_A": mae["force"] * FORCE_KJ_NM_TO_KCAL_A,
        "charge_mae_e": mae["charge"],
        "embedding_mae_kcal_per_mol": mae["embedding"] * KJ_TO_KCAL,
        "configurations": float(len(samples)),
    }


def residual_energies_per_atom(
    samples: Sequence[TrainingSample], self_energies: np.ndarray, elements: Sequence[int]
) -> np.ndarray:
    """(E - sum of element reference energies) / N for each sample [S], kJ/mol per atom."""
    index = {z: i for i, z in enumerate(sorted(elements))}
    return np.array(
        [
            (s.energy - sum(self_energies[index[int(z)]] for z in s.atomic_numbers)) / len(s.atomic_numbers)
            for s in samples
        ]
    )


def initialise(
    samples: Sequence[TrainingSample], model_settings: ModelSettings, settings: TrainSettings
) -> tuple[NNPEnsemble, np.ndarray]:
    """A seeded ensemble with self energies fitted by linear regression and an energy scale."""
    torch.manual_seed(settings.seed)
    model = build_ensemble(model_settings, settings.ensemble_size)
    self_energies = fit_self_energies(samples, model_settings.elements)
    model.self_energies.copy_(torch.from_numpy(self_energies))
    residual = residual_energies_per_atom(samples, self_energies, model_settings.elements)
    model.energy_scale.fill_(max(float(np.std(residual)), 1.0))
    standardise_features(model, samples)
    set_repulsion_onsets(model, samples, model_settings.elements)
    return model, self_energies


REPULSION_ONSET_FRACTION = 0.85
"""The core repulsion starts at this fraction of the shortest distance seen in training for each element pair."""

DEFAULT_REPULSION_ONSET_NM = 0.08
"""Onset for element pairs that never occur in the training data, nm."""


def set_repulsion_onsets(model: NNPEnsemble, samples: Sequence[TrainingSample], elements: Sequence[int]) -> None:
    """Core-repulsion onsets [S, S] nm from the shortest distance of each element pair in ``samples``."""
    index = {z: i for i, z in enumerate(sorted(elements))}
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


FEATURE_STD_FLOOR = 1e-2
"""Smallest feature spread used for standardisation (features are sums of O(1) terms)."""


def standardise_features(model: NNPEnsemble, samples: Sequence[TrainingSample]) -> None:
    """Set the descriptor shift and scale so each feature has zero mean and unit variance on real atoms."""
    with torch.no_grad():
        batch = collate(samples, torch.float64)
        species = model.species(batch.atomic_numbers)
        features = copy.deepcopy(model.descriptor).double()(batch.positions, species)[species >= 0]
        mean, std = features.mean(0), features.std(0)
        # a floor on the spread: features that barely vary in training (Gaussian tails, rare element pairs)
        # must not be magnified into huge inputs when a configuration leaves the training data
        floor = max(FEATURE_STD_FLOOR, 0.1 * float(std.median()))
        model.feature_mean.copy_(mean.float())
        model.feature_scale.copy_((1.0 / std.clamp(min=floor)).float())


def train_ensemble(
    samples: Sequence[TrainingSample],
    model_settings: ModelSettings,
    settings: TrainSettings,
    progress: Callable[[int, int, float], None] | None = None,
) -> TrainingResult:
    """Split by trajectory, train the ensemble, keep the best state on the held-out loss.

    ``progress(epoch, epochs, loss)`` is called after each epoch (the CLI passes a progress bar).
    """
    if len(samples) < 2:
        raise InputError(
            f"training needs at least 2 labelled configurations, got {len(samples)}; sample and label more frames"
        )
    dtype = torch.float32 if settings.dtype == "float32" else torch.float64
    train, test = split_by_trajectory(samples, settings.validation_fraction, settings.seed)
    if not test:
        raise InputError(
            "the trajectory split left no configuration for testing; sample more frames or "
            "trajectories, or raise validation_fraction"
        )
    model, _ = initialise(train, model_settings, settings)
    model = model.to(dtype)
    loss_fn = LossFunction(train, settings, model.self_energies.double().numpy(), model_settings.elements)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, settings.epochs, settings.learning_rate / 20)
    rng = np.random.default_rng(settings.seed)
    best_loss, best_state, history = float("inf"), copy.deepcopy(model.state_dict()), []
    test_batch = collate(test, dtype)
    started = time.perf_counter()
    for epoch in range(settings.epochs):
        model.train()
        order = rng.permutation(len(train))
        epoch_loss = 0.0
        for start in range(0, len(train), settings.batch_size):
            batch = collate([train[i] for i in order[start : start + settings.batch_size]], dtype)
            optimizer.zero_grad()
            loss = loss_fn(model, batch)
            loss.backward()
            optimizer.step()
            epoch_loss += float(loss.detach()) * len(batch.energy) / len(train)
        scheduler.step()
        test_loss = float(loss_fn(model, test_batch, create_graph=False).detach())
        history.append({"epoch": epoch + 1, "train_loss": epoch_loss, "test_loss": test_loss})
        if test_loss < best_loss:
            best_loss, best_state = test_loss, copy.deepcopy(model.state_dict())
        if progress is not None:
            progress(epoch + 1, settings.epochs, epoch_loss)
    model.load_state_dict(best_state)
    model = model.double()
    model.eval()
    metrics = {"train": evaluate(model, train, torch.float64), "test": evaluate(model, test, torch.float64)}
    metrics["training"] = {
        "seconds": time.perf_counter() - started,
        "epochs": float(settings.epochs),
        "best_test_loss": best_loss,
    }
    logger.info(
        "trained %d members on %d configurations (%d held out) in %.0f s; test %s",
        settings.ensemble_size,
        len(train),
        len(test),
        metrics["training"]["seconds"],
        metrics["test"],
    )
    return TrainingResult(
        model=model, metrics=metrics, history=history, test_samples=list(test), train_samples=list(train)
    )
