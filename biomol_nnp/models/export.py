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

>>> module, metadata = load_model("model.pt")  # doctest: +SKIP
>>> metadata["elements"]  # doctest: +SKIP
[1, 6, 7, 8]
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import torch

from biomol_nnp import __version__
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
    module.eval()
    return module, metadata


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
