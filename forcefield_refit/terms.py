"""Parameter containers beyond 1-D torsions: phi/psi CMAP grids, pair-specific LJ (NBFIX), H-bond terms.

Package units: kJ/mol, nm, degrees (in names ending ``_deg``). Writers convert to each format's units.

CMAP grid convention used here (and by CHARMM and GROMACS files): ``grid_kj[i, j]`` is the energy at
``phi = -180 + i * 360 / n`` and ``psi = -180 + j * 360 / n`` degrees (phi-major). OpenMM's
``CMAPTorsionForce`` stores ``energy[i + n * j]`` with angles starting at 0 degrees; the conversion lives in
:func:`openmm_cmap_values` only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from forcefield_refit.exceptions import RefitInputError
from forcefield_refit.torsions import FourierTorsion

logger = logging.getLogger(__name__)

#: Relative tolerance under which two copies of one parameter set count as identical.
_SAME_TOL = 1e-9


@dataclass
class CmapTerm:
    """A phi/psi correction map for one five-atom-type chain ``a-b-c-d-e`` (phi = a-b-c-d, psi = b-c-d-e).

    Attributes
    ----------
    types : tuple of 5 str
        Atom types, e.g. ``("protein-C", "protein-N", "protein-CX", "protein-C", "protein-N")``.
    grid_kj : np.ndarray
        Shape ``[n, n]``, kJ/mol, ``grid_kj[i, j]`` at ``phi = -180 + 360 i / n``, ``psi = -180 + 360 j / n``.
    fit_rmse_kj : float or None
        RMSE of the fit that produced the grid (kJ/mol).

    Examples
    --------
    >>> term = CmapTerm(("C", "N", "CX", "C", "N"), np.zeros((24, 24)))
    >>> term.resolution
    24
    """

    types: tuple[str, str, str, str, str]
    grid_kj: np.ndarray
    fit_rmse_kj: float | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        grid = np.asarray(self.grid_kj, dtype=float)
        if grid.ndim != 2 or grid.shape[0] != grid.shape[1] or grid.shape[0] < 4 or grid.shape[0] % 2:
            raise RefitInputError(
                f"grid_kj has shape {grid.shape}; allowed: square [n, n], n even and >= 4 (CMAP uses 24). "
                "Hint: build it with fit_cmap()."
            )
        if len(self.types) != 5:
            raise RefitInputError(
                f"types={self.types}; allowed: five atom types (phi a-b-c-d, psi b-c-d-e). Hint: C N CX C N."
            )
        self.grid_kj = grid

    @property
    def resolution(self) -> int:
        """Number of grid points per angle."""
        return int(self.grid_kj.shape[0])


def openmm_cmap_values(grid_kj: np.ndarray) -> list[float]:
    """Flatten a phi-major grid starting at -180 degrees into OpenMM's ``CMAPTorsionForce`` map order.

    Parameters
    ----------
    grid_kj : np.ndarray
        ``[n, n]`` kJ/mol in the convention of :class:`CmapTerm`.

    Returns
    -------
    list of float
        ``n * n`` values, ``energy[i + n * j]`` at ``phi = 360 i / n``, ``psi = 360 j / n`` degrees.
    """
    grid = np.asarray(grid_kj, dtype=float)
    n = grid.shape[0]
    shifted = np.roll(np.roll(grid, -n // 2, axis=0), -n // 2, axis=1)  # row 0 is now phi = 0
    return [float(v) for v in shifted.T.ravel()]


@dataclass
class NBFixPair:
    """Pair-specific Lennard-Jones parameters for two atom types (replace the combining rule for that pair).

    ``E(r) = epsilon_kj ((rmin_nm / r)^12 - 2 (rmin_nm / r)^6)``; ``rmin_nm = 2^(1/6) sigma``.

    Attributes
    ----------
    types : tuple of 2 str
        Atom types.
    rmin_nm : float
        Distance of the minimum (full Rmin, not Rmin/2), nm.
    epsilon_kj : float
        Well depth (positive), kJ/mol.
    fit_rmse_kj : float or None
        RMSE of the fit that produced the pair, kJ/mol.

    Examples
    --------
    >>> pair = NBFixPair(("OW", "HW"), 0.2, 0.5)
    >>> round(float(pair.energy(0.2)), 6)
    -0.5
    """

    types: tuple[str, str]
    rmin_nm: float
    epsilon_kj: float
    fit_rmse_kj: float | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if len(self.types) != 2 or not self.rmin_nm > 0 or not self.epsilon_kj >= 0:
            raise RefitInputError(
                f"NBFixPair(types={self.types}, rmin_nm={self.rmin_nm}, epsilon_kj={self.epsilon_kj}); allowed: "
                "two types, rmin_nm > 0, epsilon_kj >= 0. Hint: fit it with fit_nbfix()."
            )

    @property
    def sigma_nm(self) -> float:
        """``sigma = rmin / 2^(1/6)``, nm."""
        return float(self.rmin_nm / 2.0 ** (1.0 / 6.0))

    def energy(self, r_nm: np.ndarray | float) -> np.ndarray:
        """LJ energy at distance ``r_nm`` (nm, any shape), kJ/mol."""
        x = (self.rmin_nm / np.asarray(r_nm, dtype=float)) ** 6
        return self.epsilon_kj * (x * x - 2.0 * x)


def _series_key(torsion: FourierTorsion) -> tuple[str, ...]:
    return min(tuple(torsion.types), tuple(torsion.types)[::-1])


def _same_terms(first: FourierTorsion, second: FourierTorsion) -> bool:
    a = sorted((n, round(p % 360.0, 6), k) for n, p, k in first.terms)
    b = sorted((n, round(p % 360.0, 6), k) for n, p, k in second.terms)
    return len(a) == len(b) and all(
        x[0] == y[0] and x[1] == y[1] and abs(x[2] - y[2]) <= _SAME_TOL * max(1.0, abs(x[2]))
        for x, y in zip(a, b, strict=True)
    )


def merge_torsions(torsions: Iterable[FourierTorsion]) -> list[FourierTorsion]:
    """Drop exact duplicates (either direction) and reject conflicting series for one type quadruple.

    Parameters
    ----------
    torsions : iterable of FourierTorsion
        Series to write together.

    Returns
    -------
    list of FourierTorsion
        One series per type quadruple, in first-seen order.

    Raises
    ------
    RefitInputError
        If one quadruple (or its reverse) carries two different term lists.

    Examples
    --------
    >>> t = FourierTorsion(("A", "B", "C", "D"), [(1, 0.0, 1.0)])
    >>> len(merge_torsions([t, FourierTorsion(("D", "C", "B", "A"), [(1, 0.0, 1.0)])]))
    1
    """
    seen: dict[tuple[str, ...], FourierTorsion] = {}
    for torsion in torsions:
        key = _series_key(torsion)
        if key in seen:
            if not _same_terms(seen[key], torsion):
                raise RefitInputError(
                    f"torsions: conflicting parameters for atom-type quadruple {key}: {seen[key].terms} vs "
                    f"{torsion.terms}; allowed: one series per quadruple. Hint: fit dihedrals that share types "
                    "jointly (fit_torsions) instead of one profile at a time."
                )
            continue
        seen[key] = torsion
    return list(seen.values())


def merge_pairs(pairs: Sequence[NBFixPair]) -> list[NBFixPair]:
    """Like :func:`merge_torsions` for NBFIX pairs (a pair and its reverse are the same pair)."""
    seen: dict[tuple[str, ...], NBFixPair] = {}
    for pair in pairs:
        key = tuple(sorted(pair.types))
        if key in seen:
            other = seen[key]
            if not (np.isclose(other.rmin_nm, pair.rmin_nm) and np.isclose(other.epsilon_kj, pair.epsilon_kj)):
                raise RefitInputError(
                    f"nbfix: conflicting parameters for atom-type pair {key}; allowed: one (rmin, epsilon) per pair. "
                    "Hint: fit all dimer profiles of that pair jointly (fit_nbfix with several profiles)."
                )
            continue
        seen[key] = pair
    return list(seen.values())


def merge_cmaps(cmaps: Sequence[CmapTerm]) -> list[CmapTerm]:
    """Reject two different CMAP grids for one five-type chain (a chain and its reverse differ in CMAP)."""
    seen: dict[tuple[str, ...], CmapTerm] = {}
    for cmap in cmaps:
        key = tuple(cmap.types)
        if key in seen:
            if not np.allclose(seen[key].grid_kj, cmap.grid_kj):
                raise RefitInputError(
                    f"cmaps: conflicting grids for atom types {key}; allowed: one grid per type chain. "
                    "Hint: fit the profiles of that chain jointly (fit_cmap with several profiles)."
                )
            continue
        seen[key] = cmap
    return list(seen.values())
