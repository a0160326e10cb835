"""Read written parameter files back through ParmEd, the parser their engines' users rely on.

Each reader returns a :class:`ReloadedTerms` in package units (kJ/mol, nm, degrees) with Amber type
names as the file holds them (CHARMM names upper-cased by ParmEd). Compare with the fitted terms through
:func:`forcefield_refit.term_energy.term_energies`.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import parmed

from forcefield_refit.exceptions import RefitInputError
from forcefield_refit.terms import CmapTerm, NBFixPair
from forcefield_refit.torsions import FourierTorsion
from forcefield_refit.units import ANGSTROM_TO_NM, KCAL_TO_KJ

logger = logging.getLogger(__name__)


@dataclass
class ReloadedTerms:
    """Terms parsed back from a parameter file (package units).

    Attributes
    ----------
    torsions : list of FourierTorsion
        One per type quadruple (the first direction ParmEd lists).
    cmaps : list of CmapTerm
        One per five-type chain.
    nbfix : list of NBFixPair
        One per type pair.
    """

    torsions: list[FourierTorsion] = field(default_factory=list)
    cmaps: list[CmapTerm] = field(default_factory=list)
    nbfix: list[NBFixPair] = field(default_factory=list)

    def torsion(self, types: Sequence[str]) -> FourierTorsion:
        """The series for ``types`` (either direction, case-insensitive), oriented like ``types``."""
        want = tuple(t.upper() for t in types)
        for torsion in self.torsions:
            have = tuple(t.upper() for t in torsion.types)
            if have in (want, want[::-1]):
                return FourierTorsion(tuple(types), list(torsion.terms))  # type: ignore[arg-type]
        raise RefitInputError(
            f"types={tuple(types)} not in the reloaded file; allowed: {[t.types for t in self.torsions]}. "
            "Hint: compare Amber names (amber_type_name)."
        )

    def pair(self, types: Sequence[str]) -> NBFixPair:
        """The NBFIX pair for two types (either order, case-insensitive)."""
        want = sorted(t.upper() for t in types)
        for pair in self.nbfix:
            if sorted(t.upper() for t in pair.types) == want:
                return pair
        raise RefitInputError(
            f"types={tuple(types)} has no reloaded NBFIX pair; allowed: {[p.types for p in self.nbfix]}. "
            "Hint: compare Amber names (amber_type_name)."
        )


def _torsions(dihedral_types: dict[Any, Any]) -> list[FourierTorsion]:
    out, seen = [], set()
    for key, series in dihedral_types.items():
        if key in seen or key[::-1] in seen:
            continue
        seen.add(key)
        terms = [(int(round(t.per)), float(t.phase), float(t.phi_k) * KCAL_TO_KJ) for t in series]
        out.append(FourierTorsion(types=tuple(key), terms=terms))  # type: ignore[arg-type]
    return out


def _cmaps(cmap_types: dict[Any, Any]) -> list[CmapTerm]:
    out, seen = [], set()
    for key, ctype in cmap_types.items():
        chain = (key[0], key[1], key[2], key[3], key[7])
        if id(ctype) in seen:
            continue
        seen.add(id(ctype))
        n = int(ctype.resolution)
        grid = np.asarray([ctype.grid[i] for i in range(n * n)], dtype=float).reshape(n, n) * KCAL_TO_KJ
        out.append(CmapTerm(chain, grid))  # type: ignore[arg-type]
    return out


def _pairs(nbfix_types: dict[Any, Any]) -> list[NBFixPair]:
    out, seen = [], set()
    for key, (eps_kcal, rmin_angstrom) in nbfix_types.items():
        k = tuple(sorted(key))
        if k in seen:
            continue
        seen.add(k)
        out.append(NBFixPair(tuple(key), rmin_angstrom * ANGSTROM_TO_NM, abs(eps_kcal) * KCAL_TO_KJ))  # type: ignore[arg-type]
    return out


def reload_frcmod_terms(path: str | os.PathLike[str]) -> ReloadedTerms:
    """Parse an frcmod (DIHE, LJEDIT) with ``parmed.amber.AmberParameterSet``.

    Parameters
    ----------
    path : str or PathLike

    Returns
    -------
    ReloadedTerms
    """
    params = parmed.amber.AmberParameterSet(os.fspath(path))
    return ReloadedTerms(_torsions(params.dihedral_types), [], _pairs(params.nbfix_types))


def reload_charmm_prm(path: str | os.PathLike[str]) -> ReloadedTerms:
    """Parse a CHARMM prm (DIHEDRALS, CMAP, NBFIX) with ``parmed.charmm.CharmmParameterSet``.

    ParmEd reads these sections without atom-type declarations (no RTF/MASS needed); NBFIX pairs of
    undeclared types are still recorded in ``nbfix_types``.

    Parameters
    ----------
    path : str or PathLike

    Returns
    -------
    ReloadedTerms
    """
    params = parmed.charmm.CharmmParameterSet(os.fspath(path))
    return ReloadedTerms(_torsions(params.dihedral_types), _cmaps(params.cmap_types), _pairs(params.nbfix_types))


def reload_gromacs_itp(
    path: str | os.PathLike[str], atom_types: Sequence[str], comb_rule: int = 2
) -> ReloadedTerms:
    """Parse a GROMACS itp with ``parmed.gromacs.GromacsTopologyFile`` through a minimal top that includes it.

    The top declares ``[ defaults ]`` (Amber: fudgeLJ 0.5, fudgeQQ 0.8333) and ``[ atomtypes ]`` for
    ``atom_types`` (placeholder mass and LJ: only the refit sections are compared), then ``#include``-s the file.

    Parameters
    ----------
    path : str or PathLike
        The itp written by :func:`~forcefield_refit.writers.gromacs_itp.write_gromacs_itp`.
    atom_types : sequence of str
        Type names used in the itp (Amber names).
    comb_rule : {2, 3}
        Combination rule (sigma/epsilon in ``[ nonbond_params ]``).

    Returns
    -------
    ReloadedTerms
    """
    if comb_rule not in (2, 3):
        raise RefitInputError(
            f"comb_rule={comb_rule}; allowed: 2 or 3 (sigma/epsilon). Hint: Amber and CHARMM ports use 2."
        )
    itp = Path(path).resolve()
    lines = [
        "[ defaults ]",
        f"1 {comb_rule} yes 0.5 0.8333",
        "",
        "[ atomtypes ]",
        *(f"{t} 6 12.011 0.0 A 0.3 0.4" for t in dict.fromkeys(atom_types)),
        "",
        f'#include "{itp}"',
        "",
    ]
    with tempfile.TemporaryDirectory() as folder:
        top = Path(folder) / "reload.top"
        top.write_text("\n".join(lines))
        parsed = parmed.gromacs.GromacsTopologyFile(str(top))
    params = parsed.parameterset
    return ReloadedTerms(_torsions(params.dihedral_types), _cmaps(params.cmap_types), _pairs(params.nbfix_types))
