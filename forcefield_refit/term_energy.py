"""Per-term energies of fitted or reloaded parameters on given structures, evaluated by OpenMM.

:func:`term_energies` puts each kind of term in its own force group of a small System (torsions in a
``PeriodicTorsionForce``, CMAPs in a ``CMAPTorsionForce``, NBFIX pairs in a ``CustomBondForce``) and returns
the energy of each group per frame, so a round trip (fit -> file -> parser -> energy) is compared term by
term, the way the issue asks (within 1e-3 kJ/mol).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import openmm

from forcefield_refit.energy import openmm_energy_function
from forcefield_refit.exceptions import RefitInputError
from forcefield_refit.terms import CmapTerm, NBFixPair, openmm_cmap_values
from forcefield_refit.torsions import FourierTorsion

logger = logging.getLogger(__name__)

_GROUPS = {"torsions": 1, "cmaps": 2, "nbfix": 3}


def term_system(
    n_atoms: int,
    torsions: Mapping[tuple[int, int, int, int], FourierTorsion] | None = None,
    cmaps: Mapping[tuple[int, int, int, int, int], CmapTerm] | None = None,
    pairs: Mapping[tuple[int, int], NBFixPair] | None = None,
) -> openmm.System:
    """A System with only the given terms, each kind in its own force group (torsions 1, cmaps 2, nbfix 3).

    Parameters
    ----------
    n_atoms : int
        Number of particles.
    torsions : mapping, optional
        ``{(i, j, k, l): series}``.
    cmaps : mapping, optional
        ``{(a, b, c, d, e): map}`` (phi = a-b-c-d, psi = b-c-d-e).
    pairs : mapping, optional
        ``{(i, j): NBFixPair}``, LJ between those atoms.

    Returns
    -------
    openmm.System
    """
    if n_atoms < 1:
        raise RefitInputError(f"n_atoms={n_atoms}; allowed: >= 1. Hint: positions.shape[1].")
    system = openmm.System()
    for _ in range(n_atoms):
        system.addParticle(12.0)
    if torsions:
        force = openmm.PeriodicTorsionForce()
        for (a, b, c, d), series in torsions.items():
            for n, phase_deg, k in series.terms:
                force.addTorsion(a, b, c, d, int(n), np.radians(phase_deg), k)
        force.setForceGroup(_GROUPS["torsions"])
        system.addForce(force)
    if cmaps:
        cmap_force = openmm.CMAPTorsionForce()
        for (a, b, c, d, e), cmap in cmaps.items():
            index = cmap_force.addMap(cmap.resolution, openmm_cmap_values(cmap.grid_kj))
            cmap_force.addTorsion(index, a, b, c, d, b, c, d, e)
        cmap_force.setForceGroup(_GROUPS["cmaps"])
        system.addForce(cmap_force)
    if pairs:
        lj = openmm.CustomBondForce("eps * ((rmin / r)^12 - 2 * (rmin / r)^6)")
        lj.addPerBondParameter("eps")
        lj.addPerBondParameter("rmin")
        for (i, j), pair in pairs.items():
            lj.addBond(i, j, [pair.epsilon_kj, pair.rmin_nm])
        lj.setForceGroup(_GROUPS["nbfix"])
        system.addForce(lj)
    return system


def term_energies(
    positions_stack: np.ndarray,
    torsions: Mapping[tuple[int, int, int, int], FourierTorsion] | None = None,
    cmaps: Mapping[tuple[int, int, int, int, int], CmapTerm] | None = None,
    pairs: Mapping[tuple[int, int], NBFixPair] | None = None,
) -> dict[str, np.ndarray]:
    """Energy of each kind of term on every frame, kJ/mol.

    Parameters
    ----------
    positions_stack : np.ndarray
        ``[K, N, 3]``, nm.
    torsions, cmaps, pairs : mappings, optional
        As in :func:`term_system`.

    Returns
    -------
    dict
        ``{"torsions" | "cmaps" | "nbfix": energies [K]}`` for the kinds given.

    Examples
    --------
    >>> x = np.array([[[1.0, 0, 0], [0, 0, 0], [0, 0, 1], [0, 1, 1]]])
    >>> e = term_energies(x, torsions={(0, 1, 2, 3): FourierTorsion(("A",) * 4, [(1, 0.0, 1.0)])})
    >>> round(float(e["torsions"][0]), 6)
    1.0
    """
    stack = np.asarray(positions_stack, dtype=float)
    if stack.ndim != 3 or stack.shape[2] != 3:
        raise RefitInputError(
            f"positions_stack has shape {stack.shape}; allowed: [K, N, 3] nm. Hint: profile.positions."
        )
    system = term_system(stack.shape[1], torsions, cmaps, pairs)
    out: dict[str, np.ndarray] = {}
    for name, given in (("torsions", torsions), ("cmaps", cmaps), ("nbfix", pairs)):
        if given:
            energy_fn = openmm_energy_function(system, groups={_GROUPS[name]})
            out[name] = np.array([energy_fn(frame)[0] for frame in stack])
    return out

