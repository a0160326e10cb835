"""Relaxed, restrained torsion scans and re-evaluation of energies on the scanned geometries.

A scan drives one dihedral over a grid of target angles. At each target the geometry is minimised
(scipy L-BFGS-B) on ``E(x) + 1/2 k (phi(x) - phi_0)^2`` with the periodic difference wrapped into
``[-pi, pi)`` and the analytic restraint gradient. The restraint never enters the recorded
energies: after minimisation the *unrestrained* energy function is evaluated again.

Dihedral convention: IUPAC/OpenMM, ``phi = atan2(|b2| b1.(b2 x b3), (b1 x b2).(b2 x b3))`` with
``b1 = x1 - x0``, ``b2 = x2 - x1``, ``b3 = x3 - x2``; radians in ``(-pi, pi]``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from forcefield_refit.energy import EnergyFunction
from forcefield_refit.exceptions import RefitInputError
from forcefield_refit.torsions import check_dihedral_bonded

logger = logging.getLogger(__name__)


@dataclass
class TorsionProfile:
    """Result of :func:`torsion_scan`.

    Attributes
    ----------
    angles_deg : np.ndarray
        Target (restraint) angles, shape ``[K]``, degrees.
    energies_kj : np.ndarray
        Unrestrained energies of the relaxed geometries relative to their minimum, shape ``[K]``, kJ/mol.
    achieved_angles_deg : np.ndarray
        Dihedral actually reached after relaxation, shape ``[K]``, degrees in ``(-180, 180]``.
        Fit against these, not against ``angles_deg``.
    positions : np.ndarray
        Relaxed geometries, shape ``[K, N, 3]``, nm.
    dihedral_atoms : tuple of int
        The four atom indices (0-based) of the scanned dihedral.
    restraint_energies_kj : np.ndarray
        Restraint energy left at each relaxed geometry (diagnostic, not included above), ``[K]``, kJ/mol.

    Examples
    --------
    >>> p = TorsionProfile(np.array([0.0]), np.array([0.0]), np.array([0.1]), np.zeros((1, 4, 3)),
    ...                    (0, 1, 2, 3), np.array([0.0]))
    >>> p.positions.shape
    (1, 4, 3)
    """

    angles_deg: np.ndarray
    energies_kj: np.ndarray
    achieved_angles_deg: np.ndarray
    positions: np.ndarray
    dihedral_atoms: tuple[int, int, int, int]
    restraint_energies_kj: np.ndarray


def dihedral(positions: np.ndarray, atoms: Sequence[int]) -> float:
    """Dihedral angle of four atoms.

    Parameters
    ----------
    positions : np.ndarray
        Shape ``[N, 3]``, nm (any length unit works).
    atoms : sequence of 4 int
        Atom indices.

    Returns
    -------
    float
        Angle in radians, ``(-pi, pi]``.

    Examples
    --------
    >>> x = np.array([[1.0, 0, 0], [0, 0, 0], [0, 0, 1], [0, 1, 1]])
    >>> round(float(np.degrees(dihedral(x, (0, 1, 2, 3)))), 6)
    90.0
    """
    x0, x1, x2, x3 = (np.asarray(positions[i], dtype=float) for i in atoms)
    b1, b2, b3 = x1 - x0, x2 - x1, x3 - x2
    m = np.cross(b1, b2)
    n = np.cross(b2, b3)
    return float(np.arctan2(np.linalg.norm(b2) * np.dot(b1, n), np.dot(m, n)))


def dihedral_gradient(positions: np.ndarray, atoms: Sequence[int]) -> np.ndarray:
    """Analytic gradient of :func:`dihedral` with respect to the four atoms' positions.

    Parameters
    ----------
    positions : np.ndarray
        Shape ``[N, 3]``, nm.
    atoms : sequence of 4 int
        Atom indices.

    Returns
    -------
    np.ndarray
        ``d phi / d x`` for the four atoms, shape ``[4, 3]``, rad/nm (Blondel & Karplus 1996).
    """
    x0, x1, x2, x3 = (np.asarray(positions[i], dtype=float) for i in atoms)
    f = x0 - x1
    g = x1 - x2
    h = x3 - x2
    a = np.cross(f, g)
    b = np.cross(h, g)
    a2 = float(np.dot(a, a))
    b2 = float(np.dot(b, b))
    gn = float(np.linalg.norm(g))
    if a2 < 1e-20 or b2 < 1e-20:
        raise RefitInputError(
            f"atoms={tuple(atoms)} are collinear (dihedral undefined); allowed: four atoms with "
            "non-collinear consecutive bonds. Hint: check the dihedral indices and the geometry."
        )
    fg = float(np.dot(f, g))
    hg = float(np.dot(h, g))
    d0 = -gn / a2 * a
    d3 = gn / b2 * b
    d1 = gn / a2 * a + fg / (a2 * gn) * a - hg / (b2 * gn) * b
    d2 = -gn / b2 * b - fg / (a2 * gn) * a + hg / (b2 * gn) * b
    return np.stack([d0, d1, d2, d3])


def wrap_angle(angle_rad: np.ndarray | float) -> np.ndarray:
    """Wrap angles into ``[-pi, pi)`` (radians), elementwise."""
    return (np.asarray(angle_rad, dtype=float) + np.pi) % (2.0 * np.pi) - np.pi


def moving_side(bonds: Iterable[tuple[int, int]], dihedral_atoms: Sequence[int]) -> list[int]:
    """Atoms on the ``atoms[2]`` side of the central bond, the ones a rigid rotation moves.

    Parameters
    ----------
    bonds : iterable of (int, int)
        Covalent bonds (0-based atom indices), e.g. from ``topology.bonds()``.
    dihedral_atoms : sequence of 4 int
        ``(a, b, c, d)``; the side containing ``c`` and ``d`` is returned.

    Returns
    -------
    list of int
        Sorted atom indices including ``c`` and ``d``.

    Raises
    ------
    RefitMatchError
        If the four atoms are not bonded in a chain.
    """
    bonds = list(bonds)
    check_dihedral_bonded(bonds, dihedral_atoms)
    a, b, c, d = dihedral_atoms
    neighbours: dict[int, set[int]] = {}
    for i, j in bonds:
        neighbours.setdefault(i, set()).add(j)
        neighbours.setdefault(j, set()).add(i)
    seen = {c}
    stack = [c]
    while stack:
        atom = stack.pop()
        for other in neighbours.get(atom, ()):
            if other == b and atom == c:
                continue
            if other not in seen:
                seen.add(other)
                stack.append(other)
    if b in seen:
        raise RefitInputError(
            f"dihedral_atoms={tuple(dihedral_atoms)}: the bond {b}-{c} is in a ring, so no side can be "
            "rotated rigidly; allowed: a rotatable (non-ring) central bond. Hint: pass moving_atoms=None."
        )
    return sorted(seen)


def _rotate_to(positions: np.ndarray, atoms: Sequence[int], moving: np.ndarray, target_rad: float) -> np.ndarray:
    """Rotate ``moving`` atoms rigidly about the b->c axis so that the dihedral equals ``target_rad``."""
    b, c = positions[atoms[1]], positions[atoms[2]]
    axis = (c - b) / np.linalg.norm(c - b)
    delta = float(wrap_angle(target_rad - dihedral(positions, atoms)))
    cos, sin = np.cos(delta), np.sin(delta)
    rel = positions[moving] - c
    rotated = rel * cos + np.cross(axis, rel) * sin + np.outer(rel @ axis, axis) * (1.0 - cos)
    out = positions.copy()
    out[moving] = rotated + c
    return out


def _validate_scan_input(
    positions: np.ndarray,
    dihedral_atoms: Sequence[int],
    angles_deg: np.ndarray,
    restraint_k: float,
    max_iterations: int,
) -> None:
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise RefitInputError(
            f"positions has shape {positions.shape}; allowed: [N, 3] in nm. Hint: pass a single frame."
        )
    n_atoms = positions.shape[0]
    if (
        len(dihedral_atoms) != 4
        or len(set(dihedral_atoms)) != 4
        or not all(0 <= int(i) < n_atoms for i in dihedral_atoms)
    ):
        raise RefitInputError(
            f"dihedral_atoms={tuple(dihedral_atoms)}; allowed: four distinct 0-based indices "
            f"below {n_atoms}. "
            "Hint: OpenMM atom.index values are 0-based."
        )
    if angles_deg.ndim != 1 or angles_deg.size == 0 or not np.all(np.isfinite(angles_deg)):
        raise RefitInputError(
            f"angles_deg has shape {angles_deg.shape}; allowed: a non-empty 1-D grid of finite angles in "
            "degrees. Hint: np.arange(-180, 180, 30)."
        )
    if not restraint_k > 0:
        raise RefitInputError(
            f"restraint_k={restraint_k}; allowed: > 0 kJ/mol/rad^2. Hint: 2000 keeps the dihedral within ~1 deg."
        )
    if max_iterations < 1:
        raise RefitInputError(f"max_iterations={max_iterations}; allowed: >= 1. Hint: 500.")


#: Energy returned for an L-BFGS-B trial step on which the restrained dihedral is undefined, kJ/mol.
_REJECTED_STEP_KJ = 1.0e9


def _relax(
    energy_fn: EnergyFunction,
    start: np.ndarray,
    atoms: Sequence[int],
    target_rad: float,
    restraint_k: float,
    max_iterations: int,
) -> np.ndarray:
    """Minimise energy + harmonic dihedral restraint from ``start``; return the relaxed positions [N, 3]."""
    shape = start.shape
    index = list(atoms)

    def objective(x: np.ndarray) -> tuple[float, np.ndarray]:
        pos = x.reshape(shape)
        try:
            restraint_gradient = dihedral_gradient(pos, atoms)
        except RefitInputError:  # a trial step far off made the dihedral undefined: the line search backs off
            return _REJECTED_STEP_KJ, np.zeros(pos.size)
        energy, forces = energy_fn(pos)
        delta = float(wrap_angle(dihedral(pos, atoms) - target_rad))
        grad = -np.asarray(forces, dtype=float).copy()
        grad[index] += restraint_k * delta * restraint_gradient
        return energy + 0.5 * restraint_k * delta**2, grad.ravel()

    result = minimize(
        objective,
        start.ravel(),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iterations, "gtol": 1e-6, "ftol": 1e-14, "maxcor": 30},
    )
    logger.debug("target %.1f deg: %s after %d iterations", np.degrees(target_rad), result.message, result.nit)
    return np.asarray(result.x, dtype=float).reshape(shape)


def torsion_scan(
    energy_fn: EnergyFunction,
    positions: np.ndarray,
    dihedral_atoms: Sequence[int],
    angles_deg: Sequence[float] | np.ndarray,
    restraint_k: float = 2000.0,
    max_iterations: int = 500,
    moving_atoms: Sequence[int] | None = None,
    progress: bool = False,
) -> TorsionProfile:
    """Relaxed, restrained scan of one dihedral.

    Parameters
    ----------
    energy_fn : EnergyFunction
        ``positions [N, 3] nm -> (energy kJ/mol, forces [N, 3] kJ/mol/nm)``.
    positions : np.ndarray
        Starting geometry, shape ``[N, 3]``, nm.
    dihedral_atoms : sequence of 4 int
        0-based atom indices of the dihedral.
    angles_deg : array_like
        Target angles, shape ``[K]``, degrees, scanned in the given order; each point starts from the
        previous relaxed geometry.
    restraint_k : float
        Harmonic restraint constant, kJ/mol/rad^2.
    max_iterations : int
        L-BFGS-B iteration cap per grid point.
    moving_atoms : sequence of int, optional
        Atoms rotated rigidly about the central bond to each target before relaxing (see
        :func:`moving_side`); without it the restraint alone drives the dihedral.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    TorsionProfile
        Unrestrained relative energies, achieved angles and relaxed geometries.

    Examples
    --------
    >>> def flat(x):
    ...     return 0.0, np.zeros_like(x)
    >>> x = np.array([[1.0, 0, 0], [0, 0, 0], [0, 0, 1], [0, 1, 1]])
    >>> p = torsion_scan(flat, x, (0, 1, 2, 3), [60.0])
    >>> round(float(p.achieved_angles_deg[0]), 3)
    60.0
    """
    start = np.array(positions, dtype=float)
    grid = np.asarray(angles_deg, dtype=float)
    _validate_scan_input(start, dihedral_atoms, grid, restraint_k, max_iterations)
    atoms = tuple(int(i) for i in dihedral_atoms)
    moving = None if moving_atoms is None else np.asarray(sorted(moving_atoms), dtype=int)
    iterator: Iterable[float] = grid
    if progress:
        from tqdm.auto import tqdm  # optional dependency, only when asked

        iterator = tqdm(grid, desc="torsion scan", unit="pt")
    frames, energies, achieved, restraint = [], [], [], []
    current = start
    for target_deg in iterator:
        target = float(np.radians(target_deg))
        if moving is not None:
            current = _rotate_to(current, atoms, moving, target)
        current = _relax(energy_fn, current, atoms, target, restraint_k, max_iterations)
        phi = dihedral(current, atoms)
        frames.append(current.copy())
        energies.append(energy_fn(current)[0])
        achieved.append(np.degrees(phi))
        restraint.append(0.5 * restraint_k * float(wrap_angle(phi - target)) ** 2)
    energy_array = np.asarray(energies)
    logger.info(
        "scanned dihedral %s over %d points; max |achieved - target| = %.3f deg",
        atoms,
        grid.size,
        float(np.max(np.abs(np.degrees(wrap_angle(np.radians(np.asarray(achieved) - grid)))))),
    )
    return TorsionProfile(
        angles_deg=grid,
        energies_kj=energy_array - energy_array.min(),
        achieved_angles_deg=np.asarray(achieved),
        positions=np.stack(frames),
        dihedral_atoms=atoms,  # type: ignore[arg-type]
        restraint_energies_kj=np.asarray(restraint),
    )


def evaluate_profile(energy_fn: EnergyFunction, positions_stack: np.ndarray, relative: bool = True) -> np.ndarray:
    """Evaluate an energy function on every geometry of a scan (e.g. the MM baseline).

    Parameters
    ----------
    energy_fn : EnergyFunction
        ``positions [N, 3] nm -> (energy kJ/mol, forces)``.
    positions_stack : np.ndarray
        Geometries, shape ``[K, N, 3]``, nm (``TorsionProfile.positions``).
    relative : bool
        Subtract the minimum (default), so the result is comparable to ``TorsionProfile.energies_kj``.

    Returns
    -------
    np.ndarray
        Energies, shape ``[K]``, kJ/mol.
    """
    stack = np.asarray(positions_stack, dtype=float)
    if stack.ndim != 3 or stack.shape[2] != 3 or stack.shape[0] == 0:
        raise RefitInputError(
            f"positions_stack has shape {stack.shape}; allowed: [K, N, 3] with K >= 1, nm. "
            "Hint: pass TorsionProfile.positions."
        )
    energies = np.array([energy_fn(frame)[0] for frame in stack], dtype=float)
    return energies - energies.min() if relative else energies


def relax_points(
    energy_fn: EnergyFunction,
    profile: TorsionProfile,
    restraint_k: float = 2000.0,
    max_iterations: int = 500,
) -> TorsionProfile:
    """Relax every point of an existing scan on another surface, each from its own geometry.

    Each frame of ``profile.positions`` is minimised on ``energy_fn`` with the scanned dihedral restrained
    exactly as the scan restrained it (same grid angle ``profile.angles_deg``, same ``restraint_k``),
    independently of its neighbours: on the surface that made the scan the frames stay where they are, on
    another surface the result is that surface's relaxed profile under the same protocol (what BespokeFit
    and ForceBalance compare when they refit against a relaxed QM scan). Restraining at the *achieved*
    angle instead would move every point further toward its unrestrained minimum.

    Parameters
    ----------
    energy_fn : EnergyFunction
        Surface to relax on (e.g. the refit MM System), kJ/mol and kJ/mol/nm.
    profile : TorsionProfile
        Scan whose geometries start the relaxations (e.g. a reference relaxed scan).
    restraint_k : float
        Harmonic restraint constant, kJ/mol/rad^2.
    max_iterations : int
        L-BFGS-B iteration cap per point.

    Returns
    -------
    TorsionProfile
        Same ``angles_deg`` as the input; energies of ``energy_fn`` (unrestrained, relative to
        their minimum) on the relaxed geometries.
    """
    stack = np.asarray(profile.positions, dtype=float)
    targets = np.asarray(profile.angles_deg, dtype=float)
    if stack.ndim != 3 or stack.shape[0] != targets.size:
        raise RefitInputError(
            f"profile.positions has shape {stack.shape} for {targets.size} angles; allowed: [K, N, 3] with one "
            "frame per scan angle. Hint: pass a TorsionProfile from torsion_scan()."
        )
    _validate_scan_input(stack[0], profile.dihedral_atoms, targets, restraint_k, max_iterations)
    atoms = tuple(int(i) for i in profile.dihedral_atoms)
    frames, energies, achieved, restraint = [], [], [], []
    for start, target_deg in zip(stack, targets, strict=True):
        target = float(np.radians(target_deg))
        relaxed = _relax(energy_fn, start, atoms, target, restraint_k, max_iterations)
        phi = dihedral(relaxed, atoms)
        frames.append(relaxed)
        energies.append(energy_fn(relaxed)[0])
        achieved.append(np.degrees(phi))
        restraint.append(0.5 * restraint_k * float(wrap_angle(phi - target)) ** 2)
    energy_array = np.asarray(energies)
    return TorsionProfile(
        angles_deg=targets.copy(),
        energies_kj=energy_array - energy_array.min(),
        achieved_angles_deg=np.asarray(achieved),
        positions=np.stack(frames),
        dihedral_atoms=atoms,  # type: ignore[arg-type]
        restraint_energies_kj=np.asarray(restraint),
    )
