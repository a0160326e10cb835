"""Write fitted terms as a GROMACS include file: ``[ dihedraltypes ]`` (type 9), ``[ cmaptypes ]``,
``[ nonbond_params ]``.

Units and conventions (GROMACS manual, "Topologies"; read by ``parmed.gromacs.GromacsTopologyFile``):

- ``[ dihedraltypes ]`` function 9 (multiple proper dihedrals): ``i j k l 9 phase kd mult``; phase in
  degrees, kd in kJ/mol, ``E = kd (1 + cos(mult phi - phase))``; one line per periodicity.
- ``[ cmaptypes ]`` function 1: ``i j k l m 1 nx ny`` then ``nx * ny`` values in kJ/mol, phi-major,
  both angles from -180 degrees (the layout of the CHARMM36 port), continuation lines end with ``\\``.
- ``[ nonbond_params ]`` function 1 with combination rule 2 or 3: ``i j 1 sigma epsilon`` (nm, kJ/mol).

Include the file after the base force field's ``[ atomtypes ]`` (ParmEd and ``grompp`` need the types
declared first). Type names: Amber names (OpenMM prefixes removed).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from forcefield_refit.atom_types import amber_type_name
from forcefield_refit.exceptions import RefitInputError
from forcefield_refit.terms import CmapTerm, NBFixPair, merge_cmaps, merge_pairs, merge_torsions
from forcefield_refit.torsions import FourierTorsion
from forcefield_refit.writers._io import atomic_write_text

logger = logging.getLogger(__name__)

#: Values per CMAP grid line (the CHARMM36 GROMACS port uses 10).
CMAP_VALUES_PER_LINE = 10


def _names(types: Sequence[str]) -> list[str]:
    names = [amber_type_name(t) for t in types]
    if any(not n or any(c.isspace() for c in n) or n[0] in ";[#" for n in names):
        raise RefitInputError(
            f"types={tuple(types)} give GROMACS names {names}; allowed: names without spaces that do not start "
            "with ';', '[' or '#'. Hint: use the base force field's atom types."
        )
    return names


def dihedraltypes_section(torsions: Sequence[FourierTorsion]) -> list[str]:
    """Lines of ``[ dihedraltypes ]`` with function 9 (degrees, kJ/mol).

    Parameters
    ----------
    torsions : sequence of FourierTorsion

    Returns
    -------
    list of str
    """
    lines = ["[ dihedraltypes ]", ";      i        j        k        l  func   phase (deg)       kd (kJ/mol)  mult"]
    for torsion in merge_torsions(torsions):
        names = " ".join(f"{n:>8}" for n in _names(torsion.types))
        for n, phase_deg, k_kj in torsion.terms:
            lines.append(f"{names}     9 {phase_deg % 360.0:13.6f} {k_kj:17.10f} {int(n):5d}")
    return lines


def cmaptypes_section(cmaps: Sequence[CmapTerm]) -> list[str]:
    """Lines of ``[ cmaptypes ]`` (kJ/mol, phi-major grid from -180 degrees).

    Parameters
    ----------
    cmaps : sequence of CmapTerm

    Returns
    -------
    list of str
    """
    lines = ["[ cmaptypes ]"]
    for cmap in merge_cmaps(cmaps):
        n = cmap.resolution
        values = cmap.grid_kj.ravel()
        lines.append(" ".join(_names(cmap.types)) + f" 1 {n} {n}\\")
        chunks = [values[s : s + CMAP_VALUES_PER_LINE] for s in range(0, values.size, CMAP_VALUES_PER_LINE)]
        for index, chunk in enumerate(chunks):
            tail = "" if index == len(chunks) - 1 else "\\"
            lines.append(" ".join(f"{v:.10f}" for v in chunk) + tail)
        lines.append("")
    return lines


def nonbond_params_section(pairs: Sequence[NBFixPair]) -> list[str]:
    """Lines of ``[ nonbond_params ]`` (combination rule 2/3: sigma in nm, epsilon in kJ/mol).

    Parameters
    ----------
    pairs : sequence of NBFixPair

    Returns
    -------
    list of str
    """
    lines = ["[ nonbond_params ]", ";      i        j  func        sigma (nm)    epsilon (kJ/mol)"]
    for pair in merge_pairs(pairs):
        a, b = _names(pair.types)
        lines.append(f"{a:>8} {b:>8}     1 {pair.sigma_nm:17.12f} {pair.epsilon_kj:19.12f}")
    return lines


def write_gromacs_itp(
    path: str | os.PathLike[str],
    torsions: Sequence[FourierTorsion] = (),
    cmaps: Sequence[CmapTerm] = (),
    nbfix: Sequence[NBFixPair] = (),
    title: str = "forcefield_refit parameters",
    overwrite: bool = False,
) -> Path:
    """Write a GROMACS itp with the requested sections (atomic; no overwrite unless asked).

    Parameters
    ----------
    path : str or PathLike
        Output file.
    torsions, cmaps, nbfix : sequences
        Terms to write; empty sections are left out.
    title : str
        Comment at the top.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> import tempfile, pathlib
    >>> t = FourierTorsion(("C", "N", "CX", "C"), [(2, 180.0, 1.0)])
    >>> out = write_gromacs_itp(pathlib.Path(tempfile.mkdtemp()) / "refit.itp", [t])
    >>> "[ dihedraltypes ]" in out.read_text()
    True
    """
    if not (torsions or cmaps or nbfix):
        raise RefitInputError(
            "torsions, cmaps and nbfix are all empty; allowed: at least one term. Hint: pass the fitted terms."
        )
    body = [f"; {title.strip().splitlines()[0] if title.strip() else 'forcefield_refit'}", ""]
    if torsions:
        body += [*dihedraltypes_section(torsions), ""]
    if cmaps:
        body += [*cmaptypes_section(cmaps), ""]
    if nbfix:
        body += [*nonbond_params_section(nbfix), ""]
    out = atomic_write_text(path, "\n".join(body), overwrite=overwrite)
    logger.info("wrote GROMACS itp %s (%d torsions, %d cmaps, %d nbfix)", out, len(torsions), len(cmaps), len(nbfix))
    return out
