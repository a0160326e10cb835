"""Temperature replica exchange and REST2 with OpenMM's own ``openmm.app.ReplicaExchangeSampler``.

OpenMM's sampler keeps **one** Context and stores each replica as a State (positions, velocities,
parameters); every iteration it runs each replica ``steps_per_iteration`` steps in its state, computes the
energy of every replica in every state and attempts ``n_states**2`` random pair swaps with the
Metropolis criterion ``min(1, exp(u_i(s_i) + u_j(s_j) - u_i(s_j) - u_j(s_i)))`` (u: reduced energies).
Its ``ReplicaExchangeReporter`` writes, into ``OUTPUT/replicas/``: ``log.csv`` (state of each replica per
iteration), ``energy.csv`` (reduced energies, for MBAR), ``state_<k>.dcd`` and ``checkpoint_<i>.xml``
(each replica's State, written atomically); a killed run started again with the same output folder
resumes from the last checkpoint. ``summary.json`` adds the states, the mean acceptance probability of
each neighbouring pair and the number of round trips.

Memory is checked before anything runs (:func:`check_memory`): one Context plus one stored State per
replica must fit in the memory available.

>>> result = run_replica_exchange(ReplicaExchangeSettings(kind="rest2"), "repex_out")  # doctest: +SKIP
>>> result.acceptance  # doctest: +SKIP
[0.41, 0.38, 0.35]
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u

from biomol_nnp.config import ReplicaExchangeSettings
from biomol_nnp.exceptions import ConfigError, InputError
from biomol_nnp.io import write_json_atomic

logger = logging.getLogger(__name__)

CONTEXT_BYTES_PER_PARTICLE = 4096
"""Memory of one CPU-platform Context per particle (PME grid, neighbour lists, forces). Measured: 4.2 kB/particle
for a 2661-atom and 3.2 kB/particle for an 8844-atom TIP3P box (RSS growth at Context creation, OpenMM 8.6.1)."""
CONTEXT_BASE_BYTES = 64 * 2**20
"""Fixed cost of a Context (platform, kernels)."""
STATE_BYTES_PER_PARTICLE = 64
"""Memory of one stored State (positions + velocities, double precision) per particle; measured 42-48 bytes."""
MODEL_BASE_BYTES = 300 * 2**20
"""torch runtime and one loaded TorchScript model (NNP/MM Systems), on top of 10x the model file size."""
MEMORY_FRACTION = 0.8
"""Fraction of the currently available memory a run may plan to use by default."""
REPLICA_DIR = "replicas"


@dataclasses.dataclass
class MemoryEstimate:
    """Planned memory of a replica-exchange run, bytes."""

    context_bytes: int
    per_replica_bytes: int
    n_replicas: int
    limit_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.context_bytes + self.n_replicas * self.per_replica_bytes


@dataclasses.dataclass
class ReplicaExchangeResult:
    """Outcome of :func:`run_replica_exchange`.

    Attributes
    ----------
    output_dir : Path
    iterations : int
        Iterations completed (over all resumed segments).
    states : list of dict
        The thermodynamic states (``temperature_k`` and/or REST2 ``scale``).
    acceptance : list of float
        Mean exchange acceptance probability between states k and k+1.
    round_trips : int
        Replica trips from the lowest to the highest state and back.
    """

    output_dir: Path
    iterations: int
    states: list[dict[str, float]]
    acceptance: list[float]
    round_trips: int

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["output_dir"] = str(self.output_dir)
        return data


def temperature_ladder(temperature_k: float, max_temperature_k: float, n_replicas: int) -> list[float]:
    """Temperatures geometric from ``temperature_k`` to ``max_temperature_k`` (K), ``n_replicas`` of them."""
    if n_replicas < 2 or not 0 < temperature_k < max_temperature_k:
        raise ConfigError(
            f"temperature ladder {temperature_k} K -> {max_temperature_k} K with {n_replicas} replicas: need "
            "0 < temperature_k < max_temperature_k and n_replicas >= 2"
        )
    return [float(t) for t in np.geomspace(temperature_k, max_temperature_k, n_replicas)]


def exchange_probability(reduced: np.ndarray, i: int, j: int, state_i: int, state_j: int) -> float:
    """Metropolis probability of swapping the states of replicas i and j.

    ``reduced[r, k]`` is the reduced energy (E / kT_k) of replica r in state k; the criterion is
    ``min(1, exp(u_i(s_i) + u_j(s_j) - u_i(s_j) - u_j(s_i)))``, as ``ReplicaExchangeSampler.exchangeReplicas``.
    """
    exponent = reduced[i, state_i] + reduced[j, state_j] - reduced[i, state_j] - reduced[j, state_i]
    return float(min(1.0, np.exp(min(exponent, 0.0))))


def neighbour_acceptance(reduced: np.ndarray, replica_states: np.ndarray) -> list[float]:
    """Mean acceptance probability of swaps between neighbouring states over a run.

    Parameters
    ----------
    reduced : numpy.ndarray, shape (iterations, n_replicas, n_states)
        Reduced energies (``energy.csv`` of the reporter).
    replica_states : numpy.ndarray, shape (iterations, n_replicas)
        State of each replica at each iteration (``log.csv``).
    """
    n_states = reduced.shape[2]
    sums = np.zeros(n_states - 1)
    for u_matrix, states in zip(reduced, replica_states, strict=True):
        replica_of = np.argsort(states)
        for k in range(n_states - 1):
            sums[k] += exchange_probability(u_matrix, replica_of[k], replica_of[k + 1], k, k + 1)
    return [float(s / max(len(reduced), 1)) for s in sums]


def count_round_trips(replica_states: np.ndarray) -> int:
    """Trips of any replica from the lowest state to the highest and back to the lowest."""
    if replica_states.size == 0:
        return 0
    top = int(replica_states.max())
    trips = 0
    for column in replica_states.T:
        looking_for: int | None = None
        for state in column:
            if looking_for is None:
                looking_for = top if state == 0 else None
            elif state == looking_for:
                trips += looking_for == 0
                looking_for = top if looking_for == 0 else 0
    return trips


def estimate_memory(system: openmm.System, n_replicas: int, limit_gb: float | None = None) -> MemoryEstimate:
    """Memory the run needs (one Context + ``n_replicas`` stored States) and the limit it must fit in."""
    import psutil

    n = system.getNumParticles()
    context = CONTEXT_BASE_BYTES + CONTEXT_BYTES_PER_PARTICLE * n
    for force in system.getForces():
        if isinstance(force, openmm.PythonForce):
            context += MODEL_BASE_BYTES + 10 * _model_file_bytes(force)
    limit = int(limit_gb * 1e9) if limit_gb is not None else int(MEMORY_FRACTION * psutil.virtual_memory().available)
    return MemoryEstimate(context, STATE_BYTES_PER_PARTICLE * n + 8 * n_replicas, n_replicas, limit)


def _model_file_bytes(force: openmm.PythonForce) -> int:
    from biomol_nnp.openmm.backend import force_callback

    callback = force_callback(force)
    inner = getattr(callback, "embedded", callback)
    path = getattr(inner, "model_path", None)
    return os.path.getsize(path) if path and os.path.isfile(path) else 0


def check_memory(estimate: MemoryEstimate) -> None:
    """Refuse a run whose planned memory exceeds the limit, with the numbers and the fix."""
    if estimate.total_bytes > estimate.limit_bytes:
        fit = max(0, (estimate.limit_bytes - estimate.context_bytes) // max(estimate.per_replica_bytes, 1))
        raise ConfigError(
            f"n_replicas={estimate.n_replicas} needs about {estimate.total_bytes / 1e9:.3g} GB (one Context "
            f"{estimate.context_bytes / 1e9:.3g} GB + {estimate.n_replicas} x "
            f"{estimate.per_replica_bytes / 1e6:.3g} MB "
            f"per replica) but only {estimate.limit_bytes / 1e9:.3g} GB may be used; lower n_replicas (at most {fit} "
            "fit), use a smaller system, or raise max_memory_gb on a machine with more memory"
        )
    logger.info(
        "memory plan: %.3g GB of %.3g GB allowed (%d replicas)",
        estimate.total_bytes / 1e9,
        estimate.limit_bytes / 1e9,
        estimate.n_replicas,
    )


def replica_states(settings: ReplicaExchangeSettings) -> list[dict[str, Any]]:
    """ReplicaExchangeSampler states: temperatures (kind 'temperature') or REST2 scales (kind 'rest2')."""
    temperatures = temperature_ladder(settings.temperature_k, settings.max_temperature_k, settings.n_replicas)
    if settings.kind == "temperature":
        return [{"temperature": t * u.kelvin} for t in temperatures]
    from biomol_nnp.sampling.rest2 import rest2_states

    return rest2_states([settings.temperature_k / t for t in temperatures])


def _describe(states: Sequence[dict[str, Any]], settings: ReplicaExchangeSettings) -> list[dict[str, float]]:
    from biomol_nnp.sampling.rest2 import SCALE

    out = []
    for state in states:
        if "temperature" in state:
            out.append({"temperature_k": float(state["temperature"].value_in_unit(u.kelvin))})
        else:
            scale = float(state[SCALE])
            out.append({"scale": scale, "effective_temperature_k": settings.temperature_k / scale})
    return out


def _load_log(folder: Path, n_states: int) -> tuple[np.ndarray, np.ndarray]:
    """(reduced energies [I, R, S], replica states [I, R]) from the reporter's files, cut to equal length."""
    log = np.loadtxt(folder / "log.csv", delimiter=",", skiprows=1, ndmin=2)
    states = log[:, 2 : 2 + n_states].astype(int)
    energy_path = folder / "energy.csv"
    if not energy_path.is_file() or energy_path.stat().st_size == 0:
        return np.zeros((0, n_states, n_states)), states[:0]
    energy = np.loadtxt(energy_path, delimiter=",", ndmin=2).reshape(-1, n_states, n_states)
    n = min(len(energy), len(states))
    return energy[:n], states[:n]


def summarize(folder: str | os.PathLike, states: list[dict[str, float]]) -> tuple[list[float], int, int]:
    """(neighbour acceptance, round trips, iterations) from a reporter folder."""
    reduced, replica_state = _load_log(Path(folder), len(states))
    return neighbour_acceptance(reduced, replica_state), count_round_trips(replica_state), len(replica_state)


def _can_resume(folder: Path, n_states: int) -> bool:
    return (folder / "log.csv").is_file() and all((folder / f"checkpoint_{i}.xml").is_file() for i in range(n_states))


def run_replica_exchange_system(
    topology: app.Topology,
    system: openmm.System,
    positions: Any,
    states: list[dict[str, Any]],
    settings: ReplicaExchangeSettings,
    output_dir: str | os.PathLike,
    progress: bool = True,
) -> ReplicaExchangeResult:
    """Replica exchange of a prepared System (REST2 parameters already in it for REST2 states).

    Parameters
    ----------
    topology, system, positions
        What to simulate (positions in nm). An NNP/MM System may have link-atom caps (virtual sites) beyond the
        topology's atoms; they are placed by ``computeVirtualSites`` and left out of the trajectories.
    states : list of dict
        ReplicaExchangeSampler states (:func:`replica_states`).
    settings : ReplicaExchangeSettings
        Integrator, iterations, reporting, memory limit.
    output_dir : path-like
        Output folder; ``OUTPUT/replicas`` with checkpoints there resumes the run.
    progress : bool
        Show a progress bar over iterations.
    """
    output = Path(output_dir)
    folder = output / REPLICA_DIR
    check_memory(estimate_memory(system, len(states), settings.max_memory_gb))
    resume = _can_resume(folder, len(states))
    if not resume and folder.is_dir() and any(folder.iterdir()):
        raise InputError(
            f"{folder} holds files of another run but no checkpoint for each of the {len(states)} replicas (a run "
            "killed before its first report, or one with another number of replicas); remove the folder to start "
            "again or give another output folder"
        )
    from biomol_nnp.simulate.runner import langevin_simulation
    from biomol_nnp.simulate.systems import with_link_sites

    n_atoms = topology.getNumAtoms()
    topology, positions = with_link_sites(topology, positions, system)  # link-atom caps of an NNP region
    simulation = langevin_simulation(  # on resume the replicas' checkpointed states replace this start
        topology,
        system,
        positions,
        settings.timestep_fs,
        settings.temperature_k,
        settings.friction_per_ps,
        settings.seed,
        settings.platform,
        settings.threads,
        0 if resume else settings.minimize_iterations,
    )
    sampler = app.ReplicaExchangeSampler(states, simulation, settings.steps_per_iteration)
    reporter = app.ReplicaExchangeReporter(
        str(folder),
        settings.report_interval,
        sampler,
        trajectoryPerState=settings.trajectories,
        trajectoryFormat="dcd",
        atomSubset=list(range(n_atoms)),
        energy=True,
        checkpoints=True,
        resume=resume,
    )
    sampler.reporters.append(reporter)
    if resume:
        simulation.currentStep = sampler.currentIteration * settings.steps_per_iteration
        logger.info("resuming replica exchange in %s at iteration %d", folder, sampler.currentIteration)
    else:
        for index in range(len(states)):
            sampler.simulateReplica(index, settings.equilibration_steps)
    random.seed(settings.seed + sampler.currentIteration)  # the sampler draws its exchanges from `random`
    _iterate(sampler, settings.iterations - sampler.currentIteration, progress)
    described = _describe(states, settings)
    acceptance, trips, iterations = summarize(folder, described)
    result = ReplicaExchangeResult(output, iterations, described, acceptance, trips)
    write_json_atomic(output / "summary.json", {**result.to_dict(), "settings": settings.model_dump(mode="json")})
    logger.info(
        "replica exchange: %d iterations, neighbour acceptance %s, %d round trips", iterations, acceptance, trips
    )
    return result


def _iterate(sampler: app.ReplicaExchangeSampler, iterations: int, progress: bool) -> None:
    from tqdm import tqdm

    for _ in tqdm(range(max(iterations, 0)), desc="replica exchange", disable=not progress, unit="it"):
        sampler.simulate(1)


def _region(settings: ReplicaExchangeSettings, sampled: Any) -> list[int]:
    """REST2 region: rest2_region_selection, the ML region, or the system settings' region."""
    if settings.rest2_region_selection:
        from biomol_nnp.prepare import select_region

        return select_region(settings.system.pdb, settings.rest2_region_selection)
    if sampled.ml_atoms:
        return list(sampled.ml_atoms)
    from biomol_nnp.sampling.systems import region_atoms_of

    return region_atoms_of(settings.system, sampled.topology)


def run_replica_exchange(
    settings: ReplicaExchangeSettings, output_dir: str | os.PathLike, progress: bool = True
) -> ReplicaExchangeResult:
    """Temperature replica exchange or REST2 of the System described by ``settings.system``.

    The System comes from :func:`biomol_nnp.sampling.systems.build_sampling_system` (pure MM, NNP/MM or
    refitted force field); for REST2 its region is rewritten by :func:`biomol_nnp.sampling.rest2.rest2_system`.
    Outputs: see the module docstring. Running again with the same ``output_dir`` resumes.
    """
    from biomol_nnp.sampling.systems import build_sampling_system

    states = replica_states(settings)
    sampled = build_sampling_system(settings.system)
    system = sampled.system
    if settings.kind == "rest2":
        from biomol_nnp.sampling.rest2 import rest2_system

        region = _region(settings, sampled)
        if not region:
            raise InputError("the REST2 region is empty; set rest2_region_selection or system.region_residues")
        system = rest2_system(system, region)
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    settings.to_yaml(Path(output_dir) / "repex.yaml")
    return run_replica_exchange_system(
        sampled.topology, system, sampled.positions, states, settings, output_dir, progress
    )
