"""Write fitted torsions as the DIHE section of an Amber frcmod file.

Format (one line per Fourier term, as in Amber's parm files)::

    C -N -CX-C     1     0.42000000     0.000000    -3.0
    C -N -CX-C     1     0.27000000     0.000000     2.0

columns: four atom types (Amber names, at most two characters, ``-`` separated), IDIVF (always 1
here), PK (kcal/mol), PHASE (degrees), PN. A negative PN means "another term of this series
follows", so every line but the last of a series carries ``-n``. A frcmod entry replaces the whole
series of its type quadruple in tleap/ParmEd, which is why all fitted periodicities are written,
including terms with ``k = 0``.

Pair-specific Lennard-Jones terms (NBFIX) go in an ``LJEDIT`` section (read by tleap and ParmEd):
``A B  Rmin/2  eps  Rmin/2  eps`` (Angstrom, kcal/mol); the pair gets ``Rmin = Rmin/2 + Rmin/2`` and
``eps = sqrt(eps * eps)``, so writing half the fitted Rmin and the fitted epsilon twice reproduces the pair.
A frcmod cannot hold CMAP grids that ParmEd reads back; use the CHARMM prm, GROMACS itp or ffxml writers.

Energies are converted from kJ/mol with :data:`forcefield_refit.units.KJ_TO_KCAL` here and nowhere else.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from forcefield_refit.atom_types import amber_type_name
from forcefield_refit.exceptions import RefitInputError
from forcefield_refit.terms import NBFixPair, merge_pairs, merge_torsions
from forcefield_refit.torsions import FourierTorsion
from forcefield_refit.units import KJ_TO_KCAL, NM_TO_ANGSTROM
from forcefield_refit.writers._io import atomic_write_text

logger = logging.getLogger(__name__)

#: Longest atom-type name an Amber frcmod DIHE line can hold.
MAX_AMBER_TYPE_LENGTH = 2


def _amber_types(torsion: FourierTorsion | NBFixPair) -> list[str]:
    names = [amber_type_name(t) for t in torsion.types]
    bad = [n for n in names if not 1 <= len(n) <= MAX_AMBER_TYPE_LENGTH or " " in n or "-" in n]
    if bad:
        raise RefitInputError(
            f"types {torsion.types} give Amber names {names}; allowed: 1-{MAX_AMBER_TYPE_LENGTH} "
            "characters without '-' or spaces. Hint: use Amber atom types (e.g. 'CX' or 'protein-CX')."
        )
    return names


def dihedral_lines(torsion: FourierTorsion) -> list[str]:
    """Frcmod DIHE lines for one torsion series (kcal/mol, degrees).

    Parameters
    ----------
    torsion : FourierTorsion
        Terms ``(n, phase_deg, k_kj)``; ``k`` is converted to kcal/mol.

    Returns
    -------
    list of str
        One line per term, without newline.
    """
    if not torsion.terms:
        raise RefitInputError(
            f"torsion {torsion.types} has terms=[]; allowed: at least one (n, phase_deg, k_kj) term. "
            "Hint: fit it with fit_fourier()."
        )
    label = "-".join(f"{name:<2}" for name in _amber_types(torsion))
    lines = []
    for i, (n, phase_deg, k_kj) in enumerate(torsion.terms):
        signed_n = float(n) if i == len(torsion.terms) - 1 else -float(n)
        lines.append(f"{label} {1:4d} {k_kj * KJ_TO_KCAL:14.8f} {phase_deg:12.6f} {signed_n:6.1f}")
    return lines


def ljedit_lines(pairs: Sequence[NBFixPair]) -> list[str]:
    """Frcmod ``LJEDIT`` lines for pair-specific LJ (Angstrom, kcal/mol).

    Parameters
    ----------
    pairs : sequence of NBFixPair

    Returns
    -------
    list of str
        ``A B Rmin/2 eps Rmin/2 eps`` per pair, without newline.
    """
    lines = []
    for pair in merge_pairs(pairs):
        a, b = _amber_types(pair)
        half = 0.5 * pair.rmin_nm * NM_TO_ANGSTROM
        eps = pair.epsilon_kj * KJ_TO_KCAL
        lines.append(f"{a:<2}  {b:<2}  {half:14.10f} {eps:16.12f} {half:14.10f} {eps:16.12f}")
    return lines


def write_frcmod(
    path: str | os.PathLike[str],
    torsions: Sequence[FourierTorsion],
    title: str = "",
    nbfix: Sequence[NBFixPair] = (),
    overwrite: bool = False,
) -> Path:
    """Write an Amber frcmod file: torsions in DIHE, NBFIX pairs in LJEDIT (atomic; no overwrite unless asked).

    Parameters
    ----------
    path : str or PathLike
        Output file; written to a temporary file in the same folder, then ``os.replace``-d.
    torsions : sequence of FourierTorsion
        Series to write; types may be OpenMM amber14 names (``protein-CX``) or Amber names (``CX``).
    title : str
        First (title) line; a default naming the package is used when empty.
    nbfix : sequence of NBFixPair
        Pair-specific LJ terms (``LJEDIT`` section).
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    pathlib.Path
        The written path.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> t = FourierTorsion(("protein-C", "protein-N", "protein-CX", "protein-C"), [(2, 0.0, 4.184)])
    >>> out = write_frcmod(pathlib.Path(tempfile.mkdtemp()) / "refit.frcmod", [t])
    >>> out.read_text().splitlines()[2]
    'C -N -CX-C     1     1.00000000     0.000000    2.0'
    """
    if not torsions and not nbfix:
        raise RefitInputError(
            "torsions=[] and nbfix=[]; allowed: at least one FourierTorsion or NBFixPair. "
            "Hint: pass the fitted series."
        )
    body = [title.strip().splitlines()[0] if title.strip() else "forcefield_refit torsion parameters"]
    if torsions:
        body.append("DIHE")
        for torsion in merge_torsions(torsions):
            body.extend(dihedral_lines(torsion))
        body.append("")
    if nbfix:
        body += ["LJEDIT", *ljedit_lines(nbfix), ""]
    body += [""]
    target = atomic_write_text(path, "\n".join(body), overwrite=overwrite)
    logger.info("wrote %d torsion series and %d LJEDIT pairs to %s", len(torsions), len(nbfix), target)
    return target
