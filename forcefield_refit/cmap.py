"""2-D phi/psi profiles and CMAP fits.

**Scan.** :func:`cmap_scan` relaxes the molecule on a ``n x n`` grid of (phi, psi) targets with two harmonic
dihedral restraints (restraint energies are not recorded). 24 x 24 is the CMAP grid; a coarser grid
(e.g. 8 x 8) is allowed for speed: the fit below interpolates it smoothly onto 24 x 24.

**Fit.** :func:`fit_cmap` fits a 2-D Fourier series
``sum_{|m|,|n| <= L} a_mn cos(m phi + n psi) + b_mn sin(m phi + n psi)`` (weighted ridge least squares) to
``residual = target - MM`` at the *achieved* angles and samples it on the ``resolution x resolution`` CMAP grid
(mean removed: a CMAP offset is arbitrary).

**Choice of baseline (documented decision).** amber14/ff14SB has no CMAP. The correction is fitted **on
top of** the existing phi/psi Fourier terms: ``MM`` is the full force field without any CMAP, as in
CHARMM36, so the written files only *add* a CMAP and leave the base torsions untouched (users keep
loading the base force field unchanged). Passing a baseline with the phi/psi terms removed instead
(``remove_torsions``) makes the map absorb them; then the same quadruples must be zeroed in the
written torsions by the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from forcefield_refit.energy import EnergyFunction
from forcefield_refit.exceptions import RefitInputError
from forcefield_refit.profiles import _rotate_to, dihedral, dihedral_gradient, moving_side, wrap_angle
from forcefield_refit.terms import CmapTerm
from forcefield_refit.torsion_fit import boltzmann_weights

logger = logging.getLogger(__name__)

#: Highest Fourier order used by default in the 2-D fit.
MAX_DEFAULT_ORDER = 8


@dataclass
class CmapProfile:
    """Result of :func:`cmap_scan`.

    Attributes
    ----------
    target_phi_deg, target_psi_deg : np.ndarray
        ``[M]`` restraint targets, degrees.
    phi_deg, psi_deg : np.ndarray
        ``[M]`` achieved angles, degrees.
    energies_kj : np.ndarray
        ``[M]`` unrestrained energies relative to their minimum, kJ/mol.
    positions : np.ndarray
        ``[M, N, 3]`` relaxed geometries, nm.
    phi_atoms, psi_atoms : tuple of int
        The two dihedrals (0-based).
    """

    target_phi_deg: np.ndarray
    target_psi_deg: np.ndarray
    phi_deg: np.ndarray
    psi_deg: np.ndarray
    energies_kj: np.ndarray
    positions: np.ndarray
    phi_atoms: tuple[int, int, int, int]
    psi_atoms: tuple[int, int, int, int]


def _relax_two(
    energy_fn: EnergyFunction,
    start: np.ndarray,
    restraints: Sequence[tuple[tuple[int, int, int, int], float]],
    restraint_k: float,
    max_iterations: int,
) -> np.ndarray:
    shape = start.shape

    def objective(x: np.ndarray) -> tuple[float, np.ndarray]:
        pos = x.reshape(shape)
        energy, forces = energy_fn(pos)
        grad = -np.asarray(forces, dtype=float).copy()
        for atoms, target in restraints:
            delta = float(wrap_angle(dihedral(pos, atoms) - target))
            grad[list(atoms)] += restraint_k * delta * dihedral_gradient(pos, atoms)
            energy += 0.5 * restraint_k * delta**2
        return energy, grad.ravel()

    result = minimize(
        objective, start.ravel(), jac=True, method="L-BFGS-B",
        options={"maxiter": max_iterations, "gtol": 1e-6, "ftol": 1e-14, "maxcor": 30},
    )
    return np.asarray(result.x, dtype=float).reshape(shape)


def cmap_scan(
    energy_fn: EnergyFunction,
    positions: np.ndarray,
    phi_atoms: Sequence[int],
    psi_atoms: Sequence[int],
    bonds: Sequence[tuple[int, int]],
    n_grid: int = 24,
    restraint_k: float = 2000.0,
    max_iterations: int = 300,
) -> CmapProfile:
    """Relaxed 2-D scan over a ``n_grid x n_grid`` phi/psi grid from -180 degrees (serpentine order).

    Parameters
    ----------
    energy_fn : EnergyFunction
        ``positions [N, 3] nm -> (kJ/mol, forces kJ/mol/nm)``.
    positions : np.ndarray
        ``[N, 3]`` start, nm.
    phi_atoms, psi_atoms : sequence of 4 int
        Bonded dihedrals sharing three atoms (``phi = a-b-c-d``, ``psi = b-c-d-e``).
    bonds : sequence of (int, int)
        Covalent bonds (for the rigid pre-rotations).
    n_grid : int
        Points per angle, even, >= 4 (24 for CMAP; 6-12 for quick fits).
    restraint_k : float
        kJ/mol/rad^2.
    max_iterations : int
        L-BFGS-B cap per point.

    Returns
    -------
    CmapProfile
    """
    phi_q = tuple(int(i) for i in phi_atoms)
    psi_q = tuple(int(i) for i in psi_atoms)
    if phi_q[1:] != psi_q[:3]:
        raise RefitInputError(
            f"phi_atoms={phi_q}, psi_atoms={psi_q}; allowed: psi = phi[1:] + (e,) as CMAP needs. "
            "Hint: use backbone_dihedrals()."
        )
    if n_grid < 4 or n_grid % 2:
        raise RefitInputError(f"n_grid={n_grid}; allowed: even and >= 4. Hint: 24 (CMAP) or 8 for speed.")
    move_phi = np.asarray(moving_side(bonds, phi_q), dtype=int)
    move_psi = np.asarray(moving_side(bonds, psi_q), dtype=int)
    axis = -180.0 + 360.0 * np.arange(n_grid) / n_grid
    current = np.array(positions, dtype=float)
    records = []
    with threadpool_limits(1):
        for i, phi_t in enumerate(axis):
            psis = axis if i % 2 == 0 else axis[::-1]
            for psi_t in psis:
                targets = (np.radians(phi_t), np.radians(psi_t))
                current = _rotate_to(current, phi_q, move_phi, targets[0])
                current = _rotate_to(current, psi_q, move_psi, targets[1])
                current = _relax_two(
                    energy_fn, current, [(phi_q, targets[0]), (psi_q, targets[1])],  # type: ignore[list-item]
                    restraint_k, max_iterations,
                )
                records.append((phi_t, psi_t, current.copy(), energy_fn(current)[0]))
    energies = np.array([r[3] for r in records])
    stack = np.stack([r[2] for r in records])
    logger.info("cmap scan: %d points", len(records))
    return CmapProfile(
        target_phi_deg=np.array([r[0] for r in records]),
        target_psi_deg=np.array([r[1] for r in records]),
        phi_deg=np.degrees([dihedral(x, phi_q) for x in stack]),
        psi_deg=np.degrees([dihedral(x, psi_q) for x in stack]),
        energies_kj=energies - energies.min(),
        positions=stack,
        phi_atoms=phi_q,  # type: ignore[arg-type]
        psi_atoms=psi_q,  # type: ignore[arg-type]
    )


def _basis(phi: np.ndarray, psi: np.ndarray, order: int) -> np.ndarray:
    cols = [np.ones_like(phi)]
    for m in range(order + 1):
        for n in range(-order, order + 1):
            if m == 0 and n <= 0:
                continue
            arg = m * phi + n * psi
            cols += [np.cos(arg), np.sin(arg)]
    return np.stack(cols, axis=1)


def default_order(n_points: int) -> int:
    """Largest Fourier order ``L <= 8`` with ``(2L + 1)^2 <= 0.8 n_points`` unknowns (at least 1)."""
    order = 1
    while order < MAX_DEFAULT_ORDER and (2 * (order + 1) + 1) ** 2 <= 0.8 * n_points:
        order += 1
    return order


def fit_cmap(
    phi_deg: np.ndarray,
    psi_deg: np.ndarray,
    residual_kj: np.ndarray,
    types: tuple[str, str, str, str, str],
    resolution: int = 24,
    order: int | None = None,
    ridge: float = 1e-6,
    temperature_k: float | None = None,
    weight_energy_kj: np.ndarray | None = None,
) -> CmapTerm:
    """Fit a smooth 2-D correction to ``residual = target - MM`` and sample it on the CMAP grid.

    Parameters
    ----------
    phi_deg, psi_deg : np.ndarray
        ``[M]`` achieved angles, degrees (several profiles may be concatenated for a joint fit).
    residual_kj : np.ndarray
        ``[M]`` kJ/mol.
    types : tuple of 5 str
        Atom types of the chain (phi = 1-2-3-4, psi = 2-3-4-5).
    resolution : int
        CMAP grid size (24).
    order : int, optional
        Fourier order ``L``; :func:`default_order` of ``M`` when omitted.
    ridge : float
        Ridge penalty on non-constant coefficients (dimensionless, relative to weighted (kJ/mol)^2).
    temperature_k : float or None
        Boltzmann weighting temperature (K) on ``weight_energy_kj`` (or the residual).
    weight_energy_kj : np.ndarray, optional
        ``[M]`` energies for the weights (the target profile).

    Returns
    -------
    CmapTerm
        ``grid_kj`` with zero mean; ``fit_rmse_kj`` = weighted RMSE of the series at the data points.

    Examples
    --------
    >>> g = np.radians(np.arange(-180.0, 180.0, 45.0))
    >>> phi, psi = (a.ravel() for a in np.meshgrid(g, g, indexing="ij"))
    >>> term = fit_cmap(np.degrees(phi), np.degrees(psi), np.cos(phi), ("C", "N", "CX", "C", "N"), order=1)
    >>> round(float(term.grid_kj[12, 0]), 6)  # phi = 0
    1.0
    """
    phi = np.radians(np.asarray(phi_deg, dtype=float))
    psi = np.radians(np.asarray(psi_deg, dtype=float))
    y = np.asarray(residual_kj, dtype=float)
    if not (phi.ndim == 1 and phi.shape == psi.shape == y.shape) or not np.all(np.isfinite(y)):
        raise RefitInputError(
            f"phi_deg {phi.shape}, psi_deg {psi.shape}, residual_kj {y.shape}; allowed: equal-length finite 1-D "
            "arrays. Hint: pass CmapProfile.phi_deg, .psi_deg and target minus MM."
        )
    order = default_order(y.size) if order is None else int(order)
    n_unknowns = (2 * order + 1) ** 2
    if order < 1 or y.size < n_unknowns:
        raise RefitInputError(
            f"order={order} needs {n_unknowns} points; got {y.size}; allowed: order >= 1 and at least "
            "(2 order + 1)^2 scan points. Hint: a finer 2-D grid or a lower order."
        )
    if resolution < 4 or resolution % 2:
        raise RefitInputError(f"resolution={resolution}; allowed: even, >= 4. Hint: 24.")
    w = boltzmann_weights(weight_energy_kj if weight_energy_kj is not None else y, temperature_k)
    design = _basis(phi, psi, order)
    a = design * np.sqrt(w)[:, None]
    b = y * np.sqrt(w)
    if ridge > 0:
        penalty = np.sqrt(ridge) * np.eye(design.shape[1])[1:]
        a, b = np.vstack([a, penalty]), np.concatenate([b, np.zeros(design.shape[1] - 1)])
    coef, *_ = np.linalg.lstsq(a, b, rcond=None)
    resid = design @ coef - y
    resid -= np.sum(w * resid) / np.sum(w)
    rmse = float(np.sqrt(np.sum(w * resid**2) / np.sum(w)))
    axis = np.radians(-180.0 + 360.0 * np.arange(resolution) / resolution)
    gphi, gpsi = np.meshgrid(axis, axis, indexing="ij")
    grid = (_basis(gphi.ravel(), gpsi.ravel(), order) @ coef).reshape(resolution, resolution)
    logger.info("cmap fit %s: order %d, %d points, RMSE %.4f kJ/mol", types, order, y.size, rmse)
    return CmapTerm(types, grid - grid.mean(), fit_rmse_kj=rmse)
