"""Umbrella sampling along a torsion or a distance, free-energy profile and its uncertainty from MBAR.

Each window adds a harmonic restraint ``0.5 k (s - s_k)^2`` on the CV (a ``CustomCVForce``; for a torsion the
difference is wrapped into [-pi, pi), so the circle is handled as a circle), minimises into the window,
equilibrates and records the CV every ``sample_interval`` steps. Windows are independent: with ``workers=0`` they
run one after the other in this process, otherwise as Dask tasks. A finished window is a file
(``windows/window_K.npz``, written atomically); a killed run resumes at the windows that have none.

Analysis (pymbar 4): each window's series is subsampled by its statistical inefficiency
(``pymbar.timeseries``), the reduced bias of every sample in every window forms ``u_kn``, and ``pymbar.FES``
(histogram on ``bins`` bins) gives the unbiased profile with its analytical uncertainty (``profile.json``,
``.csv``, ``.png``), plus the window histograms (``windows.png``).

>>> result = run_umbrella(UmbrellaSettings(windows=24, steps=20000), "umbrella")  # doctest: +SKIP
>>> result.fes.free_energy.shape  # doctest: +SKIP
(36,)
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from biomol_nnp.analysis.free_energy import FreeEnergySurface, kt_kj_per_mol, write_fes
from biomol_nnp.config import UmbrellaSettings
from biomol_nnp.exceptions import ConfigError
from biomol_nnp.io import atomic_path, write_json_atomic

logger = logging.getLogger(__name__)

WINDOWS_DIR = "windows"
SUMMARY_FILE = "umbrella.json"
_TWO_PI = 2.0 * math.pi


@dataclasses.dataclass
class UmbrellaResult:
    """What :func:`run_umbrella` produced.

    Attributes
    ----------
    fes : FreeEnergySurface
        MBAR free-energy profile with its standard error, kJ/mol.
    centers : ndarray
        Window centres, rad or nm.
    samples_per_window : list of int
        Uncorrelated samples per window used by MBAR.
    files : dict of str to Path
    """

    fes: FreeEnergySurface
    centers: np.ndarray
    samples_per_window: list[int]
    files: dict[str, Path]


def window_centers(settings: UmbrellaSettings) -> np.ndarray:
    """Evenly spaced window centres over the CV range; a full torsion circle does not repeat its end point."""
    from biomol_nnp.sampling.cvs import cv_range

    low, high = cv_range(settings.cv)
    full_circle = settings.cv.periodic and high - low > _TWO_PI - 1e-6
    return np.linspace(low, high, settings.windows, endpoint=not full_circle)


def cv_deviation(values: np.ndarray, center: float | np.ndarray, periodic: bool) -> np.ndarray:
    """``s - s_k`` (wrapped into [-pi, pi) for a periodic CV), rad or nm."""
    delta = np.asarray(values) - center
    return delta - _TWO_PI * np.floor((delta + math.pi) / _TWO_PI) if periodic else delta


def restraint_force(settings: UmbrellaSettings, atoms: list[int], center: float, periodic_box: bool) -> Any:
    """Harmonic umbrella restraint on the CV, a ``CustomCVForce`` whose CV value can be read back."""
    import openmm

    from biomol_nnp.sampling.cvs import cv_force

    if settings.cv.periodic:
        expression = "0.5*umbrella_k*d^2; d = dc - 2*pi*floor((dc + pi)/(2*pi)); dc = cv - umbrella_center"
        expression += f"; pi = {math.pi!r}"
    else:
        expression = "0.5*umbrella_k*(cv - umbrella_center)^2"
    force = openmm.CustomCVForce(expression)
    force.addGlobalParameter("umbrella_k", settings.force_constant)
    force.addGlobalParameter("umbrella_center", float(center))
    force.addCollectiveVariable("cv", cv_force(settings.cv, atoms, periodic_box))
    return force


def check_settings(settings: UmbrellaSettings) -> None:
    """Refuse settings that cannot run (system, CV atoms and range, sampling lengths) before simulating.

    Raises
    ------
    ConfigError, InputError
    """
    import openmm.app as app

    from biomol_nnp.sampling.cvs import cv_range, resolve_atoms
    from biomol_nnp.sampling.systems import check_system_settings

    check_system_settings(settings.system)
    n_atoms = app.PDBFile(str(settings.system.pdb)).topology.getNumAtoms()
    resolve_atoms(settings.cv, settings.system.pdb, n_atoms)
    cv_range(settings.cv)
    if settings.steps // settings.sample_interval < 10:
        raise ConfigError(
            f"steps={settings.steps} with sample_interval={settings.sample_interval} gives fewer than 10 samples "
            "per window; sample longer or more often"
        )


def _window_file(output: Path, window: int) -> Path:
    return output / WINDOWS_DIR / f"window_{window}.npz"


def run_window(settings: UmbrellaSettings, output_dir: str, window: int) -> dict[str, Any]:
    """Simulate window ``window`` (skipped when its file exists); a Dask task, also called in process."""
    from biomol_nnp.sampling.cvs import resolve_atoms
    from biomol_nnp.sampling.systems import build_sampling_system, check_finite
    from biomol_nnp.simulate.runner import langevin_simulation

    path = _window_file(Path(output_dir), window)
    if path.is_file():
        return {"window": window, "resumed": True}
    center = float(window_centers(settings)[window])
    sampled = build_sampling_system(settings.system)
    atoms = resolve_atoms(settings.cv, settings.system.pdb, sampled.system.getNumParticles())
    force = restraint_force(settings, atoms, center, sampled.topology.getPeriodicBoxVectors() is not None)
    sampled.system.addForce(force)
    simulation = langevin_simulation(
        sampled.topology,
        sampled.system,
        sampled.positions,
        settings.timestep_fs,
        settings.temperature_k,
        settings.friction_per_ps,
        settings.seed + window,
        settings.platform,
        settings.threads,
        max(settings.minimize_iterations, 1),
    )
    start = time.perf_counter()
    if settings.equilibration_steps:
        simulation.step(settings.equilibration_steps)
    values = []
    for _ in range(settings.steps // settings.sample_interval):
        simulation.step(settings.sample_interval)
        values.append(force.getCollectiveVariableValues(simulation.context)[0])
    check_finite(simulation, f"umbrella window {window}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(
            handle,
            center=center,
            force_constant=settings.force_constant,
            cv=np.asarray(values),
            wall_seconds=time.perf_counter() - start,
        )
    return {"window": window, "resumed": False}


def _run_windows(settings: UmbrellaSettings, output: Path, progress: bool) -> None:
    from tqdm import tqdm

    if settings.workers == 0 and not settings.scheduler_address:
        for window in tqdm(range(settings.windows), desc="umbrella windows", disable=not progress):
            run_window(settings, str(output), window)
        return
    from distributed import as_completed

    from biomol_nnp.qm.distributed import make_client

    with ExitStack() as stack:
        client = make_client(settings.workers, settings.scheduler_address, stack)
        futures = [
            client.submit(run_window, settings, str(output.resolve()), k, pure=False) for k in range(settings.windows)
        ]
        for future in tqdm(as_completed(futures), total=len(futures), desc="windows", disable=not progress):
            future.result()


def load_windows(settings: UmbrellaSettings, output_dir: str | os.PathLike) -> tuple[np.ndarray, list[np.ndarray]]:
    """Window centres and CV series (rad or nm) read back from ``windows/window_K.npz``."""
    centers, series = [], []
    for window in range(settings.windows):
        with np.load(_window_file(Path(output_dir), window)) as data:
            centers.append(float(data["center"]))
            series.append(np.asarray(data["cv"], dtype=float))
    return np.asarray(centers), series


def _md_seconds(settings: UmbrellaSettings, output: Path) -> float:
    """MD wall seconds of all windows (equilibration + sampling), as each window recorded it."""
    total = 0.0
    for window in range(settings.windows):
        with np.load(_window_file(output, window)) as data:
            total += float(data["wall_seconds"]) if "wall_seconds" in data.files else 0.0
    return total


def _uncorrelated(series: np.ndarray) -> np.ndarray:
    from pymbar import timeseries

    if np.ptp(series) == 0.0:
        return series
    return series[timeseries.subsample_correlated_data(series)]


def mbar_profile(
    centers: np.ndarray,
    series: list[np.ndarray],
    force_constant: float,
    temperature_k: float,
    edges: np.ndarray,
    periodic: bool,
    cv_name: str = "cv",
    cv_kind: str = "distance",
) -> tuple[FreeEnergySurface, list[int]]:
    """MBAR (pymbar.FES, histogram) profile from umbrella windows, with its analytical standard error.

    Parameters
    ----------
    centers : ndarray, shape (K,)
        Window centres, rad or nm.
    series : list of ndarray
        CV samples of each window, rad or nm (subsampled here by their statistical inefficiency).
    force_constant : float
        Restraint constant k of ``0.5 k (s - s_k)^2``, kJ/mol/rad^2 or kJ/mol/nm^2.
    temperature_k : float
    edges : ndarray
        Bin edges, rad or nm.
    periodic : bool
        Wrap deviations (torsions).

    Returns
    -------
    fes : FreeEnergySurface
    samples_per_window : list of int
    """
    import pymbar

    kept = [_uncorrelated(values) for values in series]
    x_n = np.concatenate(kept)
    if periodic:
        x_n = cv_deviation(x_n, 0.0, True)
    beta = 1.0 / kt_kj_per_mol(temperature_k)
    u_kn = beta * 0.5 * force_constant * cv_deviation(x_n[None, :], centers[:, None], periodic) ** 2
    n_k = np.array([len(values) for values in kept])
    fes = pymbar.FES(u_kn, n_k, verbose=False)
    fes.generate_fes(np.zeros(len(x_n)), x_n, fes_type="histogram", histogram_parameters={"bin_edges": [edges]})
    centres = 0.5 * (edges[1:] + edges[:-1])
    occupied = np.histogram(x_n, bins=edges)[0] > 0
    result = fes.get_fes(centres[occupied], reference_point="from-lowest", uncertainty_method="analytical")
    kt = kt_kj_per_mol(temperature_k)
    free_energy = np.full(len(centres), np.nan)
    uncertainty = np.full(len(centres), np.nan)
    free_energy[occupied] = kt * np.asarray(result["f_i"])
    uncertainty[occupied] = kt * np.asarray(result["df_i"])
    surface = FreeEnergySurface.from_values(
        [cv_name],
        [cv_kind],
        [centres],
        free_energy - np.nanmin(free_energy),
        uncertainty,
        temperature_k,
        "umbrella + MBAR",
    )
    return surface, [int(n) for n in n_k]


def plot_windows(centers: np.ndarray, series: list[np.ndarray], edges: np.ndarray, torsion: bool, path: Path) -> Path:
    """PNG of every window's CV histogram (overlap check)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from biomol_nnp.units import RAD_TO_DEG

    scale = RAD_TO_DEG if torsion else 1.0
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for values in series:
        ax.hist(values * scale, bins=list(edges * scale), histtype="step", density=True)
    ax.set_xlabel("CV (deg)" if torsion else "CV (nm)")
    ax.set_ylabel("density")
    ax.set_title(f"{len(centers)} umbrella windows", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def run_umbrella(settings: UmbrellaSettings, output_dir: str | os.PathLike, progress: bool = False) -> UmbrellaResult:
    """Run (or resume) umbrella sampling and write the MBAR profile with its uncertainty.

    Parameters
    ----------
    settings : UmbrellaSettings
        System (mm, nnp or refit), CV (rad / nm), windows, force constant (kJ/mol/rad^2 or kJ/mol/nm^2),
        steps, Dask.
    output_dir : path-like
        Folder: ``windows/``, ``profile.json/.csv/.png``, ``windows.png``, ``umbrella.json``, ``settings.yaml``.
    progress : bool
        Progress bar over the windows.

    Returns
    -------
    UmbrellaResult

    Raises
    ------
    ConfigError, InputError
        Bad settings, before any simulation.

    Examples
    --------
    >>> run_umbrella(UmbrellaSettings(windows=12), "umbrella").fes.method  # doctest: +SKIP
    'umbrella + MBAR'
    """
    from biomol_nnp.sampling.cvs import cv_range

    check_settings(settings)
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    settings.to_yaml(output / "settings.yaml")
    _run_windows(settings, output, progress)
    centers, series = load_windows(settings, output)
    edges = np.linspace(*cv_range(settings.cv), settings.bins + 1)
    fes, n_samples = mbar_profile(
        centers,
        series,
        settings.force_constant,
        settings.temperature_k,
        edges,
        settings.cv.periodic,
        settings.cv.name,
        settings.cv.kind,
    )
    files = write_fes(fes, output, "profile")
    files["windows_png"] = plot_windows(centers, series, edges, settings.cv.periodic, output / "windows.png")
    summary = {
        "windows": settings.windows,
        "centers": centers.tolist(),
        "steps_per_window": settings.steps,
        "equilibration_steps": settings.equilibration_steps,
        "timestep_fs": settings.timestep_fs,
        "simulated_ns_total": settings.windows
        * (settings.steps + settings.equilibration_steps)
        * settings.timestep_fs
        * 1e-6,
        "uncorrelated_samples_per_window": n_samples,
        "md_wall_seconds_total": _md_seconds(settings, output),
        "files": {key: str(path) for key, path in files.items()},
    }
    files["summary"] = write_json_atomic(output / SUMMARY_FILE, summary)
    logger.info("umbrella sampling: %d windows x %d steps; profile in %s", settings.windows, settings.steps, output)
    return UmbrellaResult(fes, centers, n_samples, files)
