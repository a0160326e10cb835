"""Free-energy surfaces (1-D and 2-D) with error bands: histograms, basin differences, JSON/CSV/PNG.

A :class:`FreeEnergySurface` holds F (kJ/mol) on a grid of CV values (torsions in rad, distances in nm) with an
optional standard error per point; unsampled points are NaN. Writers put it in ``STEM.json`` (reloaded by
:func:`load_fes`), ``STEM.csv`` and ``STEM.png`` (torsions plotted in degrees).

>>> fes = FreeEnergySurface.from_values(["x"], ["distance"], [np.array([0.1, 0.2])], np.array([0.0, 1.0]),
...                                     None, 300.0, "example")
>>> fes.free_energy.tolist()
[0.0, 1.0]
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from biomol_nnp.exceptions import InputError
from biomol_nnp.io import atomic_path, write_json_atomic
from biomol_nnp.units import RAD_TO_DEG


def kt_kj_per_mol(temperature_k: float) -> float:
    """k_B T per mole at ``temperature_k`` (K), kJ/mol (OpenMM's gas constant)."""
    import openmm.unit as u

    return float((u.MOLAR_GAS_CONSTANT_R * temperature_k * u.kelvin).value_in_unit(u.kilojoule_per_mole))


@dataclasses.dataclass
class FreeEnergySurface:
    """Free energy on a grid of one or two CVs.

    Attributes
    ----------
    cv_names : list of str
    cv_kinds : list of str
        ``"torsion"`` (rad) or ``"distance"`` (nm) per CV.
    axes : list of ndarray
        Grid values (bin centres) per CV, rad or nm.
    free_energy : ndarray, shape (len(axes[0]), [len(axes[1])])
        F, kJ/mol (lowest point 0; NaN where not sampled).
    uncertainty : ndarray or None
        Standard error of F, kJ/mol, same shape.
    temperature_k : float
    method : str
        How it was computed.
    blocks : ndarray or None
        F of each contiguous block of the samples, kJ/mol, shape (n_blocks, *free_energy.shape), aligned to F
        (histogram surfaces); :meth:`basin_difference` takes its error from them. Not written to files.
    """

    cv_names: list[str]
    cv_kinds: list[str]
    axes: list[np.ndarray]
    free_energy: np.ndarray
    uncertainty: np.ndarray | None
    temperature_k: float
    method: str
    blocks: np.ndarray | None = None

    @classmethod
    def from_values(
        cls,
        cv_names: Sequence[str],
        cv_kinds: Sequence[str],
        axes: Sequence[np.ndarray],
        free_energy: np.ndarray,
        uncertainty: np.ndarray | None,
        temperature_k: float,
        method: str,
        blocks: np.ndarray | None = None,
    ) -> FreeEnergySurface:
        """Validated constructor (shapes agree with the axes, 1 or 2 CVs)."""
        axes = [np.asarray(axis, dtype=float) for axis in axes]
        free_energy = np.asarray(free_energy, dtype=float)
        shape = tuple(len(axis) for axis in axes)
        if not 1 <= len(axes) <= 2 or free_energy.shape != shape:
            raise InputError(f"free_energy of shape {free_energy.shape} does not match the axes {shape} (1 or 2 CVs)")
        if uncertainty is not None and np.shape(uncertainty) != shape:
            raise InputError(f"uncertainty of shape {np.shape(uncertainty)} does not match the axes {shape}")
        return cls(
            list(cv_names),
            list(cv_kinds),
            axes,
            free_energy,
            None if uncertainty is None else np.asarray(uncertainty, dtype=float),
            float(temperature_k),
            method,
            None if blocks is None else np.asarray(blocks, dtype=float),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (NaN as null)."""

        def clean(array: np.ndarray | None) -> Any:
            if array is None:
                return None
            return np.where(np.isfinite(array), array, np.nan).astype(object).tolist()

        data = {
            "cv_names": self.cv_names,
            "cv_kinds": self.cv_kinds,
            "cv_units": ["rad" if kind == "torsion" else "nm" for kind in self.cv_kinds],
            "axes": [axis.tolist() for axis in self.axes],
            "free_energy_kj_mol": clean(self.free_energy),
            "uncertainty_kj_mol": clean(self.uncertainty),
            "temperature_k": self.temperature_k,
            "method": self.method,
        }
        return json.loads(json.dumps(data).replace("NaN", "null"))

    def basin_difference(
        self, basin_a: Sequence[tuple[float, float]], basin_b: Sequence[tuple[float, float]]
    ) -> tuple[float, float]:
        """``F_B - F_A`` (kJ/mol) of two boxes of CV space, and its standard error.

        ``F_X = -kT ln sum_{x in X} exp(-F(x)/kT)``; each basin is one ``(low, high)`` per CV (rad or nm).
        The error is the block standard error of the difference when the surface has ``blocks``, otherwise
        the grid-point errors propagated as if independent (0 without ``uncertainty``).

        >>> fes.basin_difference([(-np.pi, 0.0)], [(0.0, 2.1)])  # doctest: +SKIP
        (8.3, 0.4)
        """
        kt = kt_kj_per_mol(self.temperature_k)
        sums, variances = [], []
        for basin in (basin_a, basin_b):
            mask = self._mask(basin) & np.isfinite(self.free_energy)
            if not mask.any():
                raise InputError(f"basin {list(basin)} contains no sampled grid point of {self.cv_names}")
            weights = np.exp(-(self.free_energy[mask] - np.nanmin(self.free_energy)) / kt)
            sums.append(weights.sum())
            sigma = np.zeros_like(weights) if self.uncertainty is None else np.nan_to_num(self.uncertainty[mask])
            variances.append(float(np.sum((weights / weights.sum() * sigma) ** 2)))
        value = float(-kt * np.log(sums[1] / sums[0]))
        if self.blocks is None:
            return value, float(np.sqrt(sum(variances)))
        masks = [self._mask(basin_a), self._mask(basin_b)]
        per_block = [
            -kt * np.log(np.nansum(np.exp(-block[masks[1]] / kt)) / np.nansum(np.exp(-block[masks[0]] / kt)))
            for block in self.blocks - np.nanmin(self.free_energy)
        ]
        return value, float(np.std(per_block, ddof=1) / np.sqrt(len(per_block)))

    def _mask(self, basin: Sequence[tuple[float, float]]) -> np.ndarray:
        if len(basin) != len(self.axes):
            raise InputError(f"a basin needs one (low, high) per CV {self.cv_names}, got {list(basin)}")
        grids = np.meshgrid(*self.axes, indexing="ij")
        mask = np.ones(self.free_energy.shape, dtype=bool)
        for grid, (low, high) in zip(grids, basin, strict=True):
            mask &= (grid >= low) & (grid < high)
        return mask


def histogram_fes(
    samples: np.ndarray,
    weights: np.ndarray | None,
    edges: Sequence[np.ndarray],
    temperature_k: float,
    cv_names: Sequence[str],
    cv_kinds: Sequence[str],
    method: str = "histogram",
    n_blocks: int = 5,
) -> FreeEnergySurface:
    """F = -kT ln p from a (weighted) histogram of CV samples, with block-average standard errors.

    Parameters
    ----------
    samples : ndarray, shape (n_samples, n_cv)
        CV values in time order, rad or nm.
    weights : ndarray, shape (n_samples,), optional
        Statistical weights (e.g. ``exp(V/kT)`` to unbias).
    edges : list of ndarray
        Bin edges per CV.
    temperature_k : float
    cv_names, cv_kinds : sequence of str
    method : str
    n_blocks : int
        Contiguous blocks for the error: the standard deviation of the block FES over sqrt(n_blocks).

    Returns
    -------
    FreeEnergySurface
        On the bin centres; lowest point 0; NaN in empty bins.
    """
    samples = np.asarray(samples, dtype=float).reshape(len(samples), -1)
    weights = np.ones(len(samples)) if weights is None else np.asarray(weights, dtype=float)
    if len(samples) < n_blocks or samples.shape[1] != len(edges):
        raise InputError(f"histogram_fes needs >= {n_blocks} samples with {len(edges)} CVs, got shape {samples.shape}")
    kt = kt_kj_per_mol(temperature_k)

    def fes_of(rows: slice) -> np.ndarray:
        hist, _ = np.histogramdd(samples[rows], bins=list(edges), weights=weights[rows])
        with np.errstate(divide="ignore"):
            return -kt * np.log(np.where(hist > 0, hist, np.nan) / hist.sum())

    free_energy = fes_of(slice(None))
    bounds = np.linspace(0, len(samples), n_blocks + 1).astype(int)
    blocks = np.array([fes_of(slice(a, b)) for a, b in itertools.pairwise(bounds)])
    blocks -= np.nanmean(blocks - free_energy, axis=tuple(range(1, blocks.ndim)), keepdims=True)
    uncertainty = np.std(blocks, axis=0, ddof=1) / np.sqrt(n_blocks)
    centres = [0.5 * (edge[1:] + edge[:-1]) for edge in edges]
    offset = np.nanmin(free_energy)
    return FreeEnergySurface.from_values(
        cv_names, cv_kinds, centres, free_energy - offset, uncertainty, temperature_k, method, blocks - offset
    )


def load_fes(path: str | os.PathLike) -> FreeEnergySurface:
    """Read a surface written by :func:`write_fes` (``STEM.json``)."""
    data = json.loads(Path(path).read_text())

    def array(values: Any) -> np.ndarray | None:
        return None if values is None else np.array(values, dtype=float)

    return FreeEnergySurface.from_values(
        data["cv_names"],
        data["cv_kinds"],
        [np.array(axis) for axis in data["axes"]],
        np.array(data["free_energy_kj_mol"], dtype=float),
        array(data["uncertainty_kj_mol"]),
        data["temperature_k"],
        data["method"],
    )


def _display(fes: FreeEnergySurface, axis: int) -> tuple[np.ndarray, str]:
    if fes.cv_kinds[axis] == "torsion":
        return fes.axes[axis] * RAD_TO_DEG, f"{fes.cv_names[axis]} (deg)"
    return fes.axes[axis], f"{fes.cv_names[axis]} (nm)"


def plot_fes(fes: FreeEnergySurface, path: str | os.PathLike) -> Path:
    """PNG of a 1-D profile with its error band, or a 2-D surface as filled contours (kJ/mol)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    x, xlabel = _display(fes, 0)
    if len(fes.axes) == 1:
        ax.plot(x, fes.free_energy, color="C0")
        if fes.uncertainty is not None:
            ax.fill_between(x, fes.free_energy - fes.uncertainty, fes.free_energy + fes.uncertainty, alpha=0.3)
        ax.set_ylabel("free energy (kJ/mol)")
    else:
        y, ylabel = _display(fes, 1)
        top = np.nanpercentile(fes.free_energy, 95) if np.isfinite(fes.free_energy).any() else 1.0
        image = ax.contourf(x, y, fes.free_energy.T, levels=np.linspace(0, max(top, 1.0), 25), cmap="viridis")
        fig.colorbar(image, ax=ax, label="free energy (kJ/mol)")
        ax.set_ylabel(ylabel)
    ax.set_xlabel(xlabel)
    ax.set_title(fes.method, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return Path(path)


def write_fes(fes: FreeEnergySurface, output_dir: str | os.PathLike, stem: str) -> dict[str, Path]:
    """Write ``STEM.json``, ``STEM.csv`` (one row per grid point) and ``STEM.png``; return the paths by role."""
    output = Path(output_dir)
    files = {f"{stem}_json": write_json_atomic(output / f"{stem}.json", fes.to_dict())}
    grids = np.meshgrid(*fes.axes, indexing="ij")
    sigma = np.full(fes.free_energy.shape, np.nan) if fes.uncertainty is None else fes.uncertainty
    units = ["rad" if kind == "torsion" else "nm" for kind in fes.cv_kinds]
    with atomic_path(output / f"{stem}.csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [f"{name}_{unit}" for name, unit in zip(fes.cv_names, units, strict=True)]
            + ["free_energy_kj_mol", "uncertainty_kj_mol"]
        )
        for index in np.ndindex(fes.free_energy.shape):
            writer.writerow(
                [f"{grid[index]:.6g}" for grid in grids] + [f"{fes.free_energy[index]:.6g}", f"{sigma[index]:.6g}"]
            )
    files[f"{stem}_csv"] = output / f"{stem}.csv"
    files[f"{stem}_png"] = plot_fes(fes, output / f"{stem}.png")
    return files
