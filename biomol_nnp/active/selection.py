"""Which frames to label: uncertain ones (ensemble force spread above a threshold), mutually diverse.

A frame is described by the inverse distances between its region atoms (invariant to translation and
rotation, most sensitive to short contacts). Among the uncertain frames, farthest-point selection starts
from the most uncertain one and repeatedly adds the frame farthest (Euclidean, in descriptor space) from
every frame already chosen, so a budget of ``k`` labels covers ``k`` different geometries instead of ``k``
neighbouring frames of one walker.

>>> import numpy as np
>>> descriptors = np.array([[0.0], [0.1], [5.0], [5.1]])
>>> select_frames(np.array([60.0, 70.0, 55.0, 10.0]), descriptors, threshold=50.0, budget=2)
[1, 2]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from biomol_nnp.exceptions import InputError


def inverse_distance_descriptor(positions: np.ndarray) -> np.ndarray:
    """Inverse distances 1/r_ij (1/nm) of every atom pair i < j of one frame, shape (N(N-1)/2,).

    Parameters
    ----------
    positions : numpy.ndarray, shape (N, 3)
        Region atom positions, nm (the same atom order in every frame compared).
    """
    xyz = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    upper = np.triu_indices(len(xyz), k=1)
    distances = np.linalg.norm(xyz[:, None, :] - xyz[None, :, :], axis=-1)[upper]
    return 1.0 / np.maximum(distances, 1e-6)


def frame_descriptors(frames: Sequence[np.ndarray]) -> np.ndarray:
    """Descriptors of several frames of the same region, shape (F, N(N-1)/2).

    Raises
    ------
    InputError
        The frames hold different numbers of atoms.
    """
    sizes = sorted({len(np.asarray(f).reshape(-1, 3)) for f in frames})
    if len(sizes) > 1:
        raise InputError(f"frames have different atom counts {sizes}; descriptors compare frames of one region")
    return np.array([inverse_distance_descriptor(f) for f in frames]).reshape(len(frames), -1)


def select_frames(
    force_std: np.ndarray, descriptors: np.ndarray, threshold: float, budget: int, ceiling: float | None = None
) -> list[int]:
    """Indices of up to ``budget`` uncertain, mutually diverse frames (in the order they were picked).

    Parameters
    ----------
    force_std : numpy.ndarray, shape (F,)
        Largest per-atom ensemble force standard deviation of each frame, kJ/mol/nm (NaN: not usable).
    descriptors : numpy.ndarray, shape (F, D)
        Frame descriptors (:func:`frame_descriptors`).
    threshold : float
        Frames with ``force_std > threshold`` are candidates, kJ/mol/nm.
    budget : int
        Most frames returned (>= 0).
    ceiling : float, optional
        Frames with ``force_std > ceiling`` are not candidates either, kJ/mol/nm: the model is so far off
        there that the configuration is likely unphysical (DP-GEN's upper trust level); None: no ceiling.

    Returns
    -------
    list of int
        The most uncertain candidate first, then farthest-point order; ties go to the more uncertain frame.

    Raises
    ------
    InputError
        ``budget`` < 0, or ``force_std`` and ``descriptors`` describe different numbers of frames.
    """
    force_std = np.asarray(force_std, dtype=np.float64).reshape(-1)
    descriptors = np.asarray(descriptors, dtype=np.float64).reshape(len(descriptors), -1)
    if budget < 0:
        raise InputError(f"budget={budget} is not allowed; give the number of frames to pick (>= 0)")
    if len(force_std) != len(descriptors):
        raise InputError(
            f"force_std has {len(force_std)} frames but descriptors has {len(descriptors)}; give one row per frame"
        )
    values = np.nan_to_num(force_std, nan=-np.inf)
    candidates = np.flatnonzero((values > threshold) & (values <= (np.inf if ceiling is None else ceiling)))
    if candidates.size == 0 or budget == 0:
        return []
    # more uncertain first, so argmax picks the more uncertain frame among equally distant ones
    candidates = candidates[np.argsort(-force_std[candidates], kind="stable")]
    chosen = [int(candidates[0])]
    nearest = np.linalg.norm(descriptors[candidates] - descriptors[candidates[0]], axis=1)
    while len(chosen) < min(budget, candidates.size):
        nearest[np.isin(candidates, chosen)] = -np.inf
        pick = int(np.argmax(nearest))
        chosen.append(int(candidates[pick]))
        nearest = np.minimum(nearest, np.linalg.norm(descriptors[candidates] - descriptors[candidates[pick]], axis=1))
    return chosen


def uncertain_fraction(force_std: np.ndarray, threshold: float) -> float:
    """Fraction of the usable (finite) frames whose ``force_std`` exceeds ``threshold`` (NaN when none)."""
    values = np.asarray(force_std, dtype=np.float64).reshape(-1)
    finite = values[np.isfinite(values)]
    return float((finite > threshold).mean()) if finite.size else float("nan")
