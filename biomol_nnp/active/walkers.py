"""NNP/MM walkers of the active-learning loop: short Langevin runs whose frames are carved and scored.

Each walker is one task (a Dask task, or a call in this process): it builds the NNP/MM System with
:func:`biomol_nnp.simulate.runner.build_mixed_system`, minimises, runs ``steps`` Langevin steps with its own
seed and, every ``interval`` steps, carves the region with its point charges
(:func:`biomol_nnp.qm.clusters.carve_region`, the configuration that would be labelled) and scores it with
:func:`biomol_nnp.simulate.uncertainty.ensemble_uncertainty`. A walker that fails returns the frames it had
and the reason; a task that cannot run at all (a worker killed) is recorded by :func:`run_walkers` the same
way, and the iteration goes on with the other walkers.

>>> results = run_walkers(settings, "model.pt", iteration=1, client=None)  # doctest: +SKIP
>>> [r.error for r in results]  # doctest: +SKIP
['', '']
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from biomol_nnp.config import PipelineSettings
from biomol_nnp.qm.sampling import Configuration
from biomol_nnp.train.trainer import torch_threads

logger = logging.getLogger(__name__)

ACTIVE_SOURCE = "active-learning"
"""``Configuration.source`` of the frames the walkers produce."""


@dataclass
class WalkerResult:
    """What one walker produced.

    Attributes
    ----------
    walker : int
        Walker number within the iteration.
    seed : int
        Seed of its velocities and Langevin integrator.
    configs : list of Configuration
        Carved frames (region with link atoms, point charges within the sampling cutoff).
    energy_std : list of float
        Ensemble energy standard deviation of each frame, kJ/mol.
    force_std : list of float
        Largest per-atom ensemble force standard deviation of each frame, kJ/mol/nm.
    error : str
        Why the walker stopped early ("" when it finished).
    seconds : float
        Wall time, s.
    """

    walker: int
    seed: int
    configs: list[Configuration] = field(default_factory=list)
    energy_std: list[float] = field(default_factory=list)
    force_std: list[float] = field(default_factory=list)
    error: str = ""
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        """JSON-ready description without the configurations."""
        return {
            "walker": self.walker,
            "seed": self.seed,
            "frames": len(self.configs),
            "energy_std_kj_per_mol": self.energy_std,
            "max_force_std_kj_per_mol_nm": self.force_std,
            "error": self.error,
            "seconds": self.seconds,
        }


def walker_seed(base: int, iteration: int, walker: int) -> int:
    """Seed of walker ``walker`` in iteration ``iteration`` (never 0, which OpenMM reads as random)."""
    return (base + 1000 * iteration + walker) % (2**31 - 1) or 1


def run_walker(
    settings: PipelineSettings, model_path: str, iteration: int, walker: int, threads: int = 1
) -> WalkerResult:
    """Run one walker and score its frames; never raises (a failure is returned in ``error``).

    Parameters
    ----------
    settings : PipelineSettings
        ``system`` (structure, region), ``simulation`` (time step fs, temperature K, friction 1/ps, embedding),
        ``sampling.point_charge_cutoff_nm`` (carving) and ``active`` (steps, interval, minimiser, seed).
    model_path : str
        Deployed model the walker runs with.
    iteration, walker : int
        Iteration and walker numbers (seed and trajectory id of the frames).
    threads : int
        OpenMM CPU threads (the model runs with ``simulation.torch_threads``).
    """
    active = settings.active
    result = WalkerResult(walker=walker, seed=walker_seed(active.seed, iteration, walker))
    started = time.perf_counter()
    try:
        with torch_threads(settings.simulation.torch_threads):
            for config, energy_std, force_std in _frames(settings, model_path, iteration, walker, result.seed, threads):
                result.configs.append(config)
                result.energy_std.append(energy_std)
                result.force_std.append(force_std)
    except Exception as err:  # noqa: BLE001 - a crashed walker is recorded, the iteration continues
        result.error = f"{type(err).__name__}: {' '.join(str(err).split())}"
        logger.warning("walker %d of iteration %d stopped: %s", walker, iteration, result.error)
    result.seconds = time.perf_counter() - started
    return result


def _frames(
    settings: PipelineSettings, model_path: str, iteration: int, walker: int, seed: int, threads: int
) -> Iterator[tuple[Configuration, float, float]]:
    """Run the walker's MD and yield (carved frame, energy std, max force std) every ``frame_interval`` steps."""
    import openmm
    import openmm.unit as u

    from biomol_nnp.exceptions import SimulationError
    from biomol_nnp.models.export import load_model
    from biomol_nnp.qm.clusters import carve_region
    from biomol_nnp.simulate.runner import build_mixed_system
    from biomol_nnp.simulate.uncertainty import ensemble_uncertainty

    simulation = settings.simulation.model_copy(update={"model_path": Path(model_path)})
    topology, mm_system, mixed, ml_atoms, positions = build_mixed_system(settings.system, simulation)
    module, _ = load_model(model_path)
    region_residues = sorted({atom.residue.index for atom in topology.atoms() if atom.index in set(ml_atoms)})
    nonbonded = next(f for f in mm_system.getForces() if isinstance(f, openmm.NonbondedForce))
    charges = np.array(
        [nonbonded.getParticleParameters(i)[0].value_in_unit(u.elementary_charge) for i in range(len(positions))]
    )
    sim = walker_simulation(settings, topology, mm_system, mixed, positions, seed, threads)
    interval = settings.active.frame_interval
    for frame in range(settings.active.walker_steps // interval):
        sim.step(interval)
        state = sim.context.getState(getPositions=True, getEnergy=True, enforcePeriodicBox=False)
        xyz = np.asarray(state.getPositions(asNumpy=True).value_in_unit(u.nanometer))
        energy = state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
        if not (np.all(np.isfinite(xyz)) and math.isfinite(energy)):
            raise SimulationError(f"NaN positions or energy at step {(frame + 1) * interval}")
        box = np.asarray(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(u.nanometer))
        config = carve_region(
            topology,
            xyz,
            box,
            region_residues,
            charges,
            settings.sampling.point_charge_cutoff_nm,
            source=ACTIVE_SOURCE,
            frame=frame,
        )
        config.trajectory_id = 1000 * iteration + walker
        energy_std, force_std = ensemble_uncertainty(
            module, config.positions, config.atomic_numbers, config.total_charge, config.mm_positions, config.mm_charges
        )
        yield config, energy_std, force_std
        cap = settings.active.walker_stop_force_std_kj_per_mol_nm
        if cap is not None and force_std > cap:
            logger.info(
                "walker %d of iteration %d stopped at frame %d: max force std %.0f > %.0f kJ/mol/nm",
                walker,
                iteration,
                frame,
                force_std,
                cap,
            )
            return


def walker_simulation(
    settings: PipelineSettings,
    topology: Any,
    mm_system: Any,
    mixed_system: Any,
    positions: Any,
    seed: int,
    threads: int,
) -> Any:
    """The walker's NNP/MM Simulation, ready to step: minimised on the NNP/MM surface, or with
    ``active.mm_equilibration_steps`` > 0 at the MM-equilibrated positions as they are.

    A walker that starts from MM-equilibrated solvent is not minimised again on the NNP/MM surface: the minimiser
    finds the holes of a model that has not learnt the embedding yet (measured with the benchmark's vacuum-trained
    model: an intra-region distance of 0.07 nm and an embedding energy of -3500 +- 1900 kJ/mol after 50 iterations,
    NaN 30 steps later; unminimised, the same walker ran stably).
    """
    start = _mm_equilibrated(settings, topology, mm_system, positions, seed, threads)
    minimize = settings.active.minimize_iterations if settings.active.mm_equilibration_steps == 0 else 0
    return _walker_simulation(settings, topology, mixed_system, start, seed, threads, minimize)


def _mm_equilibrated(
    settings: PipelineSettings, topology: Any, mm_system: Any, positions: Any, seed: int, threads: int
) -> Any:
    """Positions after ``active.mm_equilibration_steps`` of pure MM MD, minimised on the MM surface first (the input
    positions if 0)."""
    steps = settings.active.mm_equilibration_steps
    if steps == 0:
        return positions
    sim = _walker_simulation(
        settings, topology, mm_system, positions, seed, threads, settings.active.minimize_iterations
    )
    sim.step(steps)
    return sim.context.getState(getPositions=True).getPositions(asNumpy=True)


def _walker_simulation(
    settings: PipelineSettings, topology: Any, system: Any, positions: Any, seed: int, threads: int, minimize: int
) -> Any:
    """A Langevin Simulation of ``system`` on the CPU with the run's time step, temperature and friction, minimised
    for ``minimize`` iterations (0: not minimised)."""
    from biomol_nnp.simulate.runner import langevin_simulation

    simulation = settings.simulation
    return langevin_simulation(
        topology,
        system,
        positions,
        simulation.timestep_fs,
        simulation.temperature_k,
        simulation.friction_per_ps,
        seed,
        "CPU",
        threads,
        minimize,
    )


def run_walkers(
    settings: PipelineSettings, model_path: str | Path, iteration: int, client: Any = None
) -> list[WalkerResult]:
    """Run ``settings.active.walkers`` walkers, as Dask tasks on ``client`` or one after another in this process.

    A task that raises (a worker lost twice, a serialisation error) becomes a result with no frames and the
    reason in ``error``.
    """
    count = settings.active.walkers
    if client is None:
        return [run_walker(settings, str(model_path), iteration, walker) for walker in range(count)]
    futures = [
        client.submit(run_walker, settings, str(model_path), iteration, walker, pure=False) for walker in range(count)
    ]
    results = []
    for walker, future in enumerate(futures):
        try:
            results.append(future.result())
        except Exception as err:  # noqa: BLE001 - a lost task is one failed walker, the others go on
            reason = f"dask: {type(err).__name__}: {' '.join(str(err).split())}"
            logger.warning("walker %d of iteration %d failed: %s", walker, iteration, reason)
            results.append(WalkerResult(walker, walker_seed(settings.active.seed, iteration, walker), error=reason))
    return results
