"""Reload written force-field files through their engines' own parsers and compare with the fit.

- :func:`reload_frcmod` parses an frcmod with ParmEd (``parmed.amber.AmberParameterSet``).
- :func:`ffxml_profile` builds a System with ``openmm.app.ForceField`` from the refit ffxml plus the
  base files and evaluates, with OpenMM, the torsion terms on one dihedral over scan geometries.
- :func:`torsion_rmse` compares two torsion series on a dense angle grid.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import openmm
import parmed
from openmm import app

from forcefield_refit.energy import openmm_energy_function
from forcefield_refit.exceptions import RefitInputError, RefitMatchError
from forcefield_refit.profiles import evaluate_profile
from forcefield_refit.torsions import FourierTorsion, _normalise
from forcefield_refit.units import KCAL_TO_KJ
from forcefield_refit.writers.openmm_xml import load_forcefield

logger = logging.getLogger(__name__)


def reload_frcmod(path: str | os.PathLike[str]) -> list[FourierTorsion]:
    """Parse an frcmod with ParmEd and return its dihedral series in package units.

    Parameters
    ----------
    path : str or PathLike
        frcmod file.

    Returns
    -------
    list of FourierTorsion
        One per type quadruple (ParmEd stores both directions; the first seen is kept), Amber type
        names, ``k`` converted to kJ/mol with :data:`~forcefield_refit.units.KCAL_TO_KJ`, phase in degrees.
    """
    params = parmed.amber.AmberParameterSet(os.fspath(path))
    torsions: list[FourierTorsion] = []
    seen: set[tuple[str, ...]] = set()
    for key, series in params.dihedral_types.items():
        if key in seen or key[::-1] in seen:
            continue
        seen.add(key)
        terms = [(int(round(t.per)), float(t.phase), float(t.phi_k) * KCAL_TO_KJ) for t in series]
        torsions.append(FourierTorsion(types=tuple(key), terms=terms))  # type: ignore[arg-type]
    logger.debug("reloaded %d torsion series from %s", len(torsions), path)
    return torsions


def torsion_rmse(first: FourierTorsion, second: FourierTorsion, n_points: int = 360) -> float:
    """RMSE between two torsion series over a uniform grid of ``n_points`` angles, kJ/mol.

    Parameters
    ----------
    first, second : FourierTorsion
        Series to compare (types are not compared).
    n_points : int
        Grid size over ``[-180, 180)`` degrees.

    Returns
    -------
    float
        ``sqrt(mean((E1 - E2)^2))`` in kJ/mol (no constant removed: both series are absolute).
    """
    phi = np.radians(np.linspace(-180.0, 180.0, n_points, endpoint=False))
    return float(np.sqrt(np.mean((first.energy(phi) - second.energy(phi)) ** 2)))


def torsion_only_system(system: openmm.System, dihedral_atoms: Sequence[int]) -> openmm.System:
    """A System holding only the PeriodicTorsionForce terms of ``system`` on one atom quadruple.

    Parameters
    ----------
    system : openmm.System
        Full System.
    dihedral_atoms : sequence of 4 int
        Quadruple (either direction).

    Returns
    -------
    openmm.System
        Same particles, one PeriodicTorsionForce with just those terms.
    """
    key = _normalise(dihedral_atoms)
    only = openmm.System()
    for i in range(system.getNumParticles()):
        only.addParticle(system.getParticleMass(i))
    force = openmm.PeriodicTorsionForce()
    for source in system.getForces():
        if isinstance(source, openmm.PeriodicTorsionForce):
            for i in range(source.getNumTorsions()):
                a, b, c, d, n, phase, k = source.getTorsionParameters(i)
                if _normalise((a, b, c, d)) == key:
                    force.addTorsion(a, b, c, d, n, phase, k)
    if force.getNumTorsions() == 0:
        raise RefitMatchError(
            f"dihedral_atoms={tuple(dihedral_atoms)} has no PeriodicTorsionForce term; allowed: a "
            "parameterised proper torsion. Hint: check the atom indices (0-based) and the force field files."
        )
    only.addForce(force)
    return only


def ffxml_profile(
    forcefield_files: Sequence[str],
    pdb_path: str | os.PathLike[str],
    dihedral_atoms: Sequence[int],
    positions_stack: np.ndarray,
) -> np.ndarray:
    """Torsion energy of one dihedral, as OpenMM builds it from ffxml files, over scan geometries.

    Parameters
    ----------
    forcefield_files : sequence of str
        ffxml files in load order: refit file(s) first, then the base force field
        (``["refit.xml", "amber14-all.xml"]``); loaded with :func:`load_forcefield`.
    pdb_path : str or PathLike
        Structure whose topology the System is built for.
    dihedral_atoms : sequence of 4 int
        0-based atom indices of the dihedral.
    positions_stack : np.ndarray
        Geometries, shape ``[K, N, 3]``, nm.

    Returns
    -------
    np.ndarray
        Absolute torsion energy (all PeriodicTorsionForce terms on that quadruple), ``[K]``, kJ/mol.
    """
    files = list(forcefield_files)
    if not files:
        raise RefitInputError(
            "forcefield_files=[]; allowed: ffxml paths. Hint: ['refit.xml', 'amber14-all.xml']."
        )
    pdb = app.PDBFile(os.fspath(pdb_path))
    forcefield = load_forcefield(files, [])
    system = forcefield.createSystem(pdb.topology, nonbondedMethod=app.NoCutoff, constraints=None)
    energy_fn = openmm_energy_function(torsion_only_system(system, dihedral_atoms))
    return evaluate_profile(energy_fn, positions_stack, relative=False)
