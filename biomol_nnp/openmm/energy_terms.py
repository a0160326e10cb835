"""Potential energy per term of a running System: one value per force group, named by its forces.

Every force this package adds has a name and can have its own force group, so a reporter can show the
terms separately:

- the model force: ``biomol_nnp.openmm.backend.NNP_FORCE_NAME`` (``"BiomolNNP"``; GFN2-xTB/MM:
  ``biomol_nnp.openmm.xtb_potential.XTB_FORCE_NAME``), in the ``forceGroup`` given to openmm-ml's
  ``createMixedSystem`` (default 0, shared with MM; pass e.g. ``forceGroup=1`` to report it alone);
- the water restraints: ``biomol_nnp.openmm.restraints.RESTRAINT_NAMES``, in ``REGION_WATER_GROUP`` (29)
  and ``MM_WATER_GROUP`` (30) unless chosen otherwise.

>>> energy_terms(simulation)  # doctest: +SKIP
{'HarmonicBondForce+HarmonicAngleForce+PeriodicTorsionForce+NonbondedForce+CMMotionRemover': -2.1e4,
 'BiomolNNP': -30.2, 'RegionWaterRestraint': 0.0, 'MMWaterRestraint': 0.0}
"""

from __future__ import annotations

from typing import Any

import openmm
import openmm.unit as u


def _context(target: Any) -> openmm.Context:
    context = getattr(target, "context", target)
    if not isinstance(context, openmm.Context):
        raise TypeError(f"expected an openmm.Context or an openmm.app.Simulation, got {type(target).__name__}")
    return context


def group_names(system: openmm.System) -> dict[int, list[str]]:
    """Force group -> names of the forces in it (System order), for the groups the System uses."""
    groups: dict[int, list[str]] = {}
    for force in system.getForces():
        groups.setdefault(force.getForceGroup(), []).append(force.getName())
    return dict(sorted(groups.items()))


def group_energies(target: openmm.Context | Any) -> dict[int, float]:
    """Potential energy (kJ/mol) of each force group in use, for a Context or a Simulation.

    One energy evaluation per group (the model force runs once, in its own group's evaluation).
    """
    context = _context(target)
    return {
        group: context.getState(getEnergy=True, groups={group}).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
        for group in group_names(context.getSystem())
    }


def energy_terms(target: openmm.Context | Any) -> dict[str, float]:
    """Potential energy (kJ/mol) per force group, keyed by the names of its forces joined with ``+``.

    The values sum to the total potential energy. A restraint or the model force in a group of its own
    appears under its own name (module docstring).
    """
    context = _context(target)
    names = group_names(context.getSystem())
    return {"+".join(names[group]): energy for group, energy in group_energies(context).items()}
