"""Training of an NNP ensemble on energies, forces, charges and embedding energies.

Every loss term is a mean squared error divided by the variance of its target in the training set,
so the weights in `TrainSettings` are dimensionless. Each member is trained alone (its own seed,
its own early stopping on a validation set of training frames, its own checkpoints), in this process
or as a Dask task, then the members are merged into one ensemble that shares the descriptor
computation. The test set is whole trajectories held out and only measured.

>>> result = train_ensemble(samples, ModelSettings(), TrainSettings(epochs=5))  # doctest: +SKIP
>>> result.metrics["test"]["force_mae_kcal_per_mol_A"]  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from biomol_nnp.config import ModelSettings, TrainSettings
from biomol_nnp.exceptions import InputError
from biomol_nnp.models.ensemble import EnsembleModel
from biomol_nnp.train.checkpoints import (
    checkpoint_path,
    fingerprint,
    load_checkpoint,
    numpy_rng_state,
    restore_numpy_rng,
    samples_hash,
    save_checkpoint,
    state_hash,
)
from biomol_nnp.train.data import (
    Batch,
    TrainingSample,
    collate,
    epoch_batches,
    split_by_trajectory,
    split_validation,
)
from biomol_nnp.train.initialise import initialise, residual_energies_per_atom
from biomol_nnp.train.validation import check_weights, validate_samples, validate_split
from biomol_nnp.units import ANGSTROM_TO_NM, KJ_TO_KCAL

logger = logging.getLogger(__name__)

FORCE_KJ_NM_TO_KCAL_A = KJ_TO_KCAL * ANGSTROM_TO_NM
"""kJ/mol/nm -> kcal/mol/A."""


@dataclass
class Predictions:
    """Member-mean predictions for a batch: energy [B] (without self energies), forces, charges, embedding.

    ``embedding_forces`` (minus the gradient of the embedding energy on the region atoms) is computed
    only when asked for; it is then zero for frames without MM charges.
    """

    energy: torch.Tensor
    forces: torch.Tensor
    charges: torch.Tensor
    embedding: torch.Tensor
    member_energy: torch.Tensor = field(repr=False)
    member_forces: torch.Tensor = field(repr=False)
    member_charges: torch.Tensor = field(repr=False)
    member_embedding: torch.Tensor = field(repr=False)
    member_embedding_forces: torch.Tensor | None = field(default=None, repr=False)


@dataclass
class TrainingResult:
    """The trained ensemble (float64, ready to export), held-out metrics and the loss history."""

    model: EnsembleModel
    metrics: dict[str, Any]
    histories: list[list[dict[str, float]]]
    test_samples: list[TrainingSample]
    train_samples: list[TrainingSample]
    validation_samples: list[TrainingSample] = field(default_factory=list)


def predict(model: EnsembleModel, batch: Batch, create_graph: bool, embedding_forces: bool = False) -> Predictions:
    """Energies, forces (by autograd, per member), charges and embedding energies (and forces) for a batch."""
    positions = batch.positions.clone().requires_grad_(True)
    species = model.species(batch.atomic_numbers)
    vacuum, charges, embedding = model.member_terms(
        positions, species, batch.total_charge, batch.mm_positions, batch.mm_charges, torch.zeros(0, 3)
    )
    member_forces = _member_forces(vacuum, positions, create_graph)
    member_embedding_forces = None
    if embedding_forces:
        member_embedding_forces = _member_forces(embedding, positions, create_graph)
    return Predictions(
        energy=vacuum.mean(0),
        forces=member_forces.mean(0),
        charges=charges.mean(0),
        embedding=embedding.mean(0),
        member_energy=vacuum,
        member_forces=member_forces,
        member_charges=charges,
        member_embedding=embedding,
        member_embedding_forces=member_embedding_forces,
    )


def _member_forces(energies: torch.Tensor, positions: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """Minus the gradient of each member's energies [K, B] w.r.t. ``positions``: [K, B, N, 3]."""
    if not energies.requires_grad:  # e.g. the embedding of a batch without MM charges
        return torch.zeros((energies.shape[0], *positions.shape), dtype=positions.dtype)
    forces = []
    for member in range(energies.shape[0]):
        (gradient,) = torch.autograd.grad(
            energies[member].sum(), positions, create_graph=create_graph, retain_graph=True, allow_unused=True
        )
        forces.append(torch.zeros_like(positions) if gradient is None else -gradient)
    return torch.stack(forces)


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
        embedding_forces = [s.embedding_forces.ravel() for s in samples if s.embedding_forces is not None]
        squared = float(np.mean(np.concatenate(embedding_forces) ** 2)) if embedding_forces else 1.0
        self.embedding_force_var = max(squared, 1.0)
        self.settings = settings
        self.last_terms: dict[str, float] = {}

    def __call__(self, model: EnsembleModel, batch: Batch, create_graph: bool = True) -> torch.Tensor:
        with_embedding_forces = self.settings.embedding_force_weight > 0 and bool(batch.has_embedding_forces.any())
        out = predict(model, batch, create_graph, embedding_forces=with_embedding_forces)
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
        embedding_force_term = torch.zeros((), dtype=batch.positions.dtype)
        if out.member_embedding_forces is not None:
            labelled = batch.has_embedding_forces.to(batch.positions.dtype)
            error = ((out.member_embedding_forces - batch.embedding_forces) ** 2).sum(-1).sum(-1) / (3 * atoms)
            mean_error = (error * labelled).sum() / (labelled.sum() * error.shape[0])
            embedding_force_term = mean_error / self.embedding_force_var
        terms = {
            "energy": s.energy_weight * energy_error.mean() / self.energy_var,
            "force": s.force_weight * force_error.mean() / self.force_var,
            "charge": s.charge_weight * charge_error.mean() / self.charge_var,
            "embedding": s.embedding_weight * embedding_error.sum() / max(float(mask.sum()), 1.0) / self.embedding_var,
            "embedding_force": s.embedding_force_weight * embedding_force_term,
        }
        self.last_terms = {name: float(value.detach()) for name, value in terms.items()}
        loss = terms["energy"] + terms["force"] + terms["charge"] + terms["embedding"] + terms["embedding_force"]
        return loss * out.member_energy.shape[0]


def evaluate(
    model: EnsembleModel, samples: Sequence[TrainingSample], dtype: torch.dtype, batch_size: int = 32
) -> dict[str, float]:
    """Mean absolute errors of the ensemble mean on ``samples`` (kJ/mol and kcal/mol based units)."""
    return evaluate_all(model, samples, dtype, batch_size)[0]


def evaluate_all(
    model: EnsembleModel, samples: Sequence[TrainingSample], dtype: torch.dtype, batch_size: int = 32
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Mean absolute errors of the ensemble mean and of each member on ``samples``.

    Energies in kcal/mol, forces in kcal/mol/A, charges in e; NaN where ``samples`` hold no such label.
    """
    if not samples:
        return {}, []
    members = len(model.get_submodule("members"))  # type: ignore[arg-type]  # a ModuleList in every architecture
    # row 0: the ensemble mean, row 1 + k: member k
    sums = {key: np.zeros(members + 1) for key in ("energy", "force", "charge", "embedding", "embedded_force")}
    counts = dict.fromkeys(sums, 0)
    for start in range(0, len(samples), batch_size):
        batch = collate(samples[start : start + batch_size], dtype)
        out = predict(model, batch, create_graph=False, embedding_forces=True)
        species = model.species(batch.atomic_numbers)
        real = species >= 0
        reference = model.reference_energy(species).double()
        assert out.member_embedding_forces is not None  # asked for above
        embedded_forces = out.member_forces + out.member_embedding_forces
        rows = {
            "energy": with_mean(out.member_energy).double() + reference,
            "force": with_mean(out.member_forces),
            "charge": with_mean(out.member_charges),
            "embedding": with_mean(out.member_embedding),
            "embedded_force": with_mean(embedded_forces),
        }
        targets = {
            "energy": (batch.energy, torch.ones_like(batch.energy, dtype=torch.bool)),
            "force": (batch.forces, real),
            "charge": (batch.charges, real),
            "embedding": (batch.embedding_energy, batch.has_embedding),
            "embedded_force": (batch.forces + batch.embedding_forces, real & batch.has_embedding_forces.unsqueeze(-1)),
        }
        for key, (target, mask) in targets.items():
            errors = (rows[key] - target.to(rows[key].dtype)).abs()[:, mask]
            sums[key] += errors.reshape(members + 1, -1).sum(-1).numpy()
            counts[key] += errors[0].numel()
    units = {
        "energy_mae_kcal_per_mol": ("energy", KJ_TO_KCAL),
        "force_mae_kcal_per_mol_A": ("force", FORCE_KJ_NM_TO_KCAL_A),
        "charge_mae_e": ("charge", 1.0),
        "embedding_mae_kcal_per_mol": ("embedding", KJ_TO_KCAL),
        "embedded_force_mae_kcal_per_mol_A": ("embedded_force", FORCE_KJ_NM_TO_KCAL_A),
    }
    table = [
        {
            name: float(sums[key][row] / counts[key] * factor) if counts[key] else float("nan")
            for name, (key, factor) in units.items()
        }
        | {"configurations": float(len(samples))}
        for row in range(members + 1)
    ]
    return table[0], table[1:]


def with_mean(members: torch.Tensor) -> torch.Tensor:
    """Rows [K + 1, ...]: the ensemble mean of the members' values [K, ...], then each member (detached)."""
    return torch.cat([members.mean(0, keepdim=True), members]).detach()


VALIDATION_BATCH = 32
"""Configurations per batch of the validation loss (bounds its memory)."""


ProgressCallback = Callable[[int, int, float], None]
"""``progress(done, total, loss)``: member-epochs done, member-epochs planned, latest training loss."""


@dataclass
class MemberResult:
    """One trained member: its best ``state_dict`` (a one-member model) and how it got there."""

    member: int
    state: dict[str, torch.Tensor]
    history: list[dict[str, float]]
    best_loss: float
    seconds: float
    stopped_early: bool


def member_settings(settings: TrainSettings, member: int) -> TrainSettings:
    """Settings of member ``member`` trained alone: one member, seed ``settings.seed + member``."""
    return settings.model_copy(update={"ensemble_size": 1, "seed": settings.seed + member})


def make_optimizer(
    model: torch.nn.Module, settings: TrainSettings
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau]:
    """Adam and the learning-rate schedule chosen by ``settings.lr_schedule``."""
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    if settings.lr_schedule == "plateau":
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=settings.plateau_factor, patience=settings.plateau_patience
        )
        return optimizer, plateau
    return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, settings.epochs, settings.learning_rate / 20
    )


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` torch threads (the same count in process and on Dask: same numbers)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class MemberRun:
    """The state of one member's training loop, saved to and restored from a checkpoint.

    With ``start_model`` the run continues training that model (moved to the training dtype in place)
    instead of a freshly initialised member, and its starting weights are the first candidate for the
    best state: a run that only makes the validation loss worse returns them unchanged.
    """

    def __init__(
        self,
        train: Sequence[TrainingSample],
        validation: Sequence[TrainingSample],
        model_settings: ModelSettings,
        settings: TrainSettings,
        member: int,
        start_model: EnsembleModel | None = None,
    ) -> None:
        own = member_settings(settings, member)
        self.settings, self.member, self.train = settings, member, list(train)
        self.dtype = torch.float32 if settings.dtype == "float32" else torch.float64
        model = initialise(self.train, model_settings, own)[0] if start_model is None else start_model
        self.model = model.to(self.dtype)
        self.loss_fn = LossFunction(train, settings, self.model.self_energies.double().numpy(), model_settings.elements)
        self.optimizer, self.scheduler = make_optimizer(self.model, settings)
        self.rng = np.random.default_rng(own.seed)
        self.validation_batches = [
            collate([validation[i] for i in indices], self.dtype)
            for indices in epoch_batches(validation, VALIDATION_BATCH, np.random.default_rng(0))
        ]
        self.epoch, self.stale, self.seconds = 0, 0, 0.0
        self.best_loss = float("inf") if start_model is None else self.validation_loss()
        self.best_state = copy.deepcopy(self.model.state_dict())
        self.history: list[dict[str, float]] = []
        data = samples_hash([*train, *validation])
        if start_model is not None:
            data += ":" + state_hash(self.best_state)
        self.fingerprint = fingerprint(model_settings, settings, member, data)

    def validation_loss(self) -> float:
        """The loss of the current weights on the validation set."""
        total = sum(
            float(self.loss_fn(self.model, batch, create_graph=False).detach()) * len(batch.energy)
            for batch in self.validation_batches
        )
        return total / sum(len(batch.energy) for batch in self.validation_batches)

    @property
    def finished(self) -> bool:
        """All epochs done, or stopped early after ``early_stopping_patience`` epochs without improvement."""
        patience = self.settings.early_stopping_patience
        return self.epoch >= self.settings.epochs or (patience > 0 and self.stale >= patience)

    def run_epoch(self) -> float:
        """One pass over the shuffled training set, the validation loss and the schedule; returns the train loss."""
        started = time.perf_counter()
        self.model.train()
        epoch_loss = 0.0
        for indices in epoch_batches(self.train, self.settings.batch_size, self.rng):
            batch = collate([self.train[i] for i in indices], self.dtype)
            self.optimizer.zero_grad()
            loss = self.loss_fn(self.model, batch)
            loss.backward()
            self.optimizer.step()
            epoch_loss += float(loss.detach()) * len(batch.energy) / len(self.train)
        validation_loss = self.validation_loss()
        learning_rate = float(self.optimizer.param_groups[0]["lr"])
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(validation_loss)
        else:
            self.scheduler.step()
        self.epoch += 1
        self.history.append(
            {
                "epoch": self.epoch,
                "train_loss": epoch_loss,
                "validation_loss": validation_loss,
                "learning_rate": learning_rate,
            }
        )
        if validation_loss < self.best_loss:
            self.best_loss, self.best_state, self.stale = validation_loss, copy.deepcopy(self.model.state_dict()), 0
        else:
            self.stale += 1
        self.seconds += time.perf_counter() - started
        return epoch_loss

    def state(self) -> dict[str, Any]:
        """Everything needed to continue this run, as tensors, numbers and strings."""
        return {
            "fingerprint": self.fingerprint,
            "member": self.member,
            "epoch": self.epoch,
            "finished": self.finished,
            "stale": self.stale,
            "seconds": self.seconds,
            "best_loss": self.best_loss,
            "model": self.model.state_dict(),
            "best_model": self.best_state,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "numpy_rng": numpy_rng_state(self.rng),
            "torch_rng": torch.get_rng_state(),
            "history": json.dumps(self.history),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint written by :meth:`state`."""
        self.model.load_state_dict(state["model"])
        self.best_state = dict(state["best_model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        restore_numpy_rng(self.rng, state["numpy_rng"])
        torch.set_rng_state(state["torch_rng"])
        self.epoch, self.stale, self.seconds = int(state["epoch"]), int(state["stale"]), float(state["seconds"])
        self.best_loss = float(state["best_loss"])
        self.history = json.loads(state["history"])

    def result(self) -> MemberResult:
        """The best state on the validation loss and the history."""
        return MemberResult(
            member=self.member,
            state=self.best_state,
            history=self.history,
            best_loss=self.best_loss,
            seconds=self.seconds,
            stopped_early=self.epoch < self.settings.epochs,
        )


def train_member(
    train: Sequence[TrainingSample],
    validation: Sequence[TrainingSample],
    model_settings: ModelSettings,
    settings: TrainSettings,
    member: int,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: Callable[[int, float], None] | None = None,
    start_model: EnsembleModel | None = None,
) -> MemberResult:
    """Train ensemble member ``member`` alone (seed ``settings.seed + member``), single-threaded.

    The same call gives the same weights in this process and on a Dask worker. With
    ``checkpoint_dir`` a checkpoint is written every ``settings.checkpoint_interval`` epochs and when
    the member finishes; with ``resume`` the run continues from the checkpoint found there (a finished
    member is not trained again). ``progress(epoch, loss)`` is called after every epoch.
    ``start_model`` warm-starts from a trained model (any number of members, trained together; see
    :class:`MemberRun`); the result's ``state`` is then a state of that model.
    """
    with torch_threads(1):
        run = MemberRun(train, validation, model_settings, settings, member, start_model)
        path = checkpoint_path(checkpoint_dir, member) if checkpoint_dir is not None else None
        if path is not None and resume:
            saved = load_checkpoint(path, run.fingerprint)
            if saved is not None:
                run.restore(saved)
                logger.info("member %d: resumed at epoch %d from %s", member, run.epoch, path)
        while not run.finished:
            loss = run.run_epoch()
            if path is not None and (run.epoch % settings.checkpoint_interval == 0 or run.finished):
                save_checkpoint(path, run.state())
            if progress is not None:
                progress(run.epoch, loss)
        return run.result()


def merge_members(
    train: Sequence[TrainingSample],
    model_settings: ModelSettings,
    settings: TrainSettings,
    results: Sequence[MemberResult],
) -> EnsembleModel:
    """One K-member float64 model from K members trained alone.

    The shared buffers (self energies, feature scaling, ...) come from the same data-dependent
    initialisation as each member's, so they must agree exactly with each member's copy.
    """
    model, _ = initialise(train, model_settings, settings)
    model = model.to(torch.float32 if settings.dtype == "float32" else torch.float64)
    merged = model.state_dict()
    for k, result in enumerate(sorted(results, key=lambda r: r.member)):
        for key, value in result.state.items():
            if key.startswith("members.0."):
                merged["members." + str(k) + key[len("members.") + 1 :]] = value
            elif not torch.equal(value.to(merged[key].dtype), merged[key]):
                raise RuntimeError(
                    f"member {result.member}: shared tensor {key!r} differs from the ensemble's; the architecture "
                    "must keep per-member weights in `members` and shared buffers data-determined"
                )
    model.load_state_dict(merged)
    return model.double().eval()


def train_members(
    train: Sequence[TrainingSample],
    validation: Sequence[TrainingSample],
    model_settings: ModelSettings,
    settings: TrainSettings,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: ProgressCallback | None = None,
) -> list[MemberResult]:
    """Train every member: in this process one after the other (``workers`` = 1), else as Dask tasks."""
    if settings.workers > 1 or settings.scheduler_address:
        from biomol_nnp.train.distributed import dask_train_members

        return dask_train_members(train, validation, model_settings, settings, checkpoint_dir, resume, progress)
    total = settings.epochs * settings.ensemble_size
    results: list[MemberResult] = []
    for member in range(settings.ensemble_size):
        done = member * settings.epochs

        def update(epoch: int, loss: float, done: int = done) -> None:
            if progress is not None:
                progress(done + epoch, total, loss)

        result = train_member(train, validation, model_settings, settings, member, checkpoint_dir, resume, update)
        results.append(result)
    return results


def split_samples(
    samples: Sequence[TrainingSample], settings: TrainSettings
) -> tuple[list[TrainingSample], list[TrainingSample], list[TrainingSample]]:
    """Training, validation (random training frames, for early stopping) and test (whole trajectories) splits."""
    train_all, test = split_by_trajectory(samples, settings.validation_fraction, settings.seed)
    if not train_all or not test:
        validate_split(train_all, train_all, test)
    train, validation = split_validation(train_all, settings.early_stopping_fraction, settings.seed)
    validate_split(train, validation, test)
    return train, validation, test


def train_ensemble(
    samples: Sequence[TrainingSample],
    model_settings: ModelSettings,
    settings: TrainSettings,
    progress: ProgressCallback | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
) -> TrainingResult:
    """Check the data, split it, train the members (in process or on Dask), merge them into one model.

    Each member keeps its best state on the validation loss (random training frames set aside); the
    test set is whole held-out trajectories and only measured. ``progress(done, total, loss)`` counts
    member-epochs. With ``checkpoint_dir`` members are checkpointed there and ``resume`` continues an
    interrupted run to the same result.
    """
    if len(samples) < 2:
        raise InputError(
            f"training needs at least 2 labelled configurations, got {len(samples)}; sample and label more frames"
        )
    validate_samples(samples, model_settings.elements, settings)
    train, validation, test = split_samples(samples, settings)
    check_weights(train, settings)
    started = time.perf_counter()
    results = train_members(train, validation, model_settings, settings, checkpoint_dir, resume, progress)
    model = merge_members(train, model_settings, settings, results)
    metrics: dict[str, Any] = {}
    for name, split in (("train", train), ("validation", validation), ("test", test)):
        metrics[name], members = evaluate_all(model, split, torch.float64)
        if name == "test":
            metrics["test_members"] = members
    metrics["training"] = {
        "seconds": time.perf_counter() - started,
        "member_seconds": [r.seconds for r in results],
        "epochs": float(settings.epochs),
        "epochs_run": [float(len(r.history)) for r in results],
        "best_validation_loss": [r.best_loss for r in results],
        "stopped_early": [r.stopped_early for r in results],
        "workers": settings.workers,
    }
    logger.info(
        "trained %d members on %d configurations (%d validation, %d held out) in %.0f s; test %s",
        settings.ensemble_size,
        len(train),
        len(validation),
        len(test),
        metrics["training"]["seconds"],
        metrics["test"],
    )
    return TrainingResult(
        model=model,
        metrics=metrics,
        histories=[r.history for r in results],
        test_samples=test,
        train_samples=train,
        validation_samples=validation,
    )
