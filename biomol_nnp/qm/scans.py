"""Hydrogen-bond dimer scans: rigid water-water, N-methylacetamide-water and NMA-NMA geometries.

Water-water (:func:`water_dimer_scan`): the reference geometry is the S22 water dimer (Jurecka et
al., PCCP 8, 1985 (2006)); the donor water is fixed, the acceptor is moved rigidly along the O...O axis
and rotated about its oxygen in the plane of the donor. ``trajectory_id`` = angle index and ``frame`` =
distance index.

NMA-water, water-NMA and NMA-NMA (:func:`hbond_dimer_scan`): forcefield_refit's rigid dimer builder
(:func:`forcefield_refit.hbonds.place_dimer`) over donor...acceptor distance and bend angle.

Each geometry is one :class:`~biomol_nnp.qm.sampling.Configuration` (no point charges).

>>> configs = water_dimer_scan(distances_nm=[0.28, 0.30], angles_deg=[0.0])
>>> len(configs), configs[0].n_atoms
(2, 6)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from biomol_nnp.config import SYSTEMS_DIR
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


NMA_PDB = SYSTEMS_DIR / "nma" / "nma.pdb"
"""N-methylacetamide monomer (tleap internal coordinates; atoms C=4, O=5, N=6, H=7)."""
DEFAULT_HBOND_DISTANCES_NM = (0.25, 0.27, 0.29, 0.31, 0.34, 0.38, 0.43)
"""Donor...acceptor heavy-atom distances of the default dimer scans, nm (forcefield_refit's grid)."""
DEFAULT_HBOND_ANGLES_DEG = (-30.0, 0.0, 30.0)
"""Bends of the D...A direction away from D-H in the donor plane, degrees."""
MIN_CONTACT_NM = 0.12
"""Dimer geometries with two atoms of different monomers closer than this are skipped, nm."""


@dataclass(frozen=True)
class HBondDimer:
    """One donor -> acceptor pairing for :func:`hbond_dimer_scan` (indices within each monomer).

    Attributes
    ----------
    donor, acceptor : {"water", "nma"}
        Monomers; the donor's atoms come first in the configuration.
    donor_atoms : tuple of 3 int
        Donor heavy atom, its hydrogen, and a third donor atom defining the bend plane.
    acceptor_atom : int
        Acceptor atom.
    acceptor_back : tuple of int
        Acceptor atoms bonded to the acceptor atom (their mean sets the acceptor's orientation).

    Examples
    --------
    >>> HBOND_DIMERS["nma-water"].source
    'hbond-nma-water'
    """

    donor: str
    acceptor: str
    donor_atoms: tuple[int, int, int]
    acceptor_atom: int
    acceptor_back: tuple[int, ...]

    @property
    def source(self) -> str:
        """``Configuration.source`` of this pairing, ``"hbond-{donor}-{acceptor}"``."""
        return f"hbond-{self.donor}-{self.acceptor}"


_WATER_DONOR = (0, 1, 2)  # O, H1, H2 (the other H sets the plane)
_NMA_DONOR = (6, 7, 4)  # N, H, carbonyl C
HBOND_DIMERS = {
    "nma-water": HBondDimer("nma", "water", _NMA_DONOR, 0, (1, 2)),
    "water-nma": HBondDimer("water", "nma", _WATER_DONOR, 5, (4,)),
    "nma-nma": HBondDimer("nma", "nma", _NMA_DONOR, 5, (4,)),
}
"""Dimers over which the H-bond scans run: N-H...O(water), O-H...O=C and N-H...O=C."""
HBOND_SCAN_KINDS = {"nma-water-scan": ("nma-water", "water-nma"), "nma-nma-scan": ("nma-nma",)}
"""`biomol-nnp sample --kind` -> the dimers it scans."""


def _monomer(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Atomic numbers (N,) and positions (N, 3) nm of a monomer."""
    from forcefield_refit.molecules import load_molecule, water_molecule

    molecule = water_molecule() if name == "water" else load_molecule(NMA_PDB)
    numbers = np.array([a.element.atomic_number for a in molecule.topology.atoms()], dtype=np.int64)
    return numbers, np.asarray(molecule.positions, dtype=float)


def hbond_dimer_scan(
    dimer: str,
    distances_nm: Sequence[float] | np.ndarray = DEFAULT_HBOND_DISTANCES_NM,
    angles_deg: Sequence[float] | np.ndarray = DEFAULT_HBOND_ANGLES_DEG,
    trajectory_offset: int = 0,
) -> list[Configuration]:
    """Rigid hydrogen-bonded dimers on a distance x angle grid, placed by forcefield_refit's builder.

    Thin adapter over :func:`forcefield_refit.hbonds.place_dimer`: the acceptor monomer sits at
    ``distance`` from the donor heavy atom along D->H bent by ``angle`` in the donor plane, its bonded
    neighbours pointing away. Monomers: TIP3P-geometry water and ``systems/nma/nma.pdb``.

    Parameters
    ----------
    dimer : {"nma-water", "water-nma", "nma-nma"}
        Donor-acceptor pairing (see :data:`HBOND_DIMERS`).
    distances_nm : sequence of float, shape (D,)
        Donor...acceptor heavy-atom distances, nm (each >= 0.2).
    angles_deg : sequence of float, shape (A,)
        Bend angles, degrees.
    trajectory_offset : int
        ``trajectory_id`` = offset + angle index (``frame`` = distance index).

    Returns
    -------
    list of Configuration
        Up to ``A * D`` neutral singlet configurations (donor atoms first, no point charges), source
        ``"hbond-{donor}-{acceptor}"``; geometries with an intermolecular contact below
        :data:`MIN_CONTACT_NM` are skipped with a warning.

    Raises
    ------
    InputError
        Unknown dimer, empty grid or a distance below 0.2 nm.

    Examples
    --------
    >>> configs = hbond_dimer_scan("nma-water", distances_nm=[0.29], angles_deg=[0.0])
    >>> configs[0].n_atoms, configs[0].source
    (15, 'hbond-nma-water')
    """
    from forcefield_refit.hbonds import place_dimer

    if dimer not in HBOND_DIMERS:
        raise InputError(f"unknown H-bond dimer {dimer!r}; valid dimers: {', '.join(HBOND_DIMERS)}")
    spec = HBOND_DIMERS[dimer]
    distances = np.asarray(distances_nm, dtype=float).reshape(-1)
    angles = np.asarray(angles_deg, dtype=float).reshape(-1)
    if distances.size == 0 or angles.size == 0:
        raise InputError("distances_nm and angles_deg must be non-empty grids (e.g. 0.25-0.43 nm and -30, 0, 30 deg)")
    if distances.min() < 0.2:
        raise InputError(f"distances_nm must be >= 0.2 nm (atoms would overlap), got {distances.min():.3f} nm")
    donor_numbers, donor_xyz = _monomer(spec.donor)
    acceptor_numbers, acceptor_xyz = _monomer(spec.acceptor)
    numbers = np.concatenate([donor_numbers, acceptor_numbers])
    n_donor = donor_numbers.size
    configs, skipped = [], []
    for a, angle in enumerate(angles):
        for d, distance in enumerate(distances):
            xyz = place_dimer(
                donor_xyz, acceptor_xyz, *spec.donor_atoms, spec.acceptor_atom, spec.acceptor_back,
                float(distance), float(angle),
            )
            contact = np.linalg.norm(xyz[:n_donor, None, :] - xyz[None, n_donor:, :], axis=-1).min()
            if contact < MIN_CONTACT_NM:
                skipped.append(f"{distance:.3f} nm/{angle:g} deg ({contact:.3f} nm)")
                continue
            configs.append(
                Configuration(numbers, xyz, source=spec.source, trajectory_id=trajectory_offset + a, frame=d)
            )
    if skipped:
        logger.warning(
            "%s scan: skipped %d geometries with an intermolecular contact below %.2f nm: %s",
            dimer, len(skipped), MIN_CONTACT_NM, "; ".join(skipped),
        )
    logger.info("%s dimer scan: %d configurations", dimer, len(configs))
    return configs
