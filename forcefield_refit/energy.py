"""The energy-callable protocol used by torsion scans, and an OpenMM implementation of it.

An :data:`EnergyFunction` takes positions ``[N, 3]`` in nm and returns ``(energy, forces)``
with the energy in kJ/mol and forces ``[N, 3]`` in kJ/mol/nm (forces = -gradient). Anything that
can produce that pair (an OpenMM System, an NNP, a QM engine) can drive :func:`torsion_scan`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import openmm
from openmm import unit

from forcefield_refit.exceptions import RefitInputError

logger = logging.getLogger(__name__)

EnergyFunction = Callable[[np.ndarray], tuple[float, np.ndarray]]
"""Callable ``positions [N, 3] nm -> (energy kJ/mol, forces [N, 3] kJ/mol/nm)``."""

_ALLOWED_PLATFORMS = ("Reference", "CPU")


def openmm_energy_function(
    system: openmm.System,
    platform_name: str = "Reference",
    groups: set[int] | None = None,
) -> EnergyFunction:
    """Wrap an OpenMM System as an :data:`EnergyFunction` (one Context, reused for every call).

    Parameters
    ----------
    system : openmm.System
        The System to evaluate. It is not modified.
    platform_name : {"Reference", "CPU"}
        OpenMM platform. ``"Reference"`` is double precision (use it for parameter fits).
    groups : set of int, optional
        Force groups to evaluate; all forces when omitted.

    Returns
    -------
    EnergyFunction
        ``f(positions [N, 3] nm) -> (energy kJ/mol, forces [N, 3] kJ/mol/nm)``.

    Examples
    --------
    >>> import openmm
    >>> system = openmm.System(); _ = system.addParticle(1.0)
    >>> energy, forces = openmm_energy_function(system)(np.zeros((1, 3)))
    >>> energy
    0.0
    """
    if platform_name not in _ALLOWED_PLATFORMS:
        raise RefitInputError(
            f"platform_name={platform_name!r} is not supported; allowed: {_ALLOWED_PLATFORMS}. "
            "Hint: use 'Reference' (double precision) for fits."
        )
    n_atoms = system.getNumParticles()
    integrator = openmm.VerletIntegrator(0.001)
    platform = openmm.Platform.getPlatformByName(platform_name)
    context = openmm.Context(system, integrator, platform)
    state_kwargs = {} if groups is None else {"groups": set(groups)}

    def energy_function(positions: np.ndarray) -> tuple[float, np.ndarray]:
        pos = np.asarray(positions, dtype=float)
        if pos.shape != (n_atoms, 3):
            raise RefitInputError(
                f"positions has shape {pos.shape}; allowed: ({n_atoms}, 3) in nm for this System. "
                "Hint: pass one frame, not a stack."
            )
        context.setPositions(pos)
        state = context.getState(getEnergy=True, getForces=True, **state_kwargs)
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        return float(energy), np.asarray(forces, dtype=float)

    # Keep the integrator alive as long as the context (OpenMM requires it).
    energy_function._openmm_objects = (context, integrator)  # type: ignore[attr-defined]
    return energy_function
