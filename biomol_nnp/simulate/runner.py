"""NNP/MM molecular dynamics: build the mixed System from settings, run it, measure its speed.

>>> from biomol_nnp.config import SimulationSettings, SystemSettings
>>> result = run_md(SystemSettings(), SimulationSettings(model_path="model.pt", steps=1000),
...                 "runs/md")  # doctest: +SKIP
>>> result.ns_per_day, result.mm_ns_per_day  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, cast

import openmm
import openmm.app as app
import openmm.unit as u

from biomol_nnp.config import SimulationSettings, SystemSettings
from biomol_nnp.exceptions import InputError, SimulationError
from biomol_nnp.io import write_json_atomic

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
        DCD trajectory (nm-based OpenMM positions, written every ``report_interval`` steps).
    log : Path
        CSV with step, time (ps), potential energy (kJ/mol), temperature (K), speed (ns/day).
    steps : int
        Production MD steps.
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (paths as strings)."""
        return {
            key: str(value) if isinstance(value, Path) else value
            for key, value in dataclasses.asdict(self).items()
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
        raise InputError(
            f"{str(path)!r} has no periodic box (CRYST1 record); PME needs one: solvate it first"
        )
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

    potential = MLPotential(
        "biomol-nnp", modelPath=str(simulation.model_path), torchThreads=simulation.torch_threads
    )
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


def _simulation(
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
    integrator = openmm.LangevinMiddleIntegrator(
        temperature_k * u.kelvin, friction_per_ps / u.picosecond, timestep_fs * u.femtosecond
    )
    integrator.setRandomNumberSeed(seed)
    plat, properties = _platform(platform, threads)
    simulation = app.Simulation(topology, system, integrator, plat, properties)
    simulation.context.setPositions(positions)
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
        raise SimulationError(
            f"the simulation stopped: {err}; lower the time step or minimise longer"
        ) from err
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
    simulation = _simulation(
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


class _ProgressReporter:
    """OpenMM reporter showing a tqdm progress bar over ``total`` steps."""

    def __init__(self, total: int, interval: int) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=total, unit="step", desc="NNP/MM MD")
        self._interval = interval
        self._last = 0

    def describeNextReport(self, simulation: app.Simulation) -> dict[str, Any]:
        steps = self._interval - simulation.currentStep % self._interval
        return {"steps": steps, "periodic": None, "include": []}

    def report(self, simulation: app.Simulation, state: openmm.State) -> None:
        self._bar.update(simulation.currentStep - self._last)
        self._last = simulation.currentStep

    def close(self) -> None:
        self._bar.close()


def run_md(
    system_settings: SystemSettings,
    simulation: SimulationSettings,
    output_dir: str | os.PathLike,
    progress: bool = False,
    platform: str = "CPU",
    threads: int = 1,
    minimize_iterations: int = 50,
    mm_benchmark_steps: int = 0,
) -> RunResult:
    """Run NNP/MM Langevin MD of the solvated system; write a DCD, a CSV log and ``run.json``.

    Parameters
    ----------
    system_settings : SystemSettings
        Structure, force field and ML region.
    simulation : SimulationSettings
        Model, embedding, steps, time step (fs), temperature (K), friction (1/ps), report interval, seed.
    output_dir : path-like
        Folder for ``trajectory.dcd``, ``md.csv`` and ``run.json`` (created if needed).
    progress : bool
        Show a progress bar.
    platform : {"CPU", "Reference"}
    threads : int
        CPU platform threads (the model runs with ``simulation.torch_threads``).
    minimize_iterations : int
        Energy-minimiser iterations before MD (the minimisation also warms the model up).
    mm_benchmark_steps : int
        If > 0, also time this many steps of the pure MM System the same way
        (:func:`benchmark_ns_per_day`) and store it in ``RunResult.mm_ns_per_day``.

    Returns
    -------
    RunResult

    Raises
    ------
    SimulationError
        If the energy becomes NaN.

    Examples
    --------
    >>> result = run_md(SystemSettings(), SimulationSettings(model_path="model.pt"), "md")  # doctest: +SKIP
    """
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    topology, mm_system, mixed, ml_atoms, positions = build_mixed_system(system_settings, simulation)
    sim = _simulation(
        topology,
        mixed,
        positions,
        simulation.timestep_fs,
        simulation.temperature_k,
        simulation.friction_per_ps,
        simulation.seed,
        platform,
        threads,
        minimize_iterations,
    )
    interval = simulation.report_interval
    trajectory, log = output / TRAJECTORY_FILE, output / LOG_FILE
    sim.reporters.append(app.DCDReporter(str(trajectory), interval))
    sim.reporters.append(
        app.StateDataReporter(
            str(log),
            interval,
            step=True,
            time=True,
            potentialEnergy=True,
            temperature=True,
            speed=True,
            separator=",",
        )
    )
    bar = _ProgressReporter(simulation.steps, interval) if progress else None
    if bar is not None:
        sim.reporters.append(bar)
    try:
        seconds, ns_per_day = _timed_steps(sim, simulation.steps, simulation.timestep_fs)
    finally:
        if bar is not None:
            bar.close()
        for reporter in sim.reporters:
            handle = getattr(reporter, "_out", None)
            if handle is not None and hasattr(handle, "close"):
                handle.close()
        sim.reporters.clear()
    energy = sim.context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    if not math.isfinite(energy):
        raise SimulationError(
            f"the potential energy is {energy} after {simulation.steps} steps; lower the time "
            "step or minimise longer"
        )
    mm_speed = None
    if mm_benchmark_steps > 0:
        mm_speed = benchmark_ns_per_day(
            mm_system,
            topology,
            positions,
            mm_benchmark_steps,
            timestep_fs=simulation.timestep_fs,
            temperature_k=simulation.temperature_k,
            friction_per_ps=simulation.friction_per_ps,
            platform=platform,
            threads=threads,
            warmup_steps=0,
            minimize_iterations=minimize_iterations,
            seed=simulation.seed,
        )
    result = RunResult(
        trajectory=trajectory,
        log=log,
        steps=simulation.steps,
        timestep_fs=simulation.timestep_fs,
        wall_seconds=seconds,
        ns_per_day=ns_per_day,
        final_potential_kj_mol=energy,
        n_ml_atoms=len(ml_atoms),
        mm_ns_per_day=mm_speed,
    )
    write_json_atomic(output / SUMMARY_FILE, result.to_dict())
    logger.info(
        "NNP/MM MD: %d steps in %.2f s, %.3g ns/day%s",
        simulation.steps,
        seconds,
        ns_per_day,
        f" (pure MM {mm_speed:.3g} ns/day)" if mm_speed else "",
    )
    return result
