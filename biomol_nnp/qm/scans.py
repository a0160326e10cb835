"""Hydrogen-bond dimer scans: rigid water-water geometries over the O...O distance and an angle.

The reference geometry is the S22 water dimer (Jurecka et al., PCCP 8, 1985 (2006)); the donor
water is fixed, the acceptor is moved rigidly along the O...O axis and rotated about its oxygen in
the plane of the donor. Each geometry is one :class:`~biomol_nnp.qm.sampling.Configuration` of
the six atoms (no point charges), ``trajectory_id`` = angle index and ``frame`` = distance index.

>>> configs = water_dimer_scan(distances_nm=[0.28, 0.30], angles_deg=[0.0])
>>> len(configs), configs[0].n_atoms
(2, 6)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from biomol_nnp.exceptions import InputError
from biomol_nnp.qm.sampling import Configuration
from biomol_nnp.units import ANGSTROM_TO_NM, DEG_TO_RAD

logger = logging.getLogger(__name__)

S22_WATER_DIMER_ANGSTROM = np.array(
    [
        [-1.551007, -0.114520, 0.000000],
        [-1.934259, 0.762503, 0.000000],
        [-0.599677, 0.040712, 0.000000],
        [1.350625, 0.111469, 0.000000],
        [1.680398, -0.373741, -0.758561],
        [1.680398, -0.373741, 0.758561],
    ]
)
"""S22 water dimer (donor O, H, H-bonded H; acceptor O, H, H), Angstrom."""
WATER_DIMER_NUMBERS = np.array([8, 1, 1, 8, 1, 1])
SOURCE = "water-dimer-scan"
DEFAULT_DISTANCES_NM = tuple(float(d) for d in np.linspace(0.25, 0.45, 11))
"""O...O distances of the default scan, nm."""


def _rotation(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle_rad) * k + (1 - np.cos(angle_rad)) * (k @ k)


def water_dimer_scan(
    distances_nm: Sequence[float] | np.ndarray = DEFAULT_DISTANCES_NM,
    angles_deg: Sequence[float] | np.ndarray = (-40.0, -20.0, 0.0, 20.0, 40.0),
) -> list[Configuration]:
    """Rigid water-dimer geometries on a grid of O...O distances and acceptor rotation angles.

    Parameters
    ----------
    distances_nm : sequence of float
        O...O distances, nm (each > 0.2 nm so that atoms do not overlap).
    angles_deg : sequence of float
        Rotation of the acceptor about its oxygen, around the normal of the donor plane, degrees
        (0: the S22 geometry; it changes the O-H...O angle and the acceptor's orientation).

    Returns
    -------
    list of Configuration
        ``len(angles_deg) * len(distances_nm)`` six-atom configurations.

    Raises
    ------
    InputError
        A distance below 0.2 nm or an empty grid.
    """
    distances = np.asarray(distances_nm, dtype=float)
    angles = np.asarray(angles_deg, dtype=float)
    if distances.size == 0 or angles.size == 0:
        raise InputError("distances_nm and angles_deg must be non-empty grids")
    if distances.min() < 0.2:
        raise InputError(f"distances_nm must be >= 0.2 nm (atoms would overlap), got {distances.min():.3f} nm")
    xyz = S22_WATER_DIMER_ANGSTROM * ANGSTROM_TO_NM
    donor, acceptor = xyz[:3], xyz[3:]
    axis = acceptor[0] - donor[0]
    unit = axis / np.linalg.norm(axis)
    normal = np.cross(donor[1] - donor[0], donor[2] - donor[0])
    configs = []
    for a, angle in enumerate(angles):
        rotated = (acceptor - acceptor[0]) @ _rotation(normal, angle * DEG_TO_RAD).T
        for d, distance in enumerate(distances):
            moved = rotated + donor[0] + unit * distance
            configs.append(
                Configuration(WATER_DIMER_NUMBERS, np.vstack([donor, moved]), source=SOURCE, trajectory_id=a, frame=d)
            )
    logger.info("water dimer scan: %d distances x %d angles", distances.size, angles.size)
    return configs
