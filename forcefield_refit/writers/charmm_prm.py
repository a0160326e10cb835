"""Write fitted terms as a CHARMM parameter (prm) file: DIHEDRALS, CMAP and NBFIX sections.

Units and conventions (CHARMM ``parameter`` files, as read by CHARMM and ``parmed.charmm.CharmmParameterSet``):

- ``DIHEDRALS``: ``A B C D  Kchi  n  delta`` with Kchi in kcal/mol, delta in degrees,
  ``E = Kchi (1 + cos(n phi - delta))``; one line per periodicity.
- ``CMAP``: eight types (phi ``a b c d``, psi ``b c d e``) and the resolution, then ``n * n`` values in
  kcal/mol, phi-major, both angles from -180 degrees in steps of ``360 / n``.
- ``NBFIX``: ``A B  Emin  Rmin`` with Emin = -epsilon (kcal/mol) and Rmin the full pair distance of the
  minimum in Angstrom.

Type names are Amber names (OpenMM prefixes such as ``protein-`` are removed with
:func:`~forcefield_refit.atom_types.amber_type_name`); CHARMM itself is case-insensitive (ParmEd upper-cases).
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
from forcefield_refit.units import KJ_TO_KCAL, NM_TO_ANGSTROM
from forcefield_refit.writers._io import atomic_write_text

logger = logging.getLogger(__name__)

#: Values per line in a CMAP block (CHARMM files use 5).
CMAP_VALUES_PER_LINE = 5


def _names(types: Sequence[str]) -> list[str]:
    names = [amber_type_name(t) for t in types]
    bad = [n for n in names if not n or any(c.isspace() for c in n) or n.startswith("!")]
    if bad:
        raise RefitInputError(
            f"types={tuple(types)} give CHARMM names {names}; allowed: non-empty names without spaces. "
            "Hint: use the base force field's atom types."
        )
    return names


def dihedrals_section(torsions: Sequence[FourierTorsion]) -> list[str]:
    """Lines of the ``DIHEDRALS`` section (kcal/mol, degrees).

    Parameters
    ----------
    torsions : sequence of FourierTorsion
        Series with ``k`` in kJ/mol.

    Returns
    -------
    list of str
        The section header and one line per term.
    """
    lines = ["DIHEDRALS", "!atom types             Kchi (kcal/mol)    n   delta (deg)"]
    for torsion in merge_torsions(torsions):
        names = " ".join(f"{n:<6}" for n in _names(torsion.types))
        for n, phase_deg, k_kj in torsion.terms:
            lines.append(f"{names} {k_kj * KJ_TO_KCAL:16.10f} {int(n):2d} {phase_deg % 360.0:12.6f}")
    return lines


def cmap_section(cmaps: Sequence[CmapTerm]) -> list[str]:
    """Lines of the ``CMAP`` section (kcal/mol, phi-major grid from -180 degrees).

    Parameters
    ----------
    cmaps : sequence of CmapTerm
        Grids in kJ/mol.

    Returns
    -------
    list of str
    """
    lines = ["CMAP"]
    for cmap in merge_cmaps(cmaps):
        a, b, c, d, e = _names(cmap.types)
        n = cmap.resolution
        lines.append(f"{a} {b} {c} {d} {b} {c} {d} {e} {n}")
        step = 360.0 / n
        for i in range(n):
            lines.append(f"!phi = {-180.0 + i * step:.1f}")
            row = cmap.grid_kj[i] * KJ_TO_KCAL
            for start in range(0, n, CMAP_VALUES_PER_LINE):
                lines.append(" ".join(f"{v:14.8f}" for v in row[start : start + CMAP_VALUES_PER_LINE]))
        lines.append("")
    return lines


def nbfix_section(pairs: Sequence[NBFixPair]) -> list[str]:
    """Lines of the ``NBFIX`` section (Emin = -epsilon in kcal/mol, Rmin in Angstrom).

    Parameters
    ----------
    pairs : sequence of NBFixPair

    Returns
    -------
    list of str
    """
    lines = ["NBFIX", "!atom types      Emin (kcal/mol)   Rmin (A)"]
    for pair in merge_pairs(pairs):
        a, b = _names(pair.types)
        lines.append(f"{a:<6} {b:<6} {-pair.epsilon_kj * KJ_TO_KCAL:16.10f} {pair.rmin_nm * NM_TO_ANGSTROM:14.10f}")
    return lines


def write_charmm_prm(
    path: str | os.PathLike[str],
    torsions: Sequence[FourierTorsion] = (),
    cmaps: Sequence[CmapTerm] = (),
    nbfix: Sequence[NBFixPair] = (),
    title: str = "forcefield_refit parameters",
    overwrite: bool = False,
) -> Path:
    """Write a CHARMM prm file with the requested sections (atomic; no overwrite unless asked).

    Read it after the base parameter files (later CHARMM parameters replace earlier ones).

    Parameters
    ----------
    path : str or PathLike
        Output file.
    torsions, cmaps, nbfix : sequences
        Terms to write; empty sections are left out.
    title : str
        Written as a ``*`` title line.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> import tempfile, pathlib
    >>> t = FourierTorsion(("C", "N", "CX", "C"), [(2, 180.0, 4.184)])
    >>> out = write_charmm_prm(pathlib.Path(tempfile.mkdtemp()) / "refit.prm", [t])
    >>> "DIHEDRALS" in out.read_text()
    True
    """
    if not (torsions or cmaps or nbfix):
        raise RefitInputError(
            "torsions, cmaps and nbfix are all empty; allowed: at least one term. Hint: pass the fitted terms."
        )
    body = [f"* {title.strip().splitlines()[0] if title.strip() else 'forcefield_refit'}", "*", ""]
    if torsions:
        body += [*dihedrals_section(torsions), ""]
    if cmaps:
        body += [*cmap_section(cmaps), ""]
    if nbfix:
        body += [*nbfix_section(nbfix), ""]
    body += ["END", ""]
    out = atomic_write_text(path, "\n".join(body), overwrite=overwrite)
    logger.info("wrote CHARMM prm %s (%d torsions, %d cmaps, %d nbfix)", out, len(torsions), len(cmaps), len(nbfix))
    return out
