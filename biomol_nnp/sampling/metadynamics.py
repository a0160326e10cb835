"""Well-tempered metadynamics on torsion and distance CVs (``openmm.app.Metadynamics``), walkers on Dask.

Every walker is one simulation of the same System with its own seed; all write their bias to one folder
(``bias/``, Metadynamics ``biasDir`` + ``saveFrequency``) and load the others' from it, so they share the bias.
With ``workers=0`` the walkers run one after the other in this process (each starts from the bias the earlier
ones left); with ``workers >= 1`` or a ``scheduler_address`` they run at the same time as Dask tasks.

Checkpoints: every ``save_frequency`` steps a walker saves its bias (by Metadynamics), then its State XML, its CV
time series and its step count, each atomically. A killed run started again with the same output folder loads
the saved biases and states and runs the remaining steps (Gaussians deposited after the last checkpoint are
lost; at most one checkpoint interval of a walker's Gaussians can be counted twice if it dies between writes).

Free energy: ``F(s) = -gamma/(gamma-1) V(s)`` from the total bias on its grid (``fes.json``/``.csv``/``.png``),
and a reweighted histogram of the second half of the CV samples with the final bias, with block-average error
bars (``fes_reweighted.*``).

>>> result = run_metadynamics(MetadynamicsSettings(steps=20000), "metad")  # doctest: +SKIP
>>> result.fes.free_energy.shape  # doctest: +SKIP
(72, 72)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from biomol_nnp.analysis.free_energy import FreeEnergySurface, histogram_fes, kt_kj_per_mol, write_fes
from biomol_nnp.config import MetadynamicsSettings
from biomol_nnp.exceptions import ConfigError
from biomol_nnp.io import atomic_path, write_json_atomic

logger = logging.getLogger(__name__)

MIN_GRID_POINTS_PER_WIDTH = 2.0
"""A bias grid must have at least this many grid spacings per Gaussian width (sigma / spacing)."""

BIAS_DIR = "bias"
SUMMARY_FILE = "metadynamics.json"
_BIAS_FILE = re.compile(r"bias_(\d+)_(\d+)\.npy$")


@dataclasses.dataclass
class MetadynamicsResult:
    """What :func:`run_metadynamics` produced.

    Attributes
    ----------
    fes : FreeEnergySurface
        Free energy from the total bias, kJ/mol, on the bias grid.
    fes_reweighted : FreeEnergySurface
        Reweighted histogram of the second half of the samples, with block-average errors, kJ/mol.
    files : dict of str to Path
        Written files.
    steps : int
        MD steps per walker.
    walkers : int
    """

    fes: FreeEnergySurface
    fes_reweighted: FreeEnergySurface
    files: dict[str, Path]
    steps: int
    walkers: int


def grid_points(cv: Any, low: float, high: float) -> int:
    """Bias grid points of ``cv`` over ``[low, high]`` (default 5 per width); refuses a grid too coarse.

    Raises
    ------
    ConfigError
        Fewer than :data:`MIN_GRID_POINTS_PER_WIDTH` grid spacings per Gaussian width.
    """
    points = cv.grid_points or int(np.ceil(5 * (high - low) / cv.width)) + 1
    spacing = (high - low) / (points - 1)
    if cv.width / spacing < MIN_GRID_POINTS_PER_WIDTH:
        needed = int(np.ceil(MIN_GRID_POINTS_PER_WIDTH * (high - low) / cv.width)) + 1
        raise ConfigError(
            f"cv {cv.name!r}: bias grid of {points} points over [{low:.4g}, {high:.4g}] has spacing {spacing:.4g}, "
            f"only {cv.width / spacing:.2f} points per Gaussian width {cv.width:.4g}; at least "
            f"{MIN_GRID_POINTS_PER_WIDTH:g} are needed: set grid_points >= {needed} (or leave it out) or widen the "
            "Gaussians"
        )
    return points


def check_settings(settings: MetadynamicsSettings) -> None:
    """Refuse settings that cannot run, before anything is simulated.

    Raises
    ------
    ConfigError
        Mixed periodic/non-periodic CVs, frequencies that are not multiples, a grid too coarse, a bad system.
    InputError
        CV atoms that do not exist.
    """
    import openmm.app as app

    from biomol_nnp.sampling.cvs import cv_range, resolve_atoms, spans_circle
    from biomol_nnp.sampling.systems import check_system_settings

    check_system_settings(settings.system)
    if len({cv.kind for cv in settings.cvs}) > 1 or len({spans_circle(cv) for cv in settings.cvs}) > 1:
        raise ConfigError(
            f"cvs mix torsions and distances, or full and partial torsion ranges ({[cv.kind for cv in settings.cvs]}); "
            "OpenMM Metadynamics needs all periodic (whole-circle torsions) or all non-periodic CVs"
        )
    if settings.save_frequency % settings.frequency:
        raise ConfigError(
            f"save_frequency={settings.save_frequency} is not a multiple of frequency={settings.frequency}; "
            "checkpoints must fall on Gaussian depositions"
        )
    if settings.save_frequency % settings.report_interval:
        raise ConfigError(
            f"save_frequency={settings.save_frequency} is not a multiple of report_interval="
            f"{settings.report_interval}; choose a report_interval that divides it"
        )
    if settings.steps % settings.save_frequency:
        raise ConfigError(
            f"steps={settings.steps} is not a multiple of save_frequency={settings.save_frequency}; "
            f"use steps={max(settings.steps // settings.save_frequency, 1) * settings.save_frequency}"
        )
    n_atoms = app.PDBFile(str(settings.system.pdb)).topology.getNumAtoms()
    for cv in settings.cvs:
        resolve_atoms(cv, settings.system.pdb, n_atoms)
        grid_points(cv, *cv_range(cv))


def _bias_variables(settings: MetadynamicsSettings, sampled: Any) -> list[Any]:
    from biomol_nnp.sampling.cvs import bias_variables

    return bias_variables(settings.cvs, settings.system.pdb, sampled)


def _walker_dir(output: Path, walker: int) -> Path:
    return output / f"walker_{walker}"


def _progress(folder: Path) -> tuple[int, float]:
    """Steps done and MD wall seconds spent so far by the walker in ``folder`` (0, 0.0 before its start)."""
    progress = folder / "progress.json"
    if not progress.is_file():
        return 0, 0.0
    data = json.loads(progress.read_text())
    return int(data["steps_done"]), float(data.get("wall_seconds", 0.0))


def _checkpoint(folder: Path, simulation: Any, colvar: list[list[float]], seconds: float) -> None:
    with atomic_path(folder / "state.xml") as tmp:
        simulation.saveState(str(tmp))
    with atomic_path(folder / "colvar.npy") as tmp, open(tmp, "wb") as handle:
        np.save(handle, np.asarray(colvar, dtype=float))
    write_json_atomic(folder / "progress.json", {"steps_done": simulation.currentStep, "wall_seconds": seconds})


def run_walker(settings: MetadynamicsSettings, output_dir: str, walker: int) -> dict[str, Any]:
    """Run (or resume) walker ``walker`` to ``settings.steps``; a Dask task, also called in process.

    Returns ``{"walker", "steps_done", "resumed_from", "wall_seconds"}`` (MD wall time over all invocations).
    """
    import openmm.app as app
    import openmm.unit as u

    from biomol_nnp.sampling.systems import build_sampling_system, check_finite
    from biomol_nnp.simulate.runner import langevin_simulation

    output = Path(output_dir)
    folder = _walker_dir(output, walker)
    folder.mkdir(parents=True, exist_ok=True)
    (output / BIAS_DIR).mkdir(exist_ok=True)
    done, seconds = _progress(folder)
    if done >= settings.steps:
        return {"walker": walker, "steps_done": done, "resumed_from": done, "wall_seconds": seconds}
    sampled = build_sampling_system(settings.system)
    # Metadynamics names its bias files by an id from numpy's global RNG: draw it from fresh OS entropy so
    # walkers in processes that seeded numpy alike cannot share an id (and overwrite each other's bias).
    rng_state = np.random.get_state()
    np.random.seed(None)
    try:
        meta = app.Metadynamics(
            sampled.system,
            _bias_variables(settings, sampled),
            settings.temperature_k * u.kelvin,
            settings.bias_factor,
            settings.height_kj_mol * u.kilojoule_per_mole,
            settings.frequency,
            saveFrequency=settings.save_frequency,
            biasDir=str(output / BIAS_DIR),
        )
    finally:
        np.random.set_state(rng_state)
    simulation = langevin_simulation(
        sampled.topology,
        sampled.system,
        sampled.positions,
        settings.timestep_fs,
        settings.temperature_k,
        settings.friction_per_ps,
        settings.seed + walker + done,
        settings.platform,
        settings.threads,
        0 if done else settings.minimize_iterations,
    )
    colvar: list[list[float]] = []
    if done:
        simulation.loadState(str(folder / "state.xml"))
        colvar = np.load(folder / "colvar.npy").tolist()[: done // settings.report_interval]
        logger.info("walker %d resumes at step %d", walker, done)
    simulation.currentStep = done
    while simulation.currentStep < settings.steps:
        start = time.perf_counter()
        for _ in range(settings.save_frequency // settings.report_interval):
            meta.step(simulation, settings.report_interval)
            colvar.append([simulation.currentStep, *meta.getCollectiveVariables(simulation)])
        seconds += time.perf_counter() - start
        check_finite(simulation, f"metadynamics walker {walker}")
        _checkpoint(folder, simulation, colvar, seconds)
    return {"walker": walker, "steps_done": simulation.currentStep, "resumed_from": done, "wall_seconds": seconds}


def _run_walkers(settings: MetadynamicsSettings, output: Path, progress: bool) -> list[dict[str, Any]]:
    from tqdm import tqdm

    if settings.workers == 0 and not settings.scheduler_address:
        walkers = tqdm(range(settings.walkers), desc="metadynamics walkers", disable=not progress)
        return [run_walker(settings, str(output), k) for k in walkers]
    from distributed import as_completed

    from biomol_nnp.qm.distributed import make_client

    with ExitStack() as stack:
        client = make_client(settings.workers, settings.scheduler_address, stack)
        futures = [
            client.submit(run_walker, settings, str(output.resolve()), k, pure=False) for k in range(settings.walkers)
        ]
        results = []
        for future in tqdm(as_completed(futures), total=len(futures), desc="walkers", disable=not progress):
            results.append(future.result())
    return sorted(results, key=lambda r: r["walker"])


def total_bias(bias_dir: str | os.PathLike) -> np.ndarray:
    """Sum of the latest bias file of every walker in ``bias_dir`` (Metadynamics layout), kJ/mol.

    The array has one axis per CV in *reversed* CV order, as Metadynamics stores it.
    """
    latest: dict[int, tuple[int, Path]] = {}
    for path in Path(bias_dir).iterdir():
        match = _BIAS_FILE.match(path.name)
        if match:
            walker_id, index = int(match.group(1)), int(match.group(2))
            if walker_id not in latest or index > latest[walker_id][0]:
                latest[walker_id] = (index, path)
    if not latest:
        raise ConfigError(f"no bias files in {str(bias_dir)!r}; the metadynamics run wrote none")
    return np.sum([np.load(path) for _, path in latest.values()], axis=0)


def bias_fes(settings: MetadynamicsSettings, bias: np.ndarray) -> FreeEnergySurface:
    """``F = -gamma/(gamma-1) V`` on the bias grid (periodic grids without their duplicate end point), kJ/mol."""
    from biomol_nnp.sampling.cvs import cv_range, spans_circle

    grid = np.transpose(bias)  # Metadynamics stores the axes reversed
    axes = []
    for axis, cv in enumerate(settings.cvs):
        low, high = cv_range(cv)
        points = np.linspace(low, high, grid.shape[axis])
        if spans_circle(cv):
            points = points[:-1]
            grid = np.take(grid, range(len(points)), axis=axis)
        axes.append(points)
    free_energy = -settings.bias_factor / (settings.bias_factor - 1.0) * grid
    return FreeEnergySurface.from_values(
        [cv.name for cv in settings.cvs],
        [cv.kind for cv in settings.cvs],
        axes,
        free_energy - free_energy.min(),
        None,
        settings.temperature_k,
        "metadynamics bias",
    )


def _bias_at(settings: MetadynamicsSettings, bias: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Bias (kJ/mol) at CV samples ``[n, n_cv]``, nearest grid point."""
    from biomol_nnp.sampling.cvs import cv_range

    grid = np.transpose(bias)
    index = []
    for axis, cv in enumerate(settings.cvs):
        low, high = cv_range(cv)
        i = np.rint((samples[:, axis] - low) / (high - low) * (grid.shape[axis] - 1)).astype(int)
        index.append(np.clip(i, 0, grid.shape[axis] - 1))
    return grid[tuple(index)]


def reweighted_fes(settings: MetadynamicsSettings, output: Path, bias: np.ndarray) -> FreeEnergySurface:
    """Histogram of every walker's second-half CV samples weighted by ``exp(V_final / kT)``, block errors."""
    from biomol_nnp.sampling.cvs import cv_range

    samples = []
    for walker in range(settings.walkers):
        colvar = np.load(_walker_dir(output, walker) / "colvar.npy")
        samples.append(colvar[len(colvar) // 2 :, 1:])
    data = np.concatenate(samples)
    kt = kt_kj_per_mol(settings.temperature_k)
    log_w = _bias_at(settings, bias, data) / kt
    edges = [np.linspace(*cv_range(cv), settings.fes_bins + 1) for cv in settings.cvs]
    return histogram_fes(
        data,
        np.exp(log_w - log_w.max()),
        edges,
        settings.temperature_k,
        [cv.name for cv in settings.cvs],
        [cv.kind for cv in settings.cvs],
        method="metadynamics reweighted (final bias)",
    )


def run_metadynamics(
    settings: MetadynamicsSettings, output_dir: str | os.PathLike, progress: bool = False
) -> MetadynamicsResult:
    """Run (or resume) well-tempered metadynamics and write the bias, CV series and free-energy surfaces.

    Parameters
    ----------
    settings : MetadynamicsSettings
        System (mm, nnp or refit), CVs (rad / nm), bias factor, height (kJ/mol), frequency, walkers, Dask.
    output_dir : path-like
        Folder: ``bias/``, ``walker_k/`` (state.xml, colvar.npy, progress.json), ``fes.*``,
        ``fes_reweighted.*``, ``metadynamics.json``, ``settings.yaml``.
    progress : bool
        Progress bar over the walkers.

    Returns
    -------
    MetadynamicsResult

    Raises
    ------
    ConfigError, InputError
        Bad settings (CV atoms, grid too coarse, system kind), before any simulation.

    Examples
    --------
    >>> run_metadynamics(MetadynamicsSettings(walkers=2, workers=2), "metad").fes.cv_names  # doctest: +SKIP
    ['phi', 'psi']
    """
    check_settings(settings)
    output = Path(output_dir)
    (output / BIAS_DIR).mkdir(parents=True, exist_ok=True)
    settings.to_yaml(output / "settings.yaml")
    walkers = _run_walkers(settings, output, progress)
    bias = total_bias(output / BIAS_DIR)
    fes = bias_fes(settings, bias)
    fes_rw = reweighted_fes(settings, output, bias)
    files = {**write_fes(fes, output, "fes"), **write_fes(fes_rw, output, "fes_reweighted")}
    summary = {
        "steps_per_walker": settings.steps,
        "walkers": walkers,
        "timestep_fs": settings.timestep_fs,
        "simulated_ns_total": settings.steps * settings.walkers * settings.timestep_fs * 1e-6,
        "md_wall_seconds_total": sum(w["wall_seconds"] for w in walkers),
        "files": {key: str(path) for key, path in files.items()},
    }
    files["summary"] = write_json_atomic(output / SUMMARY_FILE, summary)
    logger.info("metadynamics: %d walkers x %d steps; FES in %s", settings.walkers, settings.steps, output)
    return MetadynamicsResult(fes, fes_rw, files, settings.steps, settings.walkers)
