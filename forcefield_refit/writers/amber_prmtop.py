"""Amber prmtop + inpcrd for terms a frcmod cannot hold: the fitted CMAP added to a molecule's full topology.

A frcmod holds torsions (DIHE) and pair-specific LJ (LJEDIT), but no CMAP that tleap's frcmod reader or
ParmEd reads back. For CMAP the whole parameterised molecule is written instead: the base OpenMM System
plus a ``CMAPTorsionForce`` with the fitted map on every phi/psi chain whose atom labels match the map's
five types, converted by ParmEd (``parmed.openmm.load_topology`` -> ``AmberParm.from_structure``) and
saved as prmtop (``CMAP_*`` sections, read by ParmEd, sander/pmemd and OpenMM's ``AmberPrmtopFile``) and
inpcrd. Both files are written atomically (temporary file, then ``os.replace``) and never overwrite an
existing file unless ``overwrite=True``.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import openmm
from openmm import app

from forcefield_refit.exceptions import RefitInputError, RefitMatchError
from forcefield_refit.terms import CmapTerm, openmm_cmap_values
from forcefield_refit.torsions import proper_torsions
from forcefield_refit.units import NM_TO_ANGSTROM
from forcefield_refit.writers._io import atomic_write_with, check_writable

logger = logging.getLogger(__name__)

Chain = tuple[int, int, int, int, int]


def cmap_chains(topology: app.Topology, labels: Sequence[str], term: CmapTerm) -> list[Chain]:
    """Five-atom chains ``a-b-c-d-e`` (phi = a-b-c-d, psi = b-c-d-e) whose labels are ``term.types``.

    Parameters
    ----------
    topology : openmm.app.Topology
        Molecule with bonds.
    labels : sequence of str
        Per-atom labels in the naming of ``term.types`` (e.g. ``atom_labels(topology, forcefield)``).
    term : CmapTerm

    Returns
    -------
    list of tuple of 5 int
        Sorted; empty when nothing matches.
    """
    if len(labels) != topology.getNumAtoms():
        raise RefitInputError(
            f"labels has {len(labels)} entries; allowed: one per atom ({topology.getNumAtoms()}). "
            "Hint: atom_labels(topology, forcefield)."
        )
    quads = set(proper_torsions(topology))
    quads |= {q[::-1] for q in quads}  # type: ignore[misc]
    first = {q for q in quads if tuple(labels[i] for i in q) == term.types[:4]}
    return sorted((*q, e) for q in first for r in quads if r[:3] == q[1:] and labels[(e := r[3])] == term.types[4])


def add_cmaps(system: openmm.System, cmaps: Mapping[Chain, CmapTerm]) -> openmm.System:
    """A copy of ``system`` with one ``CMAPTorsionForce`` holding the given maps (one map per distinct term)."""
    out = copy.deepcopy(system)
    force = openmm.CMAPTorsionForce()
    index: dict[int, int] = {}
    for (a, b, c, d, e), term in cmaps.items():
        if not 0 <= min(a, b, c, d, e) <= max(a, b, c, d, e) < out.getNumParticles():
            raise RefitInputError(
                f"cmaps chain {(a, b, c, d, e)}; allowed: atom indices 0..{out.getNumParticles() - 1}. "
                "Hint: use cmap_chains()."
            )
        if id(term) not in index:
            index[id(term)] = force.addMap(term.resolution, openmm_cmap_values(term.grid_kj))
        force.addTorsion(index[id(term)], a, b, c, d, b, c, d, e)
    out.addForce(force)
    return out


def write_amber_prmtop(
    prmtop: str | os.PathLike[str],
    topology: app.Topology,
    system: openmm.System,
    positions_nm: np.ndarray,
    cmaps: Mapping[Chain, CmapTerm],
    inpcrd: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Write ``system`` plus the fitted CMAPs as an Amber prmtop and inpcrd (via ParmEd).

    Parameters
    ----------
    prmtop : str or PathLike
        Output topology file.
    topology : openmm.app.Topology
        Molecule (with bonds) of ``system``.
    system : openmm.System
        Base force-field System of the molecule (vacuum: no cutoff, no constraints).
    positions_nm : np.ndarray
        ``[N, 3]`` nm, written to the inpcrd.
    cmaps : mapping
        ``{(a, b, c, d, e): CmapTerm}``, at least one (:func:`cmap_chains` finds the chains).
    inpcrd : str or PathLike, optional
        Output coordinates; default: ``prmtop`` with suffix ``.inpcrd``.
    overwrite : bool
        Replace existing files.

    Returns
    -------
    (pathlib.Path, pathlib.Path)
        prmtop and inpcrd paths.

    Raises
    ------
    RefitInputError
        No CMAP given, positions of the wrong shape, an existing file without ``overwrite``.
    RefitMatchError
        The System already holds a ``CMAPTorsionForce`` (the fitted map would be added twice).
    """
    if not cmaps:
        raise RefitInputError(
            "cmaps={}; allowed: at least one {chain: CmapTerm}. Hint: torsions and NBFIX go in a frcmod "
            "(write_frcmod); the prmtop is for what a frcmod cannot hold."
        )
    xyz = np.asarray(positions_nm, dtype=float)
    if xyz.shape != (system.getNumParticles(), 3):
        raise RefitInputError(
            f"positions_nm has shape {xyz.shape}; allowed: ({system.getNumParticles()}, 3) nm. "
            "Hint: molecule.positions."
        )
    if any(isinstance(f, openmm.CMAPTorsionForce) for f in system.getForces()):
        raise RefitMatchError(
            "system already has a CMAPTorsionForce; allowed: a base System without CMAP (the fitted map is a "
            "correction on top of it). Hint: build the System from a force field without CMAP (amber14-all.xml)."
        )
    import parmed

    prmtop_path = Path(prmtop)
    inpcrd_path = Path(inpcrd) if inpcrd is not None else prmtop_path.with_suffix(".inpcrd")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ParmEd's notes on condensed atom types and unit-cell absence
        structure = parmed.openmm.load_topology(topology, add_cmaps(system, cmaps), xyz=xyz * NM_TO_ANGSTROM)
        parm = parmed.amber.AmberParm.from_structure(structure)
    for path in (prmtop_path, inpcrd_path):  # fail before writing either
        check_writable(path, overwrite)
    written = (
        atomic_write_with(prmtop_path, lambda tmp: parm.save(str(tmp), format="amber", overwrite=True), overwrite),
        atomic_write_with(inpcrd_path, lambda tmp: parm.save(str(tmp), format="rst7", overwrite=True), overwrite),
    )
    logger.info(
        "wrote %d CMAP torsions (%d maps) to %s and %s", len(structure.cmaps), len(structure.cmap_types), *written
    )
    return written
