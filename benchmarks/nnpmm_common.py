"""Shared pieces of the NNP/MM benchmarks (nnpmm_speed.py, nnpmm_scaling.py, nnpmm_memory.py).

- :func:`speed_model`: a deployed ANI-style ensemble (default ``ModelSettings``, 3 members) with
  **random weights**. The cost of a force evaluation does not depend on the weight values (same
  descriptors, same layers, same autograd), so speed and memory are measured with it; the energies are
  meaningless. ``demo_output/model/model.pt`` is used instead when it exists.
- :func:`nearest_residues`: one region definition for every system: whole residues (protein or
  water) in order of distance from a centre atom until ``n_atoms`` are reached, skipping charged residues
  and residues with elements the model does not cover (ions, Met/Cys sulfur).
- :func:`run_timed`: wall and CPU time of Langevin steps on OpenMM's CPU platform; :class:`TimedCallback`
  records the wall and CPU time spent inside the NNP callback itself. The development machine is shared
  (load averages of 10-25 on 2 cores were seen), so the CPU times are reported beside the wall times: they
  measure the work, not the queue for the cores.
"""

from __future__ import annotations

import platform
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
DEMO_MODEL = ROOT / "demo_output" / "model" / "model.pt"
MODEL_ELEMENTS = (1, 6, 7, 8)


def speed_model(path: Path, given: str | None = None) -> tuple[Path, str]:
    """A deployed model for timing: ``given``, else the demo model when present, else random weights at ``path``."""
    if given:
        return Path(given), f"{given} (given with --model)"
    if DEMO_MODEL.is_file():
        return DEMO_MODEL, "demo_output/model/model.pt (trained)"
    from biomol_nnp.config import ModelSettings
    from biomol_nnp.models.ani import build_ensemble
    from biomol_nnp.models.export import build_metadata, save_model

    torch.manual_seed(0)
    settings = ModelSettings()
    model = build_ensemble(settings, 3).double()
    metadata = build_metadata(
        settings.elements,
        settings.radial_cutoff_nm,
        settings.embedding_cutoff_nm,
        3,
        "none (random weights: timing only)",
        "none",
        embedding_switch_width_nm=settings.embedding_switch_width_nm,
        training_total_charges=[-2, -1, 0, 1, 2],
        architecture="ani",
        dtype="float64",
        settings=settings.model_dump(mode="json"),
    )
    save_model(model, path, metadata)
    return path, "random weights, default ModelSettings, 3 members (cost does not depend on weights)"


def nearest_residues(
    topology: app.Topology,
    system: openmm.System,
    positions: np.ndarray,
    centre_atom: int,
    n_atoms: int,
    box: np.ndarray | None,
) -> list[int]:
    """Atoms of the whole, neutral residues closest (minimum image) to ``centre_atom``, until ``n_atoms`` are taken.

    Charged residues are skipped so the region is neutral (models trained on neutral regions accept it).
    """
    from biomol_nnp.qm.sampling import minimum_image

    nonbonded = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    charge = np.array([nonbonded.getParticleParameters(i)[0] / u.elementary_charge for i in range(len(positions))])

    delta = positions - positions[centre_atom]
    distance = np.linalg.norm(minimum_image(delta, box) if box is not None else delta, axis=1)
    residues = list(topology.residues())
    residue_distance = [min(distance[a.index] for a in residue.atoms()) for residue in residues]
    region: list[int] = []
    for k in np.argsort(residue_distance):
        atoms = list(residues[k].atoms())
        if any(a.element is None or a.element.atomic_number not in MODEL_ELEMENTS for a in atoms):
            continue
        if abs(charge[[a.index for a in atoms]].sum()) > 1e-3:
            continue
        region += [a.index for a in atoms]
        if len(region) >= n_atoms:
            break
    return sorted(region)


def central_alpha_carbon(topology: app.Topology, positions: np.ndarray) -> int:
    """The protein CA closest to the protein's centroid (a buried, well-defined centre)."""
    cas = [a.index for a in topology.atoms() if a.name == "CA" and a.residue.name not in ("HOH", "WAT")]
    centroid = positions[cas].mean(axis=0)
    return cas[int(np.argmin(np.linalg.norm(positions[cas] - centroid, axis=1)))]


class TimedCallback:
    """Wraps a PythonForce computation; records the wall time (``seconds``) and the CPU time of the calling
    thread (``cpu_seconds``, insensitive to other processes competing for the cores) of each call."""

    seconds: list[float] = []
    cpu_seconds: list[float] = []

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, state: openmm.State) -> Any:
        start, cpu = time.perf_counter(), time.thread_time()
        result = self.inner(state)
        TimedCallback.seconds.append(time.perf_counter() - start)
        TimedCallback.cpu_seconds.append(time.thread_time() - cpu)
        return result

    @staticmethod
    def clear() -> None:
        TimedCallback.seconds.clear()
        TimedCallback.cpu_seconds.clear()


def timed(system: openmm.System) -> openmm.System:
    """A copy of ``system`` whose PythonForces run through :class:`TimedCallback` (same particles, group, name)."""
    from biomol_nnp.openmm.backend import force_callback

    copy = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    indices = [k for k, force in enumerate(copy.getForces()) if isinstance(force, openmm.PythonForce)]
    for index in reversed(indices):
        force = copy.getForce(index)
        wrapped = openmm.PythonForce(TimedCallback(force_callback(force)))
        wrapped.setParticles(force.getParticles())
        wrapped.setUsesPeriodicBoundaryConditions(force.usesPeriodicBoundaryConditions())
        wrapped.setForceGroup(force.getForceGroup())
        wrapped.setName(force.getName())
        copy.removeForce(index)
        copy.addForce(wrapped)
    return copy


def make_context(system: openmm.System, positions: Any, time_step_fs: float = 1.0) -> openmm.Context:
    """CPU-platform Context with a 300 K Langevin integrator; link-cap virtual sites are placed from their atoms."""
    integrator = openmm.LangevinMiddleIntegrator(300 * u.kelvin, 1 / u.picosecond, time_step_fs * u.femtosecond)
    integrator.setRandomNumberSeed(1)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"))
    xyz = np.asarray(positions.value_in_unit(u.nanometer))
    caps = system.getNumParticles() - len(xyz)  # link-hydrogen virtual sites appended by the embedding
    context.setPositions(np.vstack([xyz, np.zeros((caps, 3))]) * u.nanometer)
    context.computeVirtualSites()
    context.setVelocitiesToTemperature(300 * u.kelvin, 1)
    return context


def run_steps(context: openmm.Context, steps: int) -> float:
    """Wall seconds of ``steps`` integrator steps."""
    return run_timed(context, steps)[0]


def run_timed(context: openmm.Context, steps: int) -> tuple[float, float]:
    """Wall seconds and CPU seconds (all threads of this process: OpenMM's and the callback's) of ``steps`` steps.

    On a machine shared with other jobs the wall time grows with their load; the CPU time is the work done.
    """
    start, cpu = time.perf_counter(), time.process_time()
    context.getIntegrator().step(steps)
    return time.perf_counter() - start, time.process_time() - cpu


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far, GB (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def machine() -> dict[str, Any]:
    """Where the numbers were measured."""
    import os

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "openmm": openmm.__version__,
        "torch": torch.__version__,
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "openmm_platform": "CPU",
        "torch_threads_in_callback": 1,
    }
