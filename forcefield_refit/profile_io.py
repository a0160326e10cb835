"""Read a 1-D torsion profile table (CSV or JSON) for the command line.

Accepted columns: ``angle_deg`` with either ``target_kj`` or both ``model_kj`` and ``baseline_kj``
(then ``target = model - baseline``). CSV has a header row; JSON is either an object of equal-length
column lists or a list of row objects.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path

import numpy as np

from forcefield_refit.exceptions import RefitInputError

logger = logging.getLogger(__name__)

_HINT = "Hint: columns angle_deg,target_kj or angle_deg,model_kj,baseline_kj."


def _columns(path: Path) -> dict[str, list[float]]:
    suffix = path.suffix.lower()
    if suffix == ".json":
        data = json.loads(path.read_text())
        if isinstance(data, list):
            return {key: [float(row[key]) for row in data] for key in (data[0] if data else {})}
        if isinstance(data, dict):
            return {key: [float(v) for v in values] for key, values in data.items()}
        raise RefitInputError(
            f"profile {path} holds a JSON {type(data).__name__}; allowed: object or list. {_HINT}"
        )
    if suffix == ".csv":
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        keys = rows[0].keys() if rows else []
        return {key.strip(): [float(row[key]) for row in rows] for key in keys}
    raise RefitInputError(f"profile={path}; allowed suffixes: .csv, .json. {_HINT}")


def _read_columns(path: Path) -> dict[str, list[float]]:
    try:
        return _columns(path)
    except (KeyError, TypeError, ValueError) as error:
        if isinstance(error, RefitInputError):
            raise
        raise RefitInputError(
            f"profile={path} could not be read as numbers ({error}); allowed: a header row and one numeric "
            f"value per column in every row. {_HINT}"
        ) from error


def read_profile(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read angles and target energies from a profile file.

    Parameters
    ----------
    path : str or PathLike
        ``.csv`` or ``.json`` file.

    Returns
    -------
    angles_deg : np.ndarray
        ``[K]``, degrees.
    target_kj : np.ndarray
        ``[K]``, kJ/mol (``model_kj - baseline_kj`` when those columns are given).
    """
    columns = _read_columns(Path(path))
    if "angle_deg" not in columns:
        raise RefitInputError(
            f"profile {path} has columns {sorted(columns)}; allowed: angle_deg is required. {_HINT}"
        )
    angles = np.asarray(columns["angle_deg"], dtype=float)
    if "target_kj" in columns:
        target = np.asarray(columns["target_kj"], dtype=float)
    elif "model_kj" in columns and "baseline_kj" in columns:
        target = np.asarray(columns["model_kj"], dtype=float) - np.asarray(
            columns["baseline_kj"], dtype=float
        )
    else:
        raise RefitInputError(f"profile {path} has columns {sorted(columns)}; no target energies. {_HINT}")
    if angles.size == 0:
        raise RefitInputError(f"profile {path} has no rows; allowed: at least one point per unknown. {_HINT}")
    logger.debug("read %d profile points from %s", angles.size, path)
    return angles, target
