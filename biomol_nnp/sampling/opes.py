"""OPES (on-the-fly probability enhanced sampling) through ``openmm_opes``, on the metadynamics CVs.

OPES (Invernizzi & Parrinello, J. Phys. Chem. Lett. 11, 2731 (2020)) builds the bias from an on-the-fly
kernel density estimate of the CV distribution, ``V = (1 - 1/gamma) kT ln(P/Z + eps)``, so that the
sampled distribution tends to the well-tempered one; ``explore=True`` is OPES-explore. The CVs are the
torsions/distances of :class:`~biomol_nnp.config.CVSettings` (the same as metadynamics), on pure MM,
NNP/MM or refitted Systems (:func:`biomol_nnp.sampling.systems.build_sampling_system`).

Outputs in ``output_dir``: ``fes.json|csv|png`` (the reweighted OPES free-energy estimate on the CV grid,
:class:`~biomol_nnp.analysis.free_energy.FreeEnergySurface`), ``colvar.npy`` (step, CVs, bias kJ/mol),
``summary.json``. Every ``save_frequency`` steps ``state.xml`` (simulation), ``opes_state.npz`` (kernels,
variance) and ``progress.json`` are written atomically; running again resumes from them.

>>> result = run_opes(OpesSettings(steps=20000), "opes_out")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import openmm.unit as u

from biomol_nnp.analysis.free_energy import FreeEnergySurface, write_fes
from biomol_nnp.config import OpesSettings
from biomol_nnp.exceptions import ConfigError
from biomol_nnp.io import atomic_path, write_json_atomic

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class OpesResult:
    """Outcome of :func:`run_opes`: the free-energy surface, kernels deposited, steps, written files."""

    fes: FreeEnergySurface
    kernels: int
    steps: int
    files: dict[str, Path]


def check_settings(settings: OpesSettings) -> None:
    """Refuse settings openmm-opes cannot run, before anything is built."""
    if settings.save_frequency % settings.frequency:
        raise ConfigError(
            f"save_frequency={settings.save_frequency} is not a multiple of frequency={settings.frequency}; "
            "checkpoints must fall on deposition steps"
        )
    if settings.save_frequency % settings.report_interval:
        raise ConfigError(
            f"save_frequency={settings.save_frequency} is not a multiple of report_interval={settings.report_interval}"
        )
    kinds = {cv.kind for cv in settings.cvs}
    if len(kinds) > 1:
        raise ConfigError(f"cvs mix kinds {sorted(kinds)}; OPES needs all torsions (periodic) or all distances")


def bias_variables(settings: OpesSettings, sampled: Any) -> list[Any]:
    """``openmm.app.BiasVariable`` of each CV (atoms checked, grid as for metadynamics)."""
    from biomol_nnp.sampling import cvs

    return cvs.bias_variables(settings.cvs, settings.system.pdb, sampled)


def _steps_done(folder: Path) -> int:
    progress = folder / "progress.json"
    return int(json.loads(progress.read_text())["steps_done"]) if progress.is_file() else 0


def _checkpoint(folder: Path, simulation: Any, opes: Any, colvar: list[list[float]]) -> None:
    with atomic_path(folder / "state.xml") as tmp:
        simulation.saveState(str(tmp))
    with atomic_path(folder / "opes_state.npz") as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **opes.getState())
    with atomic_path(folder / "colvar.npy") as tmp, open(tmp, "wb") as handle:
        np.save(handle, np.asarray(colvar, dtype=float))
    write_json_atomic(folder / "progress.json", {"steps_done": simulation.currentStep})


def run_opes_system(
    topology: Any,
    system: Any,
    positions: Any,
    variables: list[Any],
    settings: OpesSettings,
    output_dir: str | os.PathLike,
    progress: bool = True,
) -> OpesResult:
    """OPES on a prepared System with ``variables`` (BiasVariables); resumes from ``output_dir``.

    ``settings.cvs`` gives the names and kinds written with the free-energy surface.
    """
    from openmm_opes import OPES
    from tqdm import tqdm

    from biomol_nnp.sampling.systems import check_finite
    from biomol_nnp.simulate.runner import langevin_simulation

    check_settings(settings)
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    done = _steps_done(folder)
    try:
        opes = OPES(
            system,
            variables,
            settings.temperature_k * u.kelvin,
            settings.barrier_kj_mol * u.kilojoule_per_mole,
            settings.frequency,
            settings.frequency if settings.adaptive_width else None,
            biasFactor=settings.bias_factor,
            exploreMode=settings.explore,
        )
    except ValueError as err:
        raise ConfigError(f"openmm-opes refused the settings: {err}") from err
    simulation = langevin_simulation(
        topology, system, positions, settings.timestep_fs, settings.temperature_k, settings.friction_per_ps,
        settings.seed + done, settings.platform, settings.threads, 0 if done else settings.minimize_iterations,
    )  # fmt: skip
    colvar: list[list[float]] = []
    if done:
        simulation.loadState(str(folder / "state.xml"))
        with np.load(folder / "opes_state.npz") as saved:
            opes.setState({key: saved[key] for key in saved.files})
        colvar = np.load(folder / "colvar.npy").tolist()[: done // settings.report_interval]
        logger.info("OPES resumes at step %d with %d kernels", done, opes.getNumKernels())
    simulation.currentStep = done
    with tqdm(total=settings.steps, initial=done, desc="OPES", disable=not progress, unit="step") as bar:
        while simulation.currentStep < settings.steps:
            for _ in range(settings.save_frequency // settings.report_interval):
                opes.step(simulation, settings.report_interval)
                bias = opes.getBiasEnergy(simulation.context).value_in_unit(u.kilojoule_per_mole)
                colvar.append([simulation.currentStep, *opes.getCollectiveVariables(simulation), bias])
                bar.update(settings.report_interval)
            check_finite(simulation, "OPES")
            _checkpoint(folder, simulation, opes, colvar)
    return _finish(settings, variables, opes, folder, simulation.currentStep)


def _finish(settings: OpesSettings, variables: list[Any], opes: Any, folder: Path, steps: int) -> OpesResult:
    free_energy = np.asarray(opes.getFreeEnergy().value_in_unit(u.kilojoule_per_mole), dtype=float)
    free_energy = free_energy.T  # openmm-opes grids put the first CV last (fastest); ours put it first
    if np.any(np.isfinite(free_energy)):
        free_energy = free_energy - np.nanmin(free_energy)
    axes = [np.linspace(v.minValue, v.maxValue, v.gridWidth) for v in variables]
    fes = FreeEnergySurface.from_values(
        [cv.name for cv in settings.cvs],
        [cv.kind for cv in settings.cvs],
        axes,
        free_energy,
        None,
        settings.temperature_k,
        "OPES" + ("-explore" if settings.explore else "") + " (openmm-opes), reweighted kernel density estimate",
    )
    files = write_fes(fes, folder, "fes")
    summary = {"steps": steps, "kernels": opes.getNumKernels(), "settings": settings.model_dump(mode="json")}
    files["summary"] = write_json_atomic(folder / "summary.json", summary)
    logger.info("OPES: %d steps, %d kernels; wrote %s", steps, opes.getNumKernels(), folder)
    return OpesResult(fes, opes.getNumKernels(), steps, files)


def run_opes(settings: OpesSettings, output_dir: str | os.PathLike, progress: bool = True) -> OpesResult:
    """OPES of the System described by ``settings.system`` on ``settings.cvs``; resumes from ``output_dir``."""
    from biomol_nnp.sampling.systems import build_sampling_system

    check_settings(settings)
    sampled = build_sampling_system(settings.system)
    variables = bias_variables(settings, sampled)
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    settings.to_yaml(Path(output_dir) / "opes.yaml")
    return run_opes_system(
        sampled.topology, sampled.system, sampled.positions, variables, settings, output_dir, progress
    )
