"""Collective variables: torsions (CustomTorsionForce, rad) and distances (CustomBondForce, nm).

Atoms are given as 0-based indices or as MDAnalysis selections (one atom each) on the system's PDB, and are
checked before any simulation starts: they must exist, a torsion needs 4 distinct atoms, a distance 2.

>>> force = torsion_cv([4, 6, 8, 14])
>>> force.getEnergyFunction()
'theta'
>>> distance_cv([5, 17]).getEnergyFunction()
'r'
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import openmm

from biomol_nnp.config import CVSettings
from biomol_nnp.exceptions import ConfigError, InputError

CV_ATOMS = {"torsion": 4, "distance": 2}
"""Number of atoms of each CV kind."""


def torsion_cv(atoms: Sequence[int]) -> openmm.CustomTorsionForce:
    """Force whose energy is the dihedral angle of ``atoms`` (4 indices), rad in [-pi, pi]."""
    force = openmm.CustomTorsionForce("theta")
    force.addTorsion(*[int(a) for a in atoms], [])
    return force


def distance_cv(atoms: Sequence[int], periodic: bool = False) -> openmm.CustomBondForce:
    """Force whose energy is the distance between ``atoms`` (2 indices), nm (minimum image if ``periodic``)."""
    force = openmm.CustomBondForce("r")
    force.addBond(int(atoms[0]), int(atoms[1]), [])
    force.setUsesPeriodicBoundaryConditions(periodic)
    return force


def check_atoms(name: str, kind: str, atoms: Sequence[int], n_atoms: int) -> list[int]:
    """Validate CV atom indices: the right count for ``kind``, distinct, each in ``[0, n_atoms)``.

    Raises
    ------
    InputError
        Wrong number of atoms, repeated atoms, or an index the system does not have.
    """
    if kind not in CV_ATOMS:
        raise ConfigError(f"cv {name!r}: kind={kind!r} is unknown; choose one of {list(CV_ATOMS)}")
    need = CV_ATOMS[kind]
    atoms = [int(a) for a in atoms]
    if len(atoms) != need:
        raise InputError(f"cv {name!r}: a {kind} needs {need} atoms, got {len(atoms)}: {atoms}")
    if len(set(atoms)) != need:
        raise InputError(f"cv {name!r}: a {kind} needs {need} distinct atoms, got {atoms}")
    missing = [a for a in atoms if not 0 <= a < n_atoms]
    if missing:
        raise InputError(
            f"cv {name!r}: atoms {missing} do not exist; the system has {n_atoms} atoms (0-based indices "
            f"0..{n_atoms - 1})"
        )
    return atoms


def resolve_atoms(cv: CVSettings, pdb_path: str | os.PathLike, n_atoms: int) -> list[int]:
    """0-based atom indices of ``cv``, from ``cv.atoms`` or its MDAnalysis ``cv.selections`` on ``pdb_path``.

    Raises
    ------
    ConfigError
        Neither or both of ``atoms`` and ``selections`` given.
    InputError
        A selection that does not select exactly one atom; invalid atoms (see :func:`check_atoms`).
    """
    if (cv.atoms is None) == (cv.selections is None):
        raise ConfigError(
            f"cv {cv.name!r}: give exactly one of `atoms` (0-based indices) or `selections` (MDAnalysis, one atom "
            f"each); got atoms={cv.atoms} selections={cv.selections}"
        )
    if cv.atoms is not None:
        return check_atoms(cv.name, cv.kind, cv.atoms, n_atoms)
    from biomol_nnp.prepare import select_region

    atoms = []
    for selection in cv.selections or []:
        chosen = select_region(Path(pdb_path), selection, whole_residues=False)
        if len(chosen) != 1:
            raise InputError(
                f"cv {cv.name!r}: selection {selection!r} selects {len(chosen)} atoms of {str(pdb_path)!r}; "
                "each selection must pick exactly one atom, e.g. 'resid 2 and name C'"
            )
        atoms.append(chosen[0])
    return check_atoms(cv.name, cv.kind, atoms, n_atoms)


def cv_range(cv: CVSettings) -> tuple[float, float]:
    """``(min, max)`` of the CV: rad for torsions (default ``(-pi, pi)``), nm for distances (both required).

    Raises
    ------
    ConfigError
        A distance without its range, a range with min >= max, a negative distance, a torsion outside [-pi, pi].
    """
    if cv.kind == "torsion":
        low = -math.pi if cv.min_value is None else cv.min_value
        high = math.pi if cv.max_value is None else cv.max_value
        if low < -math.pi - 1e-9 or high > math.pi + 1e-9:
            raise ConfigError(f"cv {cv.name!r}: a torsion range must lie in [-pi, pi] rad, got [{low}, {high}]")
    else:
        if cv.min_value is None or cv.max_value is None:
            raise ConfigError(
                f"cv {cv.name!r}: a distance needs min_value and max_value (nm), got {cv.min_value}, {cv.max_value}"
            )
        low, high = cv.min_value, cv.max_value
        if low < 0:
            raise ConfigError(f"cv {cv.name!r}: min_value={low} nm is negative; distances are >= 0")
    if not low < high:
        raise ConfigError(f"cv {cv.name!r}: min_value={low} must be below max_value={high}")
    return float(low), float(high)


def cv_force(cv: CVSettings, atoms: Sequence[int], periodic_box: bool = False) -> openmm.Force:
    """The OpenMM Force of ``cv`` on ``atoms`` (distances use the minimum image when ``periodic_box``)."""
    if cv.kind == "torsion":
        return torsion_cv(atoms)
    return distance_cv(atoms, periodic=periodic_box)


def spans_circle(cv: CVSettings) -> bool:
    """A torsion whose range is the whole circle (a periodic bias grid); a partial torsion range is not."""
    low, high = cv_range(cv)
    return cv.periodic and high - low > 2.0 * math.pi - 1e-6


def bias_variables(cvs: Sequence[CVSettings], pdb: str | os.PathLike, sampled: Any) -> list[Any]:
    """``openmm.app.BiasVariable`` of each CV: atoms checked, periodic only for a full-circle torsion,
    grid checked against the Gaussian width (``metadynamics.grid_points``)."""
    from openmm.app import BiasVariable

    from biomol_nnp.sampling.metadynamics import grid_points

    periodic_box = sampled.topology.getPeriodicBoxVectors() is not None
    variables = []
    for cv in cvs:
        atoms = resolve_atoms(cv, pdb, sampled.system.getNumParticles())
        low, high = cv_range(cv)
        force = cv_force(cv, atoms, periodic_box)
        variables.append(BiasVariable(force, low, high, cv.width, spans_circle(cv), grid_points(cv, low, high)))
    return variables
