"""NNP/MM molecular dynamics: build the mixed System from settings, run it, measure its speed.

>>> from biomol_nnp.config import SimulationSettings, SystemSettings
>>> result = run_md(SystemSettings(), SimulationSettings(model_path="model.pt", steps=1000),
...                 "runs/md")  # doctest: +SKIP
>>> result.ns_per_day, result.mm_ns_per_day  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u

from biomol_nnp.config import SimulationSettings, SystemSettings
from biomol_nnp.exceptions import ConfigError, InputError, SimulationError
from biomol_nnp.io import atomic_path, write_json_atomic
from biomol_nnp.models.export import file_hash
from biomol_nnp.simulate.checkpoint import (
    CHECKPOINT_FILE,
    load_checkpoint,
    restore_context,
    restore_files,
    save_checkpoint,
)
from biomol_nnp.simulate.reporters import (
    CheckpointReporter,
    DCDTrajectoryReporter,
    LogReporter,
    NaNGuard,
    ProgressReporter,
    RunStoppedError,
    UncertaintyGuard,
    write_frame_pdb,
)
from biomol_nnp.simulate.systems import RunSystem, build_run_system, degrees_of_freedom
from biomol_nnp.simulate.uncertainty import ModelMonitor, MonitorValues

logger = logging.getLogger(__name__)

PLATFORMS = ("CPU", "Reference")
"""OpenMM platforms the runner accepts."""

TRAJECTORY_FILE = "trajectory.dcd"
LOG_FILE = "md.csv"
SUMMARY_FILE = "run.json"


@dataclasses.dataclass
class RunResult:
    """What :func:`run_md` produced.

    Attributes
    ----------
    trajectory : Path
        DCD or XTC trajectory (written every ``report_interval`` steps).
    log : Path
        CSV log, columns `biomol_nnp.simulate.reporters.LOG_COLUMNS`.
    steps : int
        Steps run in this call (after a resume: the remaining steps).
    timestep_fs : float
        Time step, fs.
    wall_seconds : float
        Wall-clock time of the production steps, s.
    ns_per_day : float
        NNP/MM speed over the production steps, ns/day.
    final_potential_kj_mol : float
        Potential energy after the last step, kJ/mol.
    n_ml_atoms : int
        Atoms in the ML region.
    mm_ns_per_day : float or None
        Pure MM speed of the same system on the same platform (when requested), ns/day.
    final_step : int
        Step count of the Context at the end.
    resumed_from_step : int or None
        Checkpoint step the run continued from (None for a fresh start).
    status : str
        ``"completed"``.
    uncertain_frames : int
        Reports whose max force std exceeded the threshold.
    checkpoint : Path or None
        The last checkpoint written.
    """

    trajectory: Path
    log: Path
    steps: int
    timestep_fs: float
    wall_seconds: float
    ns_per_day: float
    final_potential_kj_mol: float
    n_ml_atoms: int
    mm_ns_per_day: float | None = None
    final_step: int = 0
    resumed_from_step: int | None = None
    status: str = "completed"
    uncertain_frames: int = 0
    checkpoint: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (paths as strings)."""
        return {
            key: str(value) if isinstance(value, Path) else value for key, value in dataclasses.asdict(self).items()
        }


def region_atoms(topology: app.Topology, residue_names: list[str]) -> list[int]:
    """Indices of the atoms of every residue whose name is in ``residue_names``."""
    names = set(residue_names)
    atoms = [atom.index for atom in topology.atoms() if atom.residue.name in names]
    if not atoms:
        present = sorted({residue.name for residue in topology.residues()})
        raise InputError(
            f"region_residues={sorted(names)} matches no residue; the structure has residues {present[:20]}"
        )
    return atoms


def build_mm_system(system_settings: SystemSettings) -> tuple[app.Topology, openmm.System, Any]:
    """MM System of ``system_settings.solvated_pdb``: PME, HBonds constraints, rigid water.

    Returns
    -------
    topology : openmm.app.Topology
    system : openmm.System
    positions : openmm.unit.Quantity
        Positions from the PDB, nm.
    """
    path = Path(system_settings.solvated_pdb)
    if not path.is_file():
        raise InputError(f"solvated_pdb {str(path)!r} does not exist; give the path of a solvated PDB file")
    pdb = app.PDBFile(str(path))
    if pdb.topology.getPeriodicBoxVectors() is None:
        raise InputError(f"{str(path)!r} has no periodic box (CRYST1 record); PME needs one: solvate it first")
    forcefield = app.ForceField(*system_settings.forcefield)
    system = forcefield.createSystem(
        pdb.topology,
        nonbondedMethod=app.PME,
        nonbondedCutoff=system_settings.nonbonded_cutoff_nm * u.nanometer,
        constraints=app.HBonds,
        rigidWater=True,
    )
    return pdb.topology, system, pdb.positions


def build_mixed_system(
    system_settings: SystemSettings, simulation: SimulationSettings
) -> tuple[app.Topology, openmm.System, openmm.System, list[int], Any]:
    """MM System and NNP/MM System of the solvated structure.

    The ML region is every atom of the residues named in ``system_settings.region_residues``; the mixed
    System comes from ``MLPotential('biomol-nnp', modelPath=...).createMixedSystem(...,
    embedding=simulation.embedding)``.

    Returns
    -------
    topology : openmm.app.Topology
    mm_system : openmm.System
        Pure MM System (PME, HBonds, rigid water).
    mixed_system : openmm.System
        NNP/MM System.
    ml_atoms : list of int
        Indices of the ML region atoms.
    positions : openmm.unit.Quantity
        Positions, nm.
    """
    topology, mm_system, positions = build_mm_system(system_settings)
    ml_atoms = region_atoms(topology, system_settings.region_residues)
    mixed = create_mixed_system(topology, mm_system, ml_atoms, simulation)
    return topology, mm_system, mixed, ml_atoms, positions


def create_mixed_system(
    topology: app.Topology, mm_system: openmm.System, ml_atoms: list[int], simulation: SimulationSettings
) -> openmm.System:
    """NNP/MM System from an MM System: ``MLPotential('biomol-nnp', modelPath=...).createMixedSystem(...)``.

    Uses ``simulation.model_path``, ``simulation.embedding`` and ``simulation.torch_threads``; any MM System
    works (PME or no cutoff, from force-field XMLs or a serialized System).
    """
    from openmmml import MLPotential

    potential = MLPotential("biomol-nnp", modelPath=str(simulation.model_path), torchThreads=simulation.torch_threads)
    mixed = cast(
        openmm.System,
        potential.createMixedSystem(topology, mm_system, ml_atoms, embedding=simulation.embedding),
    )
    logger.info(
        "mixed System: %d atoms, %d in the ML region, %s embedding",
        mixed.getNumParticles(),
        len(ml_atoms),
        simulation.embedding,
    )
    return mixed


def _platform(name: str, threads: int) -> tuple[openmm.Platform, dict[str, str]]:
    if name not in PLATFORMS:
        raise InputError(f"platform={name!r} is not supported; choose one of {list(PLATFORMS)}")
    properties = {"Threads": str(int(threads))} if name == "CPU" else {}
    return openmm.Platform.getPlatformByName(name), properties


def langevin_simulation(
    topology: app.Topology,
    system: openmm.System,
    positions: Any,
    timestep_fs: float,
    temperature_k: float,
    friction_per_ps: float,
    seed: int,
    platform: str,
    threads: int,
    minimize_iterations: int,
) -> app.Simulation:
    """A Simulation with a seeded Langevin middle integrator: positions set, link-atom caps placed, optionally
    minimised, velocities drawn at ``temperature_k``. ``platform`` is an OpenMM platform name."""
    integrator = openmm.LangevinMiddleIntegrator(
        temperature_k * u.kelvin, friction_per_ps / u.picosecond, timestep_fs * u.femtosecond
    )
    integrator.setRandomNumberSeed(seed)
    plat, properties = _platform(platform, threads)
    simulation = app.Simulation(topology, system, integrator, plat, properties)
    simulation.context.setPositions(positions)
    simulation.context.computeVirtualSites()  # link-atom caps of the ML region
    if minimize_iterations > 0:
        simulation.minimizeEnergy(maxIterations=minimize_iterations)
    simulation.context.setVelocitiesToTemperature(temperature_k * u.kelvin, seed)
    return simulation


def _timed_steps(simulation: app.Simulation, steps: int, timestep_fs: float) -> tuple[float, float]:
    """Run ``steps`` and return (wall seconds, ns/day)."""
    start = time.perf_counter()
    try:
        simulation.step(steps)
    except ValueError as err:  # StateDataReporter raises ValueError on NaN energies
        raise SimulationError(f"the simulation stopped: {err}; lower the time step or minimise longer") from err
    seconds = time.perf_counter() - start
    return seconds, steps * timestep_fs * 1e-6 / seconds * 86400.0


def benchmark_ns_per_day(
    system: openmm.System,
    topology: app.Topology,
    positions: Any,
    steps: int,
    timestep_fs: float = 1.0,
    temperature_k: float = 300.0,
    friction_per_ps: float = 1.0,
    platform: str = "CPU",
    threads: int = 1,
    warmup_steps: int = 10,
    minimize_iterations: int = 20,
    seed: int = 1,
) -> float:
    """Speed of Langevin MD of ``system``, ns/day, measured over ``steps`` after ``warmup_steps``.

    Same integrator, platform and timing as :func:`run_md`, so an MM System and an NNP/MM System of the
    same structure can be compared on one machine.

    Parameters
    ----------
    system : openmm.System
    topology : openmm.app.Topology
    positions : openmm.unit.Quantity or array, shape (n_atoms, 3)
        Starting positions, nm.
    steps : int
        Timed steps (>= 1).
    timestep_fs, temperature_k, friction_per_ps : float
        Time step (fs), temperature (K), friction (1/ps).
    platform : {"CPU", "Reference"}
    threads : int
        CPU platform threads.
    warmup_steps, minimize_iterations : int
        Untimed steps and minimiser iterations before timing.
    seed : int

    Examples
    --------
    >>> benchmark_ns_per_day(mm_system, topology, positions, steps=200)  # doctest: +SKIP
    """
    if steps < 1:
        raise InputError(f"steps={steps} is not allowed; give at least 1 timed step")
    simulation = langevin_simulation(
        topology,
        system,
        positions,
        timestep_fs,
        temperature_k,
        friction_per_ps,
        seed,
        platform,
        threads,
        minimize_iterations,
    )
    if warmup_steps > 0:
        simulation.step(warmup_steps)
    _, ns_per_day = _timed_steps(simulation, steps, timestep_fs)
    logger.info("benchmark: %d steps at %.3g ns/day (%s, %d threads)", steps, ns_per_day, platform, threads)
    return ns_per_day


def check_run_settings(simulation: SimulationSettings) -> None:
    """ConfigError for settings that cannot work together (checked before anything is built)."""
    if simulation.checkpoint_interval % simulation.report_interval:
        raise ConfigError(
            f"simulation.checkpoint_interval={simulation.checkpoint_interval} is not a multiple of "
            f"report_interval={simulation.report_interval}; checkpoints must fall on report steps so resumed "
            "files line up: use e.g. checkpoint_interval: "
            f"{max(1, simulation.checkpoint_interval // simulation.report_interval) * simulation.report_interval}"
        )
    threshold = simulation.force_std_threshold_kj_mol_nm
    if threshold is not None and simulation.mm_only:
        raise ConfigError(
            f"simulation.force_std_threshold_kj_mol_nm={threshold} needs a model but mm_only is true; remove the "
            "threshold or set mm_only: false"
        )
    if threshold is None and simulation.uncertainty_action != "warn":
        raise ConfigError(
            f"simulation.uncertainty_action={simulation.uncertainty_action!r} needs "
            "force_std_threshold_kj_mol_nm (kJ/mol/nm, e.g. 50); set it or use the default action 'warn'"
        )
    if threshold is not None and not simulation.report_uncertainty:
        raise ConfigError(
            "simulation.force_std_threshold_kj_mol_nm is set but report_uncertainty is false; the guard reads the "
            "reported uncertainty: set report_uncertainty: true"
        )


_RESUME_KEYS_ALLOWED_TO_CHANGE = (
    "steps",
    "checkpoint_interval",
    "torch_threads",
    "minimize_iterations",
    "force_std_threshold_kj_mol_nm",
    "uncertainty_action",
    "nve_steps",
    "nve_timestep_fs",
    "nve_report_interval",
)


def _settings_fingerprint(system_settings: SystemSettings, simulation: SimulationSettings) -> dict[str, Any]:
    """What a resumed run must share with the checkpointed one: settings and the model file's bytes."""
    data = simulation.model_dump(mode="json", exclude=set(_RESUME_KEYS_ALLOWED_TO_CHANGE))
    model = Path(simulation.model_path)
    model_hash = file_hash(model) if not simulation.mm_only and model.is_file() else None
    return {"simulation": data, "system": system_settings.model_dump(mode="json"), "model_sha256": model_hash}


def _check_resumable(checkpoint: dict[str, Any], fingerprint: dict[str, Any], folder: Path, steps: int) -> None:
    """Refuse a resume whose model file, settings or length do not continue the checkpointed run."""
    saved = checkpoint.get("settings") or {}
    if saved.get("model_sha256", fingerprint["model_sha256"]) != fingerprint["model_sha256"]:
        raise ConfigError(
            f"the model file {fingerprint['simulation']['model_path']!r} is not the one the checkpointed run in "
            f"{str(folder)!r} used (its SHA-256 changed); put the original model back, or start a new run in "
            "another folder with the new model"
        )
    if {k: v for k, v in saved.items() if k != "model_sha256"} != {
        k: v for k, v in fingerprint.items() if k != "model_sha256"
    }:
        raise ConfigError(
            f"the settings differ from those of the checkpointed run in {str(folder)!r} (only "
            f"{list(_RESUME_KEYS_ALLOWED_TO_CHANGE)} may change on --resume); use the original settings or start a "
            "new run in another folder"
        )
    if checkpoint["step"] >= steps:
        raise ConfigError(
            f"the checkpoint in {str(folder)!r} is at step {checkpoint['step']}, not before simulation.steps="
            f"{steps}; raise steps to extend the run"
        )


class _UncertaintyStopError(Exception):
    """Raised by the guard's stop action (after the checkpoint); turned into SimulationError by run_md."""


@dataclasses.dataclass
class _Outputs:
    """Output files of a run and the reporters that write them."""

    folder: Path
    trajectory: Path
    log: Path
    checkpoint: Path
    reporters: list[Any]

    def flush(self) -> dict[str, Path]:
        for reporter in self.reporters:
            if hasattr(reporter, "flush"):
                reporter.flush()
        return {self.trajectory.name: self.trajectory, self.log.name: self.log}

    def close(self) -> None:
        for reporter in self.reporters:
            if hasattr(reporter, "close"):
                reporter.close()


COLLECTION_DIR = "uncertain"
"""Folder (in the run's output folder) of the frames the 'collect' action writes."""


def rebuild_collection(folder: str | os.PathLike) -> Path | None:
    """Write ``folder/configurations.h5`` (ready for `biomol-nnp label`) from every ``frame_*.npz`` in ``folder``.

    Returns the path, or None (and no file) when there is no frame.
    """
    from biomol_nnp.qm.configurations import write_configurations
    from biomol_nnp.qm.sampling import Configuration

    target = Path(folder)
    configs = []
    for path in sorted(target.glob("frame_*.npz")):
        with np.load(path) as data:
            configs.append(
                Configuration(
                    data["region_numbers"],
                    data["region_positions"],
                    int(data["total_charge"]),
                    data["mm_positions"],
                    data["mm_charges"],
                    data["mm_numbers"],
                    source="uncertain-md",
                    frame=int(data["step"]),
                )
            )
    output = target / "configurations.h5"
    if not configs:
        output.unlink(missing_ok=True)
        return None
    return write_configurations(configs, output)


def _collector(
    run: RunSystem, monitor: ModelMonitor, folder: Path
) -> Callable[[int, openmm.State, MonitorValues], None]:
    """The 'collect' action: one ``uncertain/frame_<step>.npz`` per frame (all positions, box, step, uncertainty,
    the region with its point charges), then :func:`rebuild_collection`."""
    numbers = np.array([a.element.atomic_number if a.element else 0 for a in run.topology.atoms()], dtype=np.int64)
    callback = monitor.callback
    target = folder / COLLECTION_DIR

    def collect(step: int, state: openmm.State, values: MonitorValues) -> None:
        box = state.getPeriodicBoxVectors(asNumpy=True)
        with atomic_path(target / f"frame_{step:010d}.npz") as tmp, tmp.open("wb") as handle:
            np.savez(
                handle,
                step=step,
                positions=state.getPositions(asNumpy=True).value_in_unit(u.nanometer),
                box=np.zeros((0, 3)) if box is None else box.value_in_unit(u.nanometer),
                energy_std=values.energy_std,
                max_force_std=values.max_force_std,
                region_atoms=np.asarray(callback.ml_atoms),
                region_numbers=np.asarray(callback.atomic_numbers, dtype=np.int64),
                total_charge=int(round(callback.total_charge)),
                region_positions=values.region_positions,
                mm_positions=values.mm_positions,
                mm_charges=values.mm_charges,
                mm_numbers=numbers[values.mm_atoms],
            )
        rebuild_collection(target)

    return collect


def _outputs(
    sim: app.Simulation,
    run: RunSystem,
    simulation: SimulationSettings,
    folder: Path,
    append: bool,
    fingerprint: dict[str, Any],
    progress: bool,
) -> tuple[_Outputs, NaNGuard, UncertaintyGuard | None]:
    """Create the reporters in the order the checkpoint logic needs (see `biomol_nnp.simulate.reporters`)."""
    interval = simulation.report_interval
    trajectory = folder / f"trajectory.{simulation.trajectory_format}"
    log = folder / LOG_FILE
    extend = append and trajectory.exists() and trajectory.stat().st_size > 0
    traj_reporter: Any = (
        DCDTrajectoryReporter(trajectory, interval, append=extend)
        if simulation.trajectory_format == "dcd"
        else app.XTCReporter(str(trajectory), interval, append=extend)
    )
    monitor = ModelMonitor(run.system, uncertainty=simulation.report_uncertainty) if run.ml_atoms else None
    nan_guard = NaNGuard(interval, folder)
    log_reporter = LogReporter(
        log, interval, simulation.steps, run.groups, degrees_of_freedom(run.system), monitor, append=append
    )
    outputs = _Outputs(folder, trajectory, log, folder / CHECKPOINT_FILE, [traj_reporter, log_reporter])

    def save() -> None:
        save_checkpoint(outputs.checkpoint, sim, outputs.flush(), {"settings": fingerprint})

    def stop(step: int, state: openmm.State, values: MonitorValues) -> None:
        save()
        write_frame_pdb(folder / f"uncertain_step_{step}.pdb", sim, state)
        raise _UncertaintyStopError(
            f"max force std {values.max_force_std:.4g} kJ/mol/nm above the threshold "
            f"{simulation.force_std_threshold_kj_mol_nm} at step {step}"
        )

    guard = None
    if monitor is not None and simulation.force_std_threshold_kj_mol_nm is not None:
        guard = UncertaintyGuard(
            interval,
            monitor,
            simulation.force_std_threshold_kj_mol_nm,
            simulation.uncertainty_action,
            _collector(run, monitor, folder),
            stop,
        )
    sim.reporters.extend([nan_guard, traj_reporter, log_reporter])
    if guard is not None:
        sim.reporters.append(guard)
    sim.reporters.append(CheckpointReporter(simulation.checkpoint_interval, save))
    if progress:
        bar = ProgressReporter(simulation.steps, interval, sim.currentStep)
        sim.reporters.append(bar)
        outputs.reporters.append(bar)
    return outputs, nan_guard, guard


def _drop_collected_after(folder: Path, step: int) -> None:
    """Remove frames the 'collect' action wrote after ``step`` (-1: all; a fresh run) so none is counted twice."""
    stale = [f for f in sorted((folder / COLLECTION_DIR).glob("frame_*.npz")) if int(f.stem.split("_")[1]) > step]
    for frame in stale:
        frame.unlink()
        logger.info("removed %s (written after the checkpoint at step %d)", frame, step)
    if stale:
        rebuild_collection(folder / COLLECTION_DIR)


def _start(
    system_settings: SystemSettings,
    simulation: SimulationSettings,
    folder: Path,
    resume: bool,
    platform: str,
    threads: int,
    minimize_iterations: int,
) -> tuple[RunSystem, app.Simulation, dict[str, Any] | None]:
    """Build the System and the Simulation; restore the checkpoint and truncate the files when resuming."""
    checkpoint_path = folder / CHECKPOINT_FILE
    checkpoint = load_checkpoint(checkpoint_path) if resume else None
    if checkpoint is not None:
        _check_resumable(checkpoint, _settings_fingerprint(system_settings, simulation), folder, simulation.steps)
    run = build_run_system(system_settings, simulation)
    sim = langevin_simulation(
        run.topology,
        run.system,
        run.positions,
        simulation.timestep_fs,
        simulation.temperature_k,
        simulation.friction_per_ps,
        simulation.seed,
        platform,
        threads,
        0 if resume else minimize_iterations,
    )
    _drop_collected_after(folder, -1 if checkpoint is None else int(checkpoint["step"]))
    if checkpoint is not None:
        restore_files(checkpoint, folder, run.system.getNumParticles(), run.system.usesPeriodicBoundaryConditions())
        restore_context(sim, checkpoint)
        logger.info("resumed from the checkpoint at step %d", checkpoint["step"])
    else:
        folder.mkdir(parents=True, exist_ok=True)
        checkpoint_path.unlink(missing_ok=True)  # a stale checkpoint would not match the new files
        sim.currentStep = 0
    return run, sim, checkpoint


def run_md(
    system_settings: SystemSettings,
    simulation: SimulationSettings,
    output_dir: str | os.PathLike,
    progress: bool = False,
    platform: str = "CPU",
    threads: int = 1,
    minimize_iterations: int | None = None,
    mm_benchmark_steps: int = 0,
    resume: bool = False,
) -> RunResult:
    """Run NVT/NPT Langevin MD (NNP/MM or pure MM) with checkpoints; write the trajectory, ``md.csv``, ``run.json``.

    Parameters
    ----------
    system_settings : SystemSettings
        Structure, force field and ML region (ignored parts when ``simulation.prepared_dir`` is set).
    simulation : SimulationSettings
        Input, model, ensemble, time step, HMR, reporting, checkpoints, uncertainty guard.
    output_dir : path-like
        Folder for ``trajectory.dcd|xtc``, ``md.csv``, ``checkpoint.json``, ``run.json`` (created if needed).
    progress : bool
        Show a progress bar.
    platform : {"CPU", "Reference"}
    threads : int
        CPU platform threads (the model runs with ``simulation.torch_threads``).
    minimize_iterations : int, optional
        Minimiser iterations before MD (default ``simulation.minimize_iterations``; none on resume).
    mm_benchmark_steps : int
        If > 0, also time this many steps of the pure MM System (:func:`benchmark_ns_per_day`).
    resume : bool
        Continue from ``output_dir/checkpoint.json``: files are truncated to the checkpoint, the Context
        restored (exactly, on the same platform) and the remaining steps run.

    Returns
    -------
    RunResult

    Raises
    ------
    ConfigError
        Inconsistent settings, ``resume`` without a checkpoint, NPT without a periodic box, no model file.
    SimulationError
        NaN energy or positions (the last good state is saved), or the uncertainty guard's 'stop'.

    Examples
    --------
    >>> result = run_md(SystemSettings(), SimulationSettings(model_path="model.pt"), "md")  # doctest: +SKIP
    """
    check_run_settings(simulation)
    folder = Path(output_dir)
    iterations = simulation.minimize_iterations if minimize_iterations is None else minimize_iterations
    run, sim, checkpoint = _start(system_settings, simulation, folder, resume, platform, threads, iterations)
    fingerprint = _settings_fingerprint(system_settings, simulation)
    outputs, nan_guard, guard = _outputs(sim, run, simulation, folder, checkpoint is not None, fingerprint, progress)
    nan_guard.remember(sim)
    remaining = simulation.steps - sim.currentStep
    try:
        seconds, ns_per_day = _guarded_steps(sim, remaining, simulation.timestep_fs, nan_guard)
        save_checkpoint(outputs.checkpoint, sim, outputs.flush(), {"settings": fingerprint})
    except _UncertaintyStopError as stop:
        raise SimulationError(
            f"stopped by the uncertainty guard: {stop}; the checkpoint ({outputs.checkpoint}) and the frame "
            f"(uncertain_step_*.pdb) are in {str(folder)!r}. Label that frame and retrain (`biomol-nnp active-learn`), "
            "or raise force_std_threshold_kj_mol_nm"
        ) from None
    finally:
        outputs.close()
        sim.reporters.clear()
    energy = sim.context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    mm_speed = None
    if mm_benchmark_steps > 0:
        mm_speed = benchmark_ns_per_day(
            run.mm_system,
            run.topology,
            run.positions,
            mm_benchmark_steps,
            timestep_fs=simulation.timestep_fs,
            temperature_k=simulation.temperature_k,
            friction_per_ps=simulation.friction_per_ps,
            platform=platform,
            threads=threads,
            warmup_steps=0,
            minimize_iterations=iterations,
            seed=simulation.seed,
        )
    result = RunResult(
        trajectory=outputs.trajectory,
        log=outputs.log,
        steps=remaining,
        timestep_fs=simulation.timestep_fs,
        wall_seconds=seconds,
        ns_per_day=ns_per_day,
        final_potential_kj_mol=energy,
        n_ml_atoms=len(run.ml_atoms),
        mm_ns_per_day=mm_speed,
        final_step=int(sim.currentStep),
        resumed_from_step=None if checkpoint is None else int(checkpoint["step"]),
        uncertain_frames=0 if guard is None else guard.count,
        checkpoint=outputs.checkpoint,
    )
    write_json_atomic(folder / SUMMARY_FILE, result.to_dict())
    logger.info(
        "MD: %d steps in %.2f s, %.3g ns/day%s",
        remaining,
        seconds,
        ns_per_day,
        f" (pure MM {mm_speed:.3g} ns/day)" if mm_speed else "",
    )
    return result


def _guarded_steps(sim: app.Simulation, steps: int, timestep_fs: float, nan_guard: NaNGuard) -> tuple[float, float]:
    """:func:`_timed_steps` with failures inside the step (model NaN, OpenMM errors) turned into NaNGuard stops."""
    try:
        return _timed_steps(sim, steps, timestep_fs)
    except (_UncertaintyStopError, RunStoppedError):
        raise
    except (SimulationError, openmm.OpenMMException, ValueError) as err:
        cause = err.__cause__ if isinstance(err, SimulationError) and err.__cause__ else err
        nan_guard.fail(sim, f"the step failed ({cause})")
        raise  # unreachable: fail raises
