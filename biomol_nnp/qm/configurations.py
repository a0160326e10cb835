"""Configurations files: what `biomol-nnp sample` writes and `biomol-nnp label CONFIGS` reads.

The layout is the label store's without results (OpenMM units)::

    /                            attrs: format_version, package="biomol-nnp", kind="configurations"
    /configurations/{index:06d}  attrs: source, trajectory_id, frame, total_charge, multiplicity
        atomic_numbers (N,), positions (N, 3) nm, mm_positions (M, 3) nm, mm_charges (M,) e, mm_numbers (M,)

A label store can be read as a configurations file too (its records' inputs).

>>> write_configurations(configs, "configs.h5")  # doctest: +SKIP
>>> len(read_configurations("configs.h5"))  # doctest: +SKIP
64
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from biomol_nnp import __version__
from biomol_nnp.exceptions import InputError
from biomol_nnp.qm.sampling import Configuration

logger = logging.getLogger(__name__)

CONFIGS_FORMAT_VERSION = 1
_GROUP = "configurations"
_ARRAYS = ("atomic_numbers", "positions", "mm_positions", "mm_charges", "mm_numbers")
_UNITS = {"positions": "nm", "mm_positions": "nm", "mm_charges": "e"}


def write_configurations(configs: Sequence[Configuration], path: str | os.PathLike) -> Path:
    """Write configurations to a new HDF5 file (written to a temporary name, then renamed).

    Parameters
    ----------
    configs : sequence of Configuration
    path : str or os.PathLike

    Returns
    -------
    pathlib.Path
    """
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as h5:
        h5.attrs.update(
            {
                "format_version": CONFIGS_FORMAT_VERSION,
                "package": "biomol-nnp",
                "package_version": __version__,
                "kind": "configurations",
            }
        )
        group = h5.create_group(_GROUP)
        for index, config in enumerate(configs):
            sub = group.create_group(f"{index:06d}")
            for name in _ARRAYS:
                value = np.asarray(getattr(config, name))
                data = value.astype(np.int64) if value.dtype.kind in "iu" else value.astype(np.float64)
                dataset = sub.create_dataset(name, data=data)
                dataset.attrs["units"] = _UNITS.get(name, "")
            sub.attrs.update(
                {
                    "source": config.source,
                    "trajectory_id": int(config.trajectory_id),
                    "frame": int(config.frame),
                    "total_charge": int(config.total_charge),
                    "multiplicity": int(config.multiplicity),
                }
            )
    os.replace(tmp, path)
    logger.info("wrote %d configurations to %s", len(configs), path)
    return path


def read_configurations(path: str | os.PathLike) -> list[Configuration]:
    """Read a configurations file (or the inputs of a label store).

    Raises
    ------
    InputError
        Missing, unreadable or foreign file.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise InputError(f"configurations file {str(path)!r} does not exist; write one with `biomol-nnp sample`")
    try:
        h5 = h5py.File(path, "r")
    except OSError as err:
        raise InputError(f"{str(path)!r} is not a readable HDF5 file (truncated or corrupted?): {err}") from err
    with h5:
        if h5.attrs.get("package") is None and h5.attrs.get("format_version") is None or _GROUP not in h5:
            raise InputError(
                f"{str(path)!r} is not a biomol-nnp configurations file or label store "
                f"(top-level keys {sorted(h5.keys())[:5]}); write one with `biomol-nnp sample`"
            )
        return [_read_one(group) for _, group in sorted(h5[_GROUP].items())]


def _read_one(group: Any) -> Configuration:
    arrays = {name: np.asarray(group[name][()]) for name in _ARRAYS}
    attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in group.attrs.items()}
    return Configuration(
        atomic_numbers=arrays["atomic_numbers"],
        positions=arrays["positions"],
        total_charge=int(attrs.get("total_charge", 0)),
        mm_positions=arrays["mm_positions"],
        mm_charges=arrays["mm_charges"],
        mm_numbers=arrays["mm_numbers"],
        source=str(attrs.get("source", "unknown")),
        trajectory_id=int(attrs.get("trajectory_id", 0)),
        frame=int(attrs.get("frame", 0)),
        multiplicity=int(attrs.get("multiplicity", 1)),
    )
