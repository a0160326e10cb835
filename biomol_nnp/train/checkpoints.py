"""Training checkpoints of one ensemble member: plain tensors and JSON, written atomically.

A checkpoint holds everything that decides the rest of a member's run: the model ``state_dict``, the
best state so far, the optimizer and learning-rate scheduler states, the numpy and torch random states,
the epoch, the loss history, the early-stopping counter, the settings as JSON and a hash of the
training data. It is written with ``torch.save`` to a temporary file that replaces the old one
(``os.replace``), so a kill at any moment leaves the previous checkpoint intact, and read back with
``torch.load(weights_only=True)`` (no pickled code). A resumed run continues bit for bit where the
checkpoint was taken, so it ends with the same model as an uninterrupted run.

>>> save_checkpoint(checkpoint_path("checkpoints", 0), state)  # doctest: +SKIP
>>> state = load_checkpoint(checkpoint_path("checkpoints", 0), fingerprint)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from biomol_nnp.config import ModelSettings, TrainSettings
from biomol_nnp.exceptions import ConfigError, InputError
from biomol_nnp.io import atomic_path
from biomol_nnp.train.data import TrainingSample

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
"""Version of the checkpoint layout; a different version is refused."""

RUN_ONLY_SETTINGS = ("workers", "scheduler_address", "checkpoint_interval")
"""TrainSettings that change how a run is executed, not its result: they may differ on resume."""


def checkpoint_path(directory: str | os.PathLike, member: int) -> Path:
    """File of member ``member``'s checkpoint in ``directory``."""
    return Path(directory) / f"member_{member:03d}.pt"


def samples_hash(samples: Sequence[TrainingSample]) -> str:
    """SHA-256 of the inputs and labels of ``samples`` in order (hex digest)."""
    digest = hashlib.sha256()
    for sample in samples:
        digest.update(f"{sample.total_charge}|{sample.energy}|{sample.embedding_energy}".encode())
        for array in (sample.atomic_numbers, sample.positions, sample.forces, sample.charges, sample.mm_positions):
            digest.update(np.ascontiguousarray(array, dtype="<f8").tobytes())
        digest.update(np.ascontiguousarray(sample.mm_charges, dtype="<f8").tobytes())
    return digest.hexdigest()


def state_hash(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a ``state_dict`` (names and float64 values, in order): the weights a warm start begins from."""
    digest = hashlib.sha256()
    for name, tensor in state.items():
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(tensor.detach().double().numpy(), dtype="<f8").tobytes())
    return digest.hexdigest()


def fingerprint(model_settings: ModelSettings, settings: TrainSettings, member: int, data_hash: str) -> str:
    """JSON of everything a checkpoint must agree with to be resumed: settings, member and data."""
    train = settings.model_dump(mode="json", exclude=set(RUN_ONLY_SETTINGS))
    return json.dumps(
        {"model": model_settings.model_dump(mode="json"), "train": train, "member": member, "data": data_hash},
        sort_keys=True,
    )


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` (tensors, numbers, strings, lists and dicts of them) atomically."""
    with atomic_path(path) as tmp:
        torch.save({**state, "format": CHECKPOINT_FORMAT}, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, expected: str) -> dict[str, Any] | None:
    """The checkpoint at ``path``, or None when there is none; refused if it belongs to another run.

    Parameters
    ----------
    path : str or os.PathLike
        Checkpoint file.
    expected : str
        :func:`fingerprint` of the run that wants to resume.

    Raises
    ------
    InputError
        The file is not a readable checkpoint of this format.
    ConfigError
        It was written with other settings or other training data (names the differing settings).
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same advice
        raise InputError(
            f"checkpoint {str(path)!r} cannot be read ({type(err).__name__}: {err}); delete it to start over"
        ) from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise InputError(
            f"{str(path)!r} is not a biomol-nnp training checkpoint of format {CHECKPOINT_FORMAT}; delete it"
        )
    if state["fingerprint"] != expected:
        difference = describe_difference(state["fingerprint"], expected)
        raise ConfigError(
            f"checkpoint {str(path)!r} was written by a different run ({difference}); "
            "resume with the same settings and labels, or start over: `biomol-nnp train` without --resume, "
            "`biomol-nnp demo --restart`, or delete the checkpoint folder"
        )
    return dict(state)


def describe_difference(saved: str, expected: str) -> str:
    """The settings (or the data) in which two fingerprints differ, as text."""
    old, new = json.loads(saved), json.loads(expected)
    if old["data"] != new["data"]:
        return "the training data differ"
    changed = [
        f"{section}.{key}: {old[section].get(key)!r} -> {new[section].get(key)!r}"
        for section in ("model", "train")
        for key in sorted(set(old[section]) | set(new[section]))
        if old[section].get(key) != new[section].get(key)
    ]
    return "changed settings: " + "; ".join(changed) if changed else "another member"


def numpy_rng_state(rng: np.random.Generator) -> str:
    """The bit-generator state of ``rng`` as JSON (128-bit integers survive as JSON numbers)."""
    return json.dumps(rng.bit_generator.state)


def restore_numpy_rng(rng: np.random.Generator, state: str) -> None:
    """Set ``rng`` to a state from :func:`numpy_rng_state`."""
    rng.bit_generator.state = json.loads(state)
