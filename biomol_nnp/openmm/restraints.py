"""Flat-bottom restraints that keep the ML/MM water partition fixed (DESIGN.md, "Electrostatic embedding").

Explicit waters in the ML region must not drift into the bulk, and MM waters must not drift into the
region. Two ``openmm.CustomCentroidBondForce`` terms act on water oxygens and the centroid ``c`` of a
set of region atoms (equal weights), with ``d`` the oxygen-centroid distance:

- region waters: ``E = k/2 * max(0, d - R)^2`` (zero inside the sphere of radius ``R``);
- MM waters: ``E = k/2 * max(0, R_MM - d)^2`` (zero outside the sphere of radius ``R_MM``).

Each term is in its own force group (``REGION_WATER_GROUP``, ``MM_WATER_GROUP``) and has its own name
(``RESTRAINT_NAMES``), so the restraint energy is reported as its own term
(:func:`biomol_nnp.openmm.energy_terms.energy_terms`, or ``context.getState(getEnergy=True, groups={group})``).

>>> region_force, mm_force = add_water_restraints(system, topology, [412, 415], ala_atoms,
...                                               radius_nm=0.6, k=1000.0)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import openmm
import openmm.app

from biomol_nnp.exceptions import InputError

logger = logging.getLogger(__name__)

WATER_RESIDUE_NAMES = frozenset({"HOH", "WAT", "SOL", "TIP3", "TIP3P", "TIP4", "TIP4P", "TIP5P", "SPC", "T3P", "T4P"})
"""Residue names recognised as water."""

REGION_WATER_GROUP = 29
"""Default force group of the region-water restraint."""

MM_WATER_GROUP = 30
"""Default force group of the MM-water restraint."""

REGION_WATER_RESTRAINT_NAME = "RegionWaterRestraint"
"""``Force.getName()`` of the restraint keeping region waters inside the sphere."""

MM_WATER_RESTRAINT_NAME = "MMWaterRestraint"
"""``Force.getName()`` of the restraint keeping MM waters outside the sphere."""

RESTRAINT_NAMES = (REGION_WATER_RESTRAINT_NAME, MM_WATER_RESTRAINT_NAME)
"""Names of both restraint forces (reporters: :func:`biomol_nnp.openmm.energy_terms.energy_terms`)."""


def _water_oxygens(topology: openmm.app.Topology) -> list[int]:
    return [
        atom.index
        for atom in topology.atoms()
        if atom.residue.name.upper() in WATER_RESIDUE_NAMES
        and atom.element is not None
        and atom.element.atomic_number == 8
    ]


def _flat_bottom_force(
    energy: str, centre: Sequence[int], oxygens: Sequence[int], k: float, radius_nm: float, periodic: bool, group: int
) -> openmm.CustomCentroidBondForce:
    force = openmm.CustomCentroidBondForce(2, energy)
    force.addPerBondParameter("k_restraint")
    force.addPerBondParameter("r_restraint")
    centre_group = force.addGroup([int(i) for i in centre], [1.0] * len(centre))
    for oxygen in oxygens:
        force.addBond([centre_group, force.addGroup([int(oxygen)])], [float(k), float(radius_nm)])
    force.setUsesPeriodicBoundaryConditions(periodic)
    force.setForceGroup(group)
    return force


def add_water_restraints(
    system: openmm.System,
    topology: openmm.app.Topology,
    region_water_oxygens: Sequence[int],
    region_centre_atoms: Sequence[int],
    radius_nm: float,
    k: float,
    mm_radius_nm: float | None = None,
    mm_water_oxygens: Sequence[int] | None = None,
    region_group: int = REGION_WATER_GROUP,
    mm_group: int = MM_WATER_GROUP,
    periodic: bool | None = None,
) -> tuple[openmm.CustomCentroidBondForce, openmm.CustomCentroidBondForce]:
    """Add flat-bottom restraints keeping region waters inside and MM waters outside a sphere.

    Parameters
    ----------
    system : openmm.System
        System to add the two forces to (in place).
    topology : openmm.app.Topology
        Its Topology; waters are residues named as in ``WATER_RESIDUE_NAMES``.
    region_water_oxygens : sequence of int
        Oxygen indices of the waters in the ML region (may be empty).
    region_centre_atoms : sequence of int
        Atoms whose centroid (equal weights) is the sphere centre, e.g. the region's protein atoms. Keep
        them in one molecule: under periodic boundaries the centroid is taken from unwrapped positions.
    radius_nm : float
        Radius ``R`` beyond which region waters are pushed back, nm (> 0).
    k : float
        Force constant, kJ/mol/nm^2 (>= 0).
    mm_radius_nm : float, optional
        Radius ``R_MM`` inside which MM water oxygens are pushed out, nm; default ``radius_nm``.
    mm_water_oxygens : sequence of int, optional
        MM water oxygens to restrain; default every water oxygen of ``topology`` not in
        ``region_water_oxygens`` (the term is zero for all those outside ``R_MM``).
    region_group, mm_group : int
        Force groups (0-31) of the region-water and MM-water terms; must differ.
    periodic : bool, optional
        Minimum-image oxygen-centroid distances; default: whether ``system`` already uses periodic
        boundaries (add the restraints after the MM forces).

    Returns
    -------
    (openmm.CustomCentroidBondForce, openmm.CustomCentroidBondForce)
        The region-water and MM-water forces, already added to ``system``.

    Raises
    ------
    InputError
        Bad radius, force constant, groups, an empty centre, or an index that is not a water oxygen.

    Examples
    --------
    >>> add_water_restraints(system, topology, [412], [6, 8, 10], 0.6, 1000.0)  # doctest: +SKIP
    """
    mm_radius = radius_nm if mm_radius_nm is None else mm_radius_nm
    if not radius_nm > 0 or not mm_radius > 0:
        raise InputError(f"radius_nm={radius_nm}, mm_radius_nm={mm_radius_nm}: radii must be > 0 nm")
    if not k >= 0:
        raise InputError(f"k={k} is not allowed; give a force constant >= 0 kJ/mol/nm^2")
    if region_group == mm_group or not (0 <= region_group <= 31 and 0 <= mm_group <= 31):
        raise InputError(
            f"region_group={region_group}, mm_group={mm_group}: give two different force groups in 0-31 so "
            "each restraint is reported as its own term"
        )
    if len(region_centre_atoms) == 0:
        raise InputError("region_centre_atoms is empty; give the region atoms whose centroid is the sphere centre")
    waters = set(_water_oxygens(topology))
    region = [int(i) for i in region_water_oxygens]
    mm = [i for i in sorted(waters) if i not in set(region)] if mm_water_oxygens is None else list(mm_water_oxygens)
    bad = sorted(set(region + mm) - waters)
    if bad:
        raise InputError(
            f"atoms {bad[:10]} are not water oxygens (element O in a residue named one of "
            f"{sorted(WATER_RESIDUE_NAMES)}); pass the oxygen index of each water"
        )
    both = sorted(set(region) & set(mm))
    if both:
        raise InputError(f"water oxygens {both[:10]} are given as both region and MM waters; a water is in one only")
    periodic = system.usesPeriodicBoundaryConditions() if periodic is None else bool(periodic)
    region_force = _flat_bottom_force(
        "0.5*k_restraint*max(0, distance(g1, g2) - r_restraint)^2",
        region_centre_atoms,
        region,
        k,
        radius_nm,
        periodic,
        region_group,
    )
    region_force.setName(REGION_WATER_RESTRAINT_NAME)
    mm_force = _flat_bottom_force(
        "0.5*k_restraint*max(0, r_restraint - distance(g1, g2))^2",
        region_centre_atoms,
        mm,
        k,
        mm_radius,
        periodic,
        mm_group,
    )
    mm_force.setName(MM_WATER_RESTRAINT_NAME)
    system.addForce(region_force)
    system.addForce(mm_force)
    logger.info(
        "water restraints: %d region waters within %.3g nm, %d MM waters beyond %.3g nm (k = %g kJ/mol/nm^2)",
        len(region),
        radius_nm,
        len(mm),
        mm_radius,
        k,
    )
    return region_force, mm_force
