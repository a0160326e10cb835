"""The deployed model file: TorchScript plus ``metadata.json``, readable without this package.

Contract (DESIGN.md): the scripted module's ``forward(positions [N,3] nm, atomic_numbers [N] int64,
total_charge [] e, mm_positions [M,3] nm, mm_charges [M] e, box [3,3] nm or [0,3]) -> energy [] kJ/mol``
(M may be 0; an empty box means no periodic boundaries). Every MM charge given contributes; callers pass
whole molecules within ``embedding_cutoff_nm`` of the region with charges scaled by the molecule switch
(`biomol_nnp.models.environment`), as the training labels were made. Exported methods:

- ``charges(positions, atomic_numbers, total_charge) -> [N]`` per-atom charges, e, summing to total_charge;
- ``ensemble_energies(<forward arguments>) -> [K]`` the energy of each ensemble member, kJ/mol;
- ``ensemble_mean_std(<forward arguments>) -> (mean [], std [])``, kJ/mol.

Floating-point inputs are float64; the module casts to its own dtype internally.

The metadata also records ``architecture`` and the model ``settings`` (`model_metadata`); ``load_model``
refuses a file whose weights contradict them (elements, ensemble size, architecture, parameter shapes).

>>> module, metadata = load_model("model.pt")  # doctest: +SKIP
>>> metadata["elements"]  # doctest: +SKIP
[1, 6, 7, 8]
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import torch

from biomol_nnp import __version__
from biomol_nnp.config import ModelSettings
from biomol_nnp.exceptions import ModelFileError
from biomol_nnp.io import atomic_path

logger = logging.getLogger(__name__)

MODEL_FORMAT = "biomol-nnp-model"
MODEL_FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
REQUIRED_METADATA = (
    "format",
    "format_version",
    "elements",
    "cutoff_nm",
    "embedding_cutoff_nm",
    "units",
    "ensemble_size",
    "qm_method",
    "training_data_hash",
    "package_version",
)
REQUIRED_METHODS = ("forward", "charges", "ensemble_energies", "ensemble_mean_std")
UNITS = {"length": "nm", "energy": "kJ/mol", "charge": "e", "force": "kJ/mol/nm"}

MALLOC_TRIM_THRESHOLD = -1
MALLOC_MMAP_THRESHOLD = -3
"""glibc ``mallopt`` parameter numbers (malloc.h: M_TRIM_THRESHOLD, M_MMAP_THRESHOLD)."""

KEPT_HEAP_BYTES = 256 << 20
"""Freed heap memory glibc keeps for reuse instead of returning it to the system (see `keep_freed_memory`)."""

MMAP_THRESHOLD_BYTES = 32 << 20
"""Allocations below this size come from the heap, not from fresh ``mmap`` pages (glibc's largest setting)."""


def build_metadata(
    elements: list[int],
    cutoff_nm: float,
    embedding_cutoff_nm: float,
    ensemble_size: int,
    qm_method: str,
    training_data_hash: str,
    embedding_switch_width_nm: float = 0.1,
    **extra: Any,
) -> dict[str, Any]:
    """Metadata dictionary for a deployed model, with the keys the contract requires."""
    return {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "elements": sorted(int(z) for z in elements),
        "cutoff_nm": float(cutoff_nm),
        "embedding_cutoff_nm": float(embedding_cutoff_nm),
        "embedding_switch_width_nm": float(embedding_switch_width_nm),
        "units": dict(UNITS),
        "ensemble_size": int(ensemble_size),
        "qm_method": qm_method,
        "training_data_hash": training_data_hash,
        "package_version": __version__,
        **extra,
    }


def model_metadata(
    settings: ModelSettings,
    ensemble_size: int,
    qm_method: str,
    training_data_hash: str,
    **extra: Any,
) -> dict[str, Any]:
    """Metadata of a model built from ``settings``: the contract keys plus architecture and hyperparameters.

    ``load_model`` rebuilds the architecture from ``settings`` and refuses a file whose weights do not match.
    """
    from biomol_nnp.models.registry import model_cutoff

    return build_metadata(
        settings.elements,
        model_cutoff(settings),
        settings.embedding_cutoff_nm,
        ensemble_size,
        qm_method,
        training_data_hash,
        embedding_switch_width_nm=settings.embedding_switch_width_nm,
        architecture=settings.architecture,
        settings=settings.model_dump(mode="json"),
        **extra,
    )


def save_model(module: torch.nn.Module, path: str | os.PathLike, metadata: dict[str, Any]) -> Path:
    """Script ``module`` (unless already scripted) and write it atomically with its metadata."""
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise ModelFileError(f"metadata is missing {missing}; build it with build_metadata()")
    scripted = module if isinstance(module, torch.jit.ScriptModule) else torch.jit.script(module)
    with atomic_path(path) as tmp:
        torch.jit.save(scripted, str(tmp), _extra_files={METADATA_FILE: json.dumps(metadata, indent=2)})
    logger.info(
        "wrote deployed model %s (%d members, elements %s)",
        path,
        metadata["ensemble_size"],
        metadata["elements"],
    )
    return Path(path)


def load_model(path: str | os.PathLike) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """Load a deployed model and its metadata, checking that the file follows the contract.

    Also calls `keep_freed_memory` (process-wide; makes repeated energy + forces calls with many MM charges
    several times cheaper, results unchanged).

    Raises
    ------
    ModelFileError
        If the path does not exist, is not a TorchScript archive, has no biomol-nnp metadata,
        or lacks one of the exported methods.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(
            f"model file {str(path)!r} does not exist; train one with `biomol-nnp train` "
            "or pass modelPath= the path of a model.pt"
        )
    if not zipfile.is_zipfile(path):
        raise ModelFileError(
            f"{str(path)!r} is not a deployed biomol-nnp model (not a TorchScript archive); "
            "export one with biomol_nnp.models.export.save_model"
        )
    extra = {METADATA_FILE: ""}
    try:
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except RuntimeError as err:
        raise ModelFileError(f"{str(path)!r} could not be loaded as TorchScript: {err}") from err
    if not extra[METADATA_FILE]:
        raise ModelFileError(
            f"{str(path)!r} is TorchScript but has no {METADATA_FILE}; it is not a deployed "
            "biomol-nnp model (export it with save_model)"
        )
    metadata = json.loads(extra[METADATA_FILE])
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing or metadata.get("format") != MODEL_FORMAT:
        raise ModelFileError(
            f"{str(path)!r} metadata is not a biomol-nnp model's (missing {missing}, format {metadata.get('format')!r})"
        )
    absent = [name for name in REQUIRED_METHODS if not hasattr(module, name)]
    if absent:
        raise ModelFileError(f"{str(path)!r} lacks the exported methods {absent} the contract requires")
    check_weights_match_metadata(module, metadata, str(path))
    module.eval()
    keep_freed_memory()
    return module, metadata


def keep_freed_memory() -> bool:
    """Let glibc keep freed tensor memory for reuse; True where it applied (Linux with glibc).

    One energy + forces call with 2000 MM charges allocates and frees tens of [N, M] float64 tensors
    (0.8 MB each for N = 49). With glibc's defaults these come from fresh ``mmap`` pages, or the heap is
    trimmed after each call, so every tensor is page-faulted in again, which made those passes 5-15x slower
    than the arithmetic (`benchmarks/model_speed.py`). Raising the trim and mmap thresholds keeps up to
    `KEPT_HEAP_BYTES` of freed memory in the process; results do not change. Process-wide, set once on load.
    """
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    applied = mallopt(MALLOC_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    return mallopt(MALLOC_TRIM_THRESHOLD, KEPT_HEAP_BYTES) == 1 and applied


def check_weights_match_metadata(module: torch.nn.Module, metadata: dict[str, Any], where: str) -> None:
    """Refuse a model whose weights contradict its metadata (elements, ensemble size, architecture, shapes).

    Checks what the file's own buffers say (``element_index``, ``members.<k>``, ``architecture``) and, when
    the metadata records ``architecture`` and ``settings``, rebuilds that architecture and compares every
    parameter and buffer name and shape. Models that are not ours (no such buffers) pass unchanged.
    """
    state = module.state_dict()
    if "element_index" in state:
        covered = torch.nonzero(state["element_index"] >= 0).flatten().tolist()
        if covered != list(metadata["elements"]):
            raise ModelFileError(
                f"{where}: metadata elements {metadata['elements']} but the weights cover atomic numbers "
                f"{covered}; the metadata belongs to another model (re-export it with save_model)"
            )
    members = {key.split(".")[1] for key in state if key.startswith("members.")}
    if members and len(members) != int(metadata["ensemble_size"]):
        raise ModelFileError(
            f"{where}: metadata ensemble_size {metadata['ensemble_size']} but the file holds {len(members)} "
            "members; re-export the model with matching metadata"
        )
    architecture = metadata.get("architecture")
    if architecture is None or not hasattr(module, "architecture"):
        return
    if module.architecture != architecture:
        raise ModelFileError(
            f"{where}: metadata architecture {architecture!r} but the weights are a {module.architecture!r} "
            "model; re-export the model with matching metadata"
        )
    if "settings" in metadata:
        check_shapes(state, metadata, where)


def check_shapes(state: dict[str, torch.Tensor], metadata: dict[str, Any], where: str) -> None:
    """Compare the file's parameter names and shapes with a model rebuilt from the metadata settings."""
    from pydantic import ValidationError

    from biomol_nnp.models.registry import build_model

    try:
        settings = ModelSettings.model_validate(metadata["settings"])
    except ValidationError as err:
        raise ModelFileError(
            f"{where}: metadata settings are not valid ModelSettings (a file written by another biomol-nnp "
            f"version, e.g. one with the erf embedding kernel, before 'embedding_width_nm'; retrain it with "
            f"`biomol-nnp train`):\n{err}"
        ) from err
    expected = build_model(settings, int(metadata["ensemble_size"])).state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ModelFileError(
            f"{where}: the weights do not match the {settings.architecture!r} architecture of the metadata "
            f"settings (missing {missing[:5]}, unexpected {unexpected[:5]}); re-export with matching metadata"
        )
    for name, tensor in expected.items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise ModelFileError(
                f"{where}: parameter {name!r} has shape {tuple(state[name].shape)} but the metadata settings "
                f"give {tuple(tensor.shape)}; the metadata hyperparameters do not describe these weights"
            )


def check_elements(metadata: dict[str, Any], atomic_numbers: list[int], where: str = "the ML region") -> None:
    """Refuse a region with elements the model was not trained on, naming them."""
    covered = set(metadata["elements"])
    missing = sorted(set(int(z) for z in atomic_numbers) - covered)
    if missing:
        raise ModelFileError(
            f"the model covers elements {sorted(covered)} but {where} contains atomic numbers "
            f"{missing}; train a model on labels that include them or shrink the region"
        )


def check_total_charge(metadata: dict[str, Any], total_charge: float, where: str = "the ML region") -> None:
    """Refuse a region whose total charge the model never saw in training (when the file records them)."""
    trained = metadata.get("training_total_charges")
    if trained is None:
        return
    charge = int(round(float(total_charge)))
    if charge not in [int(q) for q in trained]:
        raise ModelFileError(
            f"{where} has total charge {charge} e but the model was trained only on regions with total charge "
            f"{sorted(int(q) for q in trained)} e; label configurations with that charge and retrain, or pass "
            "totalCharge= if the region's charge was guessed wrongly"
        )


def file_hash(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, used as the training-data hash."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
