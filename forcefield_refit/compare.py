"""Which torsion terms differ between two force fields on a molecule, and how to group them for a fit.

Used by the closed-loop check (target force field vs the one being refit): fitting only the classes whose
terms actually differ on the scanned molecules keeps the joint fit determined; fitting every class of the
residue makes it underdetermined (phi and phi' share a central bond, so their series are nearly collinear).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import openmm
from openmm import app

from forcefield_refit.torsions import AtomQuad, FourierTorsion, TypeQuad, proper_torsions, system_torsion_terms

#: Terms whose k (kJ/mol) or phase (degrees) differ by less than this are equal.
_TOLERANCE = 1e-4


def _canonical_terms(terms: Sequence[tuple[int, float, float]]) -> tuple[tuple[int, float, float], ...]:
    """Terms with k = 0 dropped, phases wrapped, sorted; comparable between Systems."""
    out = []
    for n, phase, k in terms:
        if abs(k) > _TOLERANCE:
            out.append((int(n), round(float(np.mod(phase, 360.0)), 3) % 360.0, round(float(k), 4)))
    return tuple(sorted(out))


@dataclass
class ClassDifference:
    """Instances of one base-force-field label quadruple on a molecule set.

    Attributes
    ----------
    label : tuple of 4 str
        Base label quadruple (canonical orientation: the smaller of it and its reverse).
    differ : dict
        ``{molecule name: [atom quadruples]}`` whose terms differ between the two Systems.
    same : dict
        ``{molecule name: [atom quadruples]}`` whose terms are equal.
    target_terms : set
        Distinct target term sets among the differing instances.
    base_terms : list of (int, float, float)
        Base terms of the first instance (the starting parameters of a fit).
    """

    label: TypeQuad
    differ: dict[str, list[AtomQuad]] = field(default_factory=dict)
    same: dict[str, list[AtomQuad]] = field(default_factory=dict)
    target_terms: set[tuple[tuple[int, float, float], ...]] = field(default_factory=set)
    base_terms: list[tuple[int, float, float]] = field(default_factory=list)

    @property
    def consistent(self) -> bool:
        """True when one class-level series can reproduce the target on every instance."""
        return not any(self.same.values()) and len(self.target_terms) == 1


def torsion_differences(
    molecules: Sequence[tuple[str, app.Topology, openmm.System, openmm.System, Sequence[str]]],
) -> dict[TypeQuad, ClassDifference]:
    """Compare PeriodicTorsionForce terms per proper dihedral of each molecule in two Systems.

    Parameters
    ----------
    molecules : sequence of (name, topology, base System, target System, base labels)
        Base labels: per-atom classes (or types) of the force field being refit.

    Returns
    -------
    dict
        ``{label quadruple: ClassDifference}`` for every label quadruple with at least one differing instance.
    """
    out: dict[TypeQuad, ClassDifference] = {}
    seen: dict[TypeQuad, dict[str, list[AtomQuad]]] = {}
    for name, topology, base, target, labels in molecules:
        for quad in proper_torsions(topology):
            key = tuple(labels[i] for i in quad)
            oriented = quad if key <= key[::-1] else quad[::-1]
            key = min(key, key[::-1])
            b = _canonical_terms(system_torsion_terms(base, quad))
            t = _canonical_terms(system_torsion_terms(target, quad))
            if b != t:
                diff = out.setdefault(key, ClassDifference(key))  # type: ignore[arg-type]
                diff.differ.setdefault(name, []).append(oriented)  # type: ignore[arg-type]
                diff.target_terms.add(t)
                if not diff.base_terms:
                    diff.base_terms = list(b)
            else:
                seen.setdefault(key, {}).setdefault(name, []).append(oriented)  # type: ignore[arg-type]
    for key, diff in out.items():
        diff.same = seen.get(key, {})
    return out


def fit_groups(
    differences: dict[TypeQuad, ClassDifference], molecule: str, base_types: Sequence[str]
) -> tuple[dict[TypeQuad, list[AtomQuad]], dict[TypeQuad, FourierTorsion]]:
    """Fitted series for one molecule: consistent classes by class, the differing part of the others by type.

    A class whose instances do not share one target term set (or partly equal the base) cannot be
    recovered by one class-level series; its differing instances are keyed by their base atom *types*
    (residue-specific in amber99sb.xml) and fitted separately, and its equal instances keep the base terms.

    Parameters
    ----------
    differences : dict
        From :func:`torsion_differences`.
    molecule : str
        Molecule name used there.
    base_types : sequence of str
        Per-atom base atom types of this molecule.

    Returns
    -------
    (dict, dict)
        ``{key: [atom quadruples]}`` for :func:`forcefield_refit.fit_profiles.scan_profile` and
        ``{key: FourierTorsion}`` starting parameters (the base terms) for the ridge prior.
    """
    groups: dict[TypeQuad, list[AtomQuad]] = {}
    prior: dict[TypeQuad, FourierTorsion] = {}
    for label, diff in differences.items():
        for quad in diff.differ.get(molecule, []):
            if diff.consistent:
                key = label
            else:
                types = tuple(base_types[i] for i in quad)
                key = min(types, types[::-1])  # type: ignore[assignment]
                quad = quad if types <= types[::-1] else quad[::-1]  # type: ignore[assignment]
            groups.setdefault(key, []).append(quad)
            prior[key] = FourierTorsion(types=key, terms=list(diff.base_terms))
    return groups, prior
