"""Plot a torsion fit: target points and the fitted Fourier series (PNG, matplotlib Agg backend)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from forcefield_refit.exceptions import RefitInputError
from forcefield_refit.torsions import FourierTorsion
from forcefield_refit.units import KJ_TO_KCAL

logger = logging.getLogger(__name__)


def plot_torsion_fit(
    path: str | os.PathLike[str],
    angles_deg: Sequence[float] | np.ndarray,
    target_kj: Sequence[float] | np.ndarray,
    fitted: FourierTorsion,
    title: str = "",
) -> Path:
    """Save a PNG of the target profile and the fitted series.

    The fitted curve is shifted by the constant that best aligns it with the targets (the fit's free
    offset), so both are drawn on the same kJ/mol axis.

    Parameters
    ----------
    path : str or PathLike
        Output PNG.
    angles_deg : array_like
        Dihedral angles, ``[K]``, degrees.
    target_kj : array_like
        Target energies, ``[K]``, kJ/mol.
    fitted : FourierTorsion
        Fitted series.
    title : str
        Plot title.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phi = np.asarray(angles_deg, dtype=float)
    target = np.asarray(target_kj, dtype=float)
    if phi.ndim != 1 or phi.shape != target.shape or phi.size == 0:
        raise RefitInputError(
            f"angles_deg {phi.shape} and target_kj {target.shape}; allowed: non-empty 1-D arrays of equal "
            "length. Hint: pass the arrays given to fit_fourier()."
        )
    offset = float(np.mean(target - fitted.energy(np.radians(phi))))
    grid = np.linspace(-180.0, 180.0, 361)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    try:
        ax.plot(np.mod(phi + 180.0, 360.0) - 180.0, target, "o", label="target")
        ax.plot(grid, fitted.energy(np.radians(grid)) + offset, "-", label="fitted series")
        ax.set_xlabel("dihedral (degrees)")
        ax.set_ylabel("energy (kJ/mol)")
        ax.set_xlim(-180, 180)
        ax.set_title(title or "-".join(fitted.types))
        ax.legend()
        fig.tight_layout()
        out = Path(path)
        fig.savefig(out, dpi=100)
    finally:
        plt.close(fig)
    logger.info("wrote torsion fit plot to %s", out)
    return out


def plot_profile_comparison(
    path: str | os.PathLike[str],
    angles_deg: Sequence[float] | np.ndarray,
    curves_kj: dict[str, np.ndarray],
    title: str = "",
    overwrite: bool = False,
    relative: bool = True,
) -> Path:
    """Save a PNG of several energy profiles over one coordinate (each shifted to its minimum by default).

    Parameters
    ----------
    path : str or PathLike
        Output PNG (not overwritten unless ``overwrite``).
    angles_deg : array_like
        ``[K]`` degrees.
    curves_kj : dict
        ``{label: [K] kJ/mol}``, e.g. target, original force field, refit.
    title : str
        Plot title.
    overwrite : bool
        Replace an existing file.
    relative : bool
        Shift each curve to its minimum (torsions); ``False`` for absolute interaction energies, and then
        ``angles_deg`` may be any coordinate (it is not wrapped).

    Returns
    -------
    pathlib.Path
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(path)
    if out.exists() and not overwrite:
        raise RefitInputError(
            f"path={str(out)!r} exists; allowed: a new file, or overwrite=True. Hint: choose another name."
        )
    phi = np.asarray(angles_deg, dtype=float)
    phi = np.mod(phi + 180.0, 360.0) - 180.0 if relative else phi
    order = np.argsort(phi)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    try:
        for label, energy in curves_kj.items():
            e = np.asarray(energy, dtype=float)
            if e.shape != phi.shape:
                raise RefitInputError(
                    f"curves_kj[{label!r}] has shape {e.shape}; allowed: {phi.shape} like angles_deg. "
                    "Hint: evaluate every curve on the scan geometries."
                )
            shown = (e - e.min()) if relative else e
            ax.plot(phi[order], shown[order] * KJ_TO_KCAL, "o-" if label.startswith("target") else "-",
                    label=label, ms=3)
        ax.set_xlabel("dihedral (degrees)" if relative else "coordinate")
        ax.set_ylabel("energy (kcal/mol)")
        if relative:
            ax.set_xlim(-180, 180)
        ax.set_title(title)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out, dpi=90)
    finally:
        plt.close(fig)
    return out


def plot_cmap_comparison(
    path: str | os.PathLike[str], profile: object, surfaces_kj: dict[str, np.ndarray], overwrite: bool = False
) -> Path:
    """Save a PNG with one phi/psi heat map per surface (each relative to its minimum, kcal/mol).

    Parameters
    ----------
    path : str or PathLike
        Output PNG.
    profile : CmapProfile
        The 2-D scan (its target angles set the grid).
    surfaces_kj : dict
        ``{label: [M] kJ/mol}`` on the scan points.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    pathlib.Path
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(path)
    if out.exists() and not overwrite:
        raise RefitInputError(f"path={str(out)!r} exists; allowed: a new file, or overwrite=True. Hint: rename.")
    phi_t = np.asarray(profile.target_phi_deg)  # type: ignore[attr-defined]
    psi_t = np.asarray(profile.target_psi_deg)  # type: ignore[attr-defined]
    n = int(round(np.sqrt(phi_t.size)))
    order = np.lexsort((psi_t, phi_t))
    fig, axes = plt.subplots(1, len(surfaces_kj), figsize=(4 * len(surfaces_kj), 3.6))
    try:
        for ax, (label, energy) in zip(np.atleast_1d(axes), surfaces_kj.items(), strict=True):
            e = np.asarray(energy, dtype=float)
            grid = ((e - e.min()) * KJ_TO_KCAL)[order].reshape(n, n)
            image = ax.imshow(grid.T, origin="lower", extent=(-180, 180, -180, 180), cmap="viridis")
            ax.set_title(label)
            ax.set_xlabel("phi (deg)")
            ax.set_ylabel("psi (deg)")
            fig.colorbar(image, ax=ax, label="kcal/mol")
        fig.tight_layout()
        fig.savefig(out, dpi=80)
    finally:
        plt.close(fig)
    return out
