"""OpenMM reporters of a production run (reporter protocol: ``describeNextReport`` / ``report``).

The runner installs them in this order, which the checkpoint logic relies on:

1. :class:`NaNGuard` - first, so a non-finite state is never written; keeps the last good state;
2. the trajectory (:class:`DCDTrajectoryReporter` or ``openmm.app.XTCReporter``);
3. :class:`LogReporter` - one CSV row per report: energies per term, temperature, volume, uncertainty,
   progress, speed and remaining time;
4. :class:`UncertaintyGuard` - acts on the uncertainty the log just measured;
5. :class:`CheckpointReporter` - last, so a checkpoint at step S follows every file's report of step S.

>>> log = LogReporter("md.csv", 50, total_steps=1000, groups=run_system.groups)  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u

from biomol_nnp.exceptions import SimulationError
from biomol_nnp.io import write_text_atomic
from biomol_nnp.simulate.uncertainty import ModelMonitor, MonitorValues

logger = logging.getLogger(__name__)


class RunStoppedError(SimulationError):
    """A guard stopped the run (non-finite state); the last good state was saved."""


LOG_COLUMNS = (
    "step",
    "time_ps",
    "potential_kj_mol",
    "kinetic_kj_mol",
    "total_kj_mol",
    "temperature_k",
    "volume_nm3",
    "mm_kj_mol",
    "nnp_kj_mol",
    "nnp_vacuum_kj_mol",
    "embedding_kj_mol",
    "restraints_kj_mol",
    "energy_std_kj_mol",
    "max_force_std_kj_mol_nm",
    "progress_percent",
    "speed_ns_day",
    "remaining_s",
)
"""Columns of the run log (``md.csv``); the header line starts with ``#``."""


def _next(interval: int, simulation: app.Simulation, include: list[str]) -> dict[str, Any]:
    steps = interval - simulation.currentStep % interval
    return {"steps": steps, "periodic": None, "include": include}


def _energy(context: openmm.Context, groups: list[int]) -> float:
    if not groups:
        return 0.0
    state = context.getState(getEnergy=True, groups=set(groups))
    return float(state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole))


def _box(state: openmm.State) -> np.ndarray | None:
    vectors = state.getPeriodicBoxVectors(asNumpy=True)
    return None if vectors is None else np.asarray(vectors.value_in_unit(u.nanometer))


class DCDTrajectoryReporter(app.DCDReporter):
    """``openmm.app.DCDReporter`` that can flush its file (for checkpoints) and close it."""

    def __init__(self, file: str | Path, interval: int, append: bool = False) -> None:
        super().__init__(str(file), interval, append=append)
        self.path = Path(file)

    def flush(self) -> None:
        self._out.flush()

    def close(self) -> None:
        self._out.close()


class LogReporter:
    """CSV log: energies per term, temperature, volume, ensemble uncertainty, progress, speed, remaining time.

    Parameters
    ----------
    file : path-like
        CSV file; opened for appending when ``append`` (resume), else overwritten.
    interval : int
        Steps between rows.
    total_steps : int
        Last step of the run (for progress and remaining time).
    groups : dict of str to list of int
        Force groups of ``"mm"``, ``"nnp"``, ``"restraints"`` (`biomol_nnp.simulate.systems.RunSystem.groups`).
    dof : int
        Degrees of freedom (for the temperature).
    monitor : ModelMonitor, optional
        Splits the model energy into vacuum NNP and embedding, and measures the uncertainty.

    Examples
    --------
    >>> simulation.reporters.append(LogReporter("md.csv", 50, 1000, groups, dof))  # doctest: +SKIP
    """

    def __init__(
        self,
        file: str | Path,
        interval: int,
        total_steps: int,
        groups: dict[str, list[int]],
        dof: int,
        monitor: ModelMonitor | None = None,
        append: bool = False,
    ) -> None:
        self.path = Path(file)
        self._interval = int(interval)
        self._total = int(total_steps)
        self._groups = groups
        self._dof = max(int(dof), 1)
        self.monitor = monitor
        self._handle = self.path.open("a" if append else "w", newline="")
        self._writer = csv.writer(self._handle)
        if not append or self.path.stat().st_size == 0:
            self._handle.write("#" + ",".join(f'"{c}"' for c in LOG_COLUMNS) + "\n")
            self._handle.flush()
        self._clock: tuple[float, int] | None = None

    def describeNextReport(self, simulation: app.Simulation) -> dict[str, Any]:
        return _next(self._interval, simulation, ["positions", "energy"])

    def _speed(self, step: int, simulation: app.Simulation) -> tuple[float, float]:
        now = time.perf_counter()
        if self._clock is None:
            self._clock = (now, step)
            return float("nan"), float("nan")
        seconds, steps = now - self._clock[0], step - self._clock[1]
        if steps <= 0 or seconds <= 0:
            return float("nan"), float("nan")
        dt_ns = simulation.integrator.getStepSize().value_in_unit(u.nanosecond)
        return steps * dt_ns / seconds * 86400.0, (self._total - step) * seconds / steps

    def report(self, simulation: app.Simulation, state: openmm.State) -> None:
        step = simulation.currentStep
        potential = state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
        kinetic = state.getKineticEnergy().value_in_unit(u.kilojoule_per_mole)
        mm = _energy(simulation.context, self._groups["mm"])
        restraints = _energy(simulation.context, self._groups["restraints"])
        nnp = potential - mm - restraints if self._groups["nnp"] else 0.0
        values: MonitorValues | None = None
        if self.monitor is not None:
            values = self.monitor.evaluate(state.getPositions(asNumpy=True).value_in_unit(u.nanometer), _box(state))
            self.monitor.last = (step, values)
        vacuum = values.vacuum_energy if values is not None else float("nan")
        box = _box(state)
        speed, remaining = self._speed(step, simulation)
        temperature = (
            2.0 * kinetic / (self._dof * u.MOLAR_GAS_CONSTANT_R.value_in_unit(u.kilojoule_per_mole / u.kelvin))
        )
        row = [
            step,
            state.getTime().value_in_unit(u.picosecond),
            potential,
            kinetic,
            potential + kinetic,
            temperature,
            float(np.linalg.det(box)) if box is not None else float("nan"),
            mm,
            nnp,
            vacuum,
            nnp - vacuum if values is not None else float("nan"),
            restraints,
            values.energy_std if values is not None else float("nan"),
            values.max_force_std if values is not None else float("nan"),
            100.0 * step / self._total,
            speed,
            remaining,
        ]
        self._writer.writerow([f"{v:.10g}" if isinstance(v, float) else v for v in row])
        self._handle.flush()

    def flush(self) -> None:
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def write_frame_pdb(path: Path, simulation: app.Simulation, state: openmm.State) -> Path:
    """The positions of ``state`` as a PDB (with its box), written atomically."""
    buffer = io.StringIO()
    topology = simulation.topology
    vectors = state.getPeriodicBoxVectors()
    if vectors is not None:
        topology.setPeriodicBoxVectors(vectors)
    app.PDBFile.writeFile(topology, state.getPositions(), buffer, keepIds=True)
    return write_text_atomic(path, buffer.getvalue())


class NaNGuard:
    """Stop on a non-finite energy or position; write the last good State (XML and PDB) first.

    Raises SimulationError naming the step, the last good step and the files, with the usual remedies.
    """

    def __init__(self, interval: int, folder: str | Path) -> None:
        self._interval = int(interval)
        self._folder = Path(folder)
        self._last_good: tuple[int, openmm.State] | None = None

    def describeNextReport(self, simulation: app.Simulation) -> dict[str, Any]:
        return _next(self._interval, simulation, ["positions", "velocities", "energy"])

    def remember(self, simulation: app.Simulation) -> None:
        """Record the current State as good (at the start of a run)."""
        state = simulation.context.getState(getPositions=True, getVelocities=True)
        self._last_good = (simulation.currentStep, state)

    def report(self, simulation: app.Simulation, state: openmm.State) -> None:
        energy = state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
        positions = state.getPositions(asNumpy=True).value_in_unit(u.nanometer)
        if math.isfinite(energy) and np.isfinite(positions).all():
            self._last_good = (simulation.currentStep, state)
            return
        self.fail(simulation, f"the potential energy is {energy}")

    def fail(self, simulation: app.Simulation, what: str) -> None:
        """Save the last good State and raise SimulationError."""
        saved = "no good state was recorded"
        if self._last_good is not None:
            step, good = self._last_good
            xml = write_text_atomic(self._folder / "last_good_state.xml", openmm.XmlSerializer.serialize(good))
            pdb = write_frame_pdb(self._folder / "last_good_state.pdb", simulation, good)
            saved = f"the last good state (step {step}) is in {xml} and {pdb}"
        raise RunStoppedError(
            f"{what} at step {simulation.currentStep}; {saved}. Lower simulation.timestep_fs (or remove "
            "hydrogen mass repartitioning), minimise longer, or check the model (`biomol-nnp check-nve`, "
            "the uncertainty columns of md.csv)"
        )


class UncertaintyGuard:
    """Act when the max per-atom force std (from the log's monitor) exceeds a threshold.

    ``action``: ``"warn"`` logs; ``"collect"`` calls ``collect(step, state, values)`` and goes on;
    ``"stop"`` calls ``stop(step, state, values)`` (the runner saves a checkpoint and the frame, then stops).
    """

    def __init__(
        self,
        interval: int,
        monitor: ModelMonitor,
        threshold: float,
        action: str,
        collect: Callable[[int, openmm.State, MonitorValues], None],
        stop: Callable[[int, openmm.State, MonitorValues], None],
    ) -> None:
        self._interval = int(interval)
        self._monitor = monitor
        self._threshold = float(threshold)
        self._action = action
        self._collect, self._stop = collect, stop
        self.count = 0

    def describeNextReport(self, simulation: app.Simulation) -> dict[str, Any]:
        return _next(self._interval, simulation, ["positions"])

    def report(self, simulation: app.Simulation, state: openmm.State) -> None:
        last = self._monitor.last
        if last is None or last[0] != simulation.currentStep:
            return
        values = last[1]
        if not values.max_force_std > self._threshold:
            return
        self.count += 1
        logger.warning(
            "step %d: max force std %.3g kJ/mol/nm above the threshold %.3g (energy std %.3g kJ/mol): %s",
            simulation.currentStep,
            values.max_force_std,
            self._threshold,
            values.energy_std,
            self._action,
        )
        if self._action == "collect":
            self._collect(simulation.currentStep, state, values)
        elif self._action == "stop":
            self._stop(simulation.currentStep, state, values)


class CheckpointReporter:
    """Call ``save()`` every ``interval`` steps (the runner's checkpoint of the Context and the output files)."""

    def __init__(self, interval: int, save: Callable[[], None]) -> None:
        self._interval = int(interval)
        self._save = save

    def describeNextReport(self, simulation: app.Simulation) -> dict[str, Any]:
        return _next(self._interval, simulation, [])

    def report(self, simulation: app.Simulation, state: openmm.State) -> None:
        self._save()


class ProgressReporter:
    """tqdm progress bar over the run's steps (starts at the resumed step)."""

    def __init__(self, total: int, interval: int, start: int = 0) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=total, initial=start, unit="step", desc="MD")
        self._interval = interval
        self._last = start

    def describeNextReport(self, simulation: app.Simulation) -> dict[str, Any]:
        return _next(self._interval, simulation, [])

    def report(self, simulation: app.Simulation, state: openmm.State) -> None:
        self._bar.update(simulation.currentStep - self._last)
        self._last = simulation.currentStep

    def close(self) -> None:
        self._bar.close()
