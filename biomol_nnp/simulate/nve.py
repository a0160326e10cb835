"""Energy-conservation check: a short NVE (velocity Verlet) run and its total-energy drift.

Forces that are not the exact gradient of the energy (a model bug, a discontinuous cutoff, an
approximate embedding force) make the total energy drift even at small time steps; a correct model
shows only the integrator's O(dt^2) fluctuation. Reported:

- ``drift_kj_mol_ns``: slope of a least-squares line through the total energy, kJ/mol/ns;
- ``drift_kj_mol_ns_dof``: the same per degree of freedom (3 N - constraints - 3), kJ/mol/ns/DOF;
- ``fluctuation_kj_mol``: RMS deviation of the total energy from that line, kJ/mol, and its ratio to the
  RMS fluctuation of the kinetic energy (well below 1 for a good integration);
- ``max_deviation_kj_mol``: largest |E(t) - E(0)|.

Constraints (HBonds, rigid water) are kept and solved to ``constraint_tolerance`` (1e-8 by default), so
the check runs on the production System; the barostat is removed and the thermostat replaced.

>>> result = check_nve(SystemSettings(), SimulationSettings(model_path="model.pt"), "nve")  # doctest: +SKIP
>>> result.drift_kj_mol_ns_dof  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import openmm
import openmm.unit as u

from biomol_nnp.config import SimulationSettings, SystemSettings
from biomol_nnp.exceptions import InputError, SimulationError
from biomol_nnp.io import atomic_path, write_json_atomic
from biomol_nnp.simulate.systems import build_run_system, degrees_of_freedom

logger = logging.getLogger(__name__)

NVE_FILE = "nve.json"
NVE_PLOT = "nve.png"


@dataclasses.dataclass
class NVEResult:
    """Energy conservation of one NVE run (see the module docstring for the definitions).

    Attributes
    ----------
    steps : int
    timestep_fs : float
    dof : int
        Degrees of freedom.
    drift_kj_mol_ns : float
    drift_kj_mol_ns_dof : float
    fluctuation_kj_mol : float
    fluctuation_ratio : float
        RMS total-energy fluctuation / RMS kinetic-energy fluctuation.
    max_deviation_kj_mol : float
    mean_temperature_k : float
    times_ps : list of float
    total_kj_mol : list of float
    """

    steps: int
    timestep_fs: float
    dof: int
    drift_kj_mol_ns: float
    drift_kj_mol_ns_dof: float
    fluctuation_kj_mol: float
    fluctuation_ratio: float
    max_deviation_kj_mol: float
    mean_temperature_k: float
    times_ps: list[float]
    total_kj_mol: list[float]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return dataclasses.asdict(self)


def _drop_thermostat_and_barostat(system: openmm.System) -> openmm.System:
    copy = openmm.XmlSerializer.clone(system)
    for index in reversed(range(copy.getNumForces())):
        if isinstance(copy.getForce(index), openmm.MonteCarloBarostat | openmm.AndersenThermostat):
            copy.removeForce(index)
    return copy


def nve_drift(
    system: openmm.System,
    positions: Any,
    steps: int,
    timestep_fs: float = 0.5,
    temperature_k: float = 300.0,
    report_interval: int = 10,
    platform: str = "CPU",
    threads: int = 1,
    seed: int = 1,
    minimize_iterations: int = 100,
    constraint_tolerance: float = 1e-8,
) -> NVEResult:
    """Run ``steps`` of velocity Verlet from ``positions`` (minimised, velocities at ``temperature_k``).

    Parameters
    ----------
    system : openmm.System
        Any System (barostats and Andersen thermostats are removed from a copy).
    positions : openmm.unit.Quantity or array, shape (n_atoms, 3)
        nm.
    steps, report_interval : int
        NVE steps; steps between energy samples (at least 3 samples; the first after ``report_interval``
        steps, since the kinetic energy of the initial leapfrog velocities is off by half a step).
    timestep_fs, temperature_k : float
        fs; K for the initial velocities.
    platform : {"CPU", "Reference"}
    threads, seed, minimize_iterations : int
    constraint_tolerance : float
        Relative constraint tolerance of the integrator.

    Returns
    -------
    NVEResult

    Examples
    --------
    >>> nve_drift(system, positions, steps=2000).drift_kj_mol_ns_dof  # doctest: +SKIP
    """
    from biomol_nnp.simulate.runner import _platform

    if steps // report_interval < 3:
        raise InputError(
            f"steps={steps} with report_interval={report_interval} gives {steps // report_interval} energy samples; "
            "give at least 3 (more steps or a smaller interval)"
        )
    nve_system = _drop_thermostat_and_barostat(system)
    integrator = openmm.VerletIntegrator(timestep_fs * u.femtosecond)
    integrator.setConstraintTolerance(constraint_tolerance)
    plat, properties = _platform(platform, threads)
    context = openmm.Context(nve_system, integrator, plat, properties)
    context.setPositions(positions)
    if minimize_iterations > 0:
        openmm.LocalEnergyMinimizer.minimize(context, 10.0, minimize_iterations)
    context.setVelocitiesToTemperature(temperature_k * u.kelvin, seed)
    context.applyVelocityConstraints(1e-10)
    dof = degrees_of_freedom(nve_system)
    times: list[float] = []
    totals: list[float] = []
    kinetics: list[float] = []
    for _ in range(steps // report_interval):
        integrator.step(report_interval)  # no sample at t=0: leapfrog velocities are not yet at full steps
        state = context.getState(getEnergy=True)
        kinetic = state.getKineticEnergy().value_in_unit(u.kilojoule_per_mole)
        total = kinetic + state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
        if not np.isfinite(total):
            raise SimulationError(
                f"the total energy is {total} after {len(times) * report_interval} NVE steps; lower nve_timestep_fs "
                "or check the model"
            )
        times.append(state.getTime().value_in_unit(u.picosecond))
        totals.append(total)
        kinetics.append(kinetic)
    return _analyse(np.array(times), np.array(totals), np.array(kinetics), dof, steps, timestep_fs)


def _analyse(
    times_ps: np.ndarray, totals: np.ndarray, kinetics: np.ndarray, dof: int, steps: int, timestep_fs: float
) -> NVEResult:
    slope_ps, intercept = np.polyfit(times_ps, totals, 1)
    residual = totals - (slope_ps * times_ps + intercept)
    fluctuation = float(np.sqrt(np.mean(residual**2)))
    kinetic_rms = float(np.std(kinetics))
    temperature = 2.0 * kinetics.mean() / (dof * u.MOLAR_GAS_CONSTANT_R.value_in_unit(u.kilojoule_per_mole / u.kelvin))
    drift = float(slope_ps) * 1000.0
    return NVEResult(
        steps=steps,
        timestep_fs=timestep_fs,
        dof=dof,
        drift_kj_mol_ns=drift,
        drift_kj_mol_ns_dof=drift / dof,
        fluctuation_kj_mol=fluctuation,
        fluctuation_ratio=fluctuation / kinetic_rms if kinetic_rms > 0 else float("nan"),
        max_deviation_kj_mol=float(np.max(np.abs(totals - totals[0]))),
        mean_temperature_k=float(temperature),
        times_ps=[float(t) for t in times_ps],
        total_kj_mol=[float(e) for e in totals],
    )


def plot_nve(results: NVEResult | Mapping[str, NVEResult], path: str | os.PathLike) -> Path:
    """PNG of the total energy against time with the fitted drift line, of one run or of several labelled runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {"": results} if isinstance(results, NVEResult) else dict(results)
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for name, result in runs.items():
        times, totals = np.array(result.times_ps), np.array(result.total_kj_mol)
        label = f"{name}: " if name else ""
        line = ax.plot(times, totals - totals[0], lw=1, label=f"{label}E_total(t) - E_total(0)")[0]
        drift = result.drift_kj_mol_ns / 1000.0 * (times - times[0])
        rate = f"{label}{result.drift_kj_mol_ns_dof:.3g} kJ/mol/ns/DOF"
        ax.plot(times, drift, "--", color=line.get_color(), label=rate)
    ax.set_xlabel("time (ps)")
    ax.set_ylabel("kJ/mol")
    ax.set_title(f"NVE, {next(iter(runs.values())).timestep_fs} fs", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return Path(path)


def check_nve(
    system_settings: SystemSettings,
    simulation: SimulationSettings,
    output_dir: str | os.PathLike,
    platform: str = "CPU",
    threads: int = 1,
) -> NVEResult:
    """NVE check of the System a run would simulate (model, input, HMR from ``simulation``); writes nve.json/png.

    Uses ``simulation.nve_steps``, ``nve_timestep_fs``, ``nve_report_interval``, ``temperature_k``, ``seed``
    and ``minimize_iterations``; the ensemble is ignored (no barostat in NVE).

    Examples
    --------
    >>> check_nve(SystemSettings(), SimulationSettings(model_path="model.pt"), "nve")  # doctest: +SKIP
    """
    run = build_run_system(system_settings, simulation.model_copy(update={"ensemble": "nvt"}))
    result = nve_drift(
        run.system,
        run.positions,
        simulation.nve_steps,
        timestep_fs=simulation.nve_timestep_fs,
        temperature_k=simulation.temperature_k,
        report_interval=simulation.nve_report_interval,
        platform=platform,
        threads=threads,
        seed=simulation.seed,
        minimize_iterations=simulation.minimize_iterations,
    )
    folder = Path(output_dir)
    write_json_atomic(folder / NVE_FILE, {**result.to_dict(), "mm_only": simulation.mm_only})
    plot_nve(result, folder / NVE_PLOT)
    logger.info(
        "NVE %d steps of %.3g fs: drift %.4g kJ/mol/ns (%.4g per DOF, %d DOF), fluctuation %.3g kJ/mol "
        "(%.3g of kinetic)",
        result.steps,
        result.timestep_fs,
        result.drift_kj_mol_ns,
        result.drift_kj_mol_ns_dof,
        result.dof,
        result.fluctuation_kj_mol,
        result.fluctuation_ratio,
    )
    return result
