"""Fourier torsion terms: the parameter container, the least-squares fit, and System/topology helpers.

Convention (Amber and OpenMM ``PeriodicTorsionForce``)::

    E(phi) = sum_i k_i (1 + cos(n_i phi - phase_i))

with ``k_i`` in kJ/mol (>= 0), ``n_i`` an integer >= 1 and ``phase_i`` in degrees here (radians in
OpenMM files/objects, converted by the writers).

Typical use: ``target = model_profile - mm_baseline_profile`` where the baseline is the MM energy with
the refitted torsion terms removed (:func:`remove_torsions`), evaluated on the same relaxed
geometries; then :func:`fit_fourier` on the *achieved* angles.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import openmm
from openmm import app, unit

from forcefield_refit.exceptions import RefitInputError, RefitMatchError

logger = logging.getLogger(__name__)

TypeQuad = tuple[str, str, str, str]
AtomQuad = tuple[int, int, int, int]

#: Phases with |k| below this (kJ/mol) are reported as 0 deg (the phase is undefined there).
_ZERO_K_KJ = 1e-12

#: Phases this close below 360 deg (float noise around 0) are reported as 0 deg.
_PHASE_SNAP_DEG = 1e-9


@dataclass
class FourierTorsion:
    """A proper torsion series for one atom-type quadruple.

    Attributes
    ----------
    types : tuple of 4 str
        Atom types (OpenMM names such as ``"protein-CX"`` or Amber names such as ``"CX"``).
    terms : list of (int, float, float)
        ``(periodicity n >= 1, phase_deg, k_kj >= 0)``; ``E = sum k (1 + cos(n phi - phase))``.
    fit_rmse_kj : float or None
        RMSE of the least-squares fit that produced the terms, kJ/mol (``None`` if not fitted).

    Examples
    --------
    >>> t = FourierTorsion(("C", "N", "CX", "C"), [(2, 180.0, 1.0)])
    >>> round(float(t.energy(0.0)), 6)
    0.0
    """

    types: TypeQuad
    terms: list[tuple[int, float, float]]
    fit_rmse_kj: float | None = field(default=None, compare=False)

    def energy(self, phi_rad: np.ndarray | float) -> np.ndarray:
        """Torsion energy, kJ/mol, at dihedral ``phi_rad`` (radians, any shape; result has the same shape)."""
        phi = np.asarray(phi_rad, dtype=float)
        total = np.zeros_like(phi)
        for n, phase_deg, k in self.terms:
            total = total + k * (1.0 + np.cos(n * phi - np.radians(phase_deg)))
        return total


def _check_periodicities(periodicities: Sequence[int]) -> tuple[int, ...]:
    from forcefield_refit.torsion_fit import check_periodicities

    return check_periodicities(periodicities)


def fit_fourier(
    angles_deg: Sequence[float] | np.ndarray,
    target_kj: Sequence[float] | np.ndarray,
    periodicities: Sequence[int] = (1, 2, 3),
    types: TypeQuad = ("X", "X", "X", "X"),
    ridge: float = 0.0,
    temperature_k: float | None = None,
    phases: str = "free",
    weight_energy_kj: Sequence[float] | np.ndarray | None = None,
) -> FourierTorsion:
    """Fit ``target ~ c + sum_n k_n (1 + cos(n phi - phase_n))`` by (weighted, ridge) linear least squares.

    The model is linear in ``(c, a_n, b_n)`` with ``a_n cos(n phi) + b_n sin(n phi)``; then
    ``k_n = hypot(a_n, b_n) >= 0`` and ``phase_n = atan2(b_n, a_n)`` mapped to ``[0, 360)`` degrees.
    The free constant ``c`` absorbs any offset of the target.

    Parameters
    ----------
    angles_deg : array_like
        Dihedral angles, shape ``[K]``, degrees (use ``TorsionProfile.achieved_angles_deg``).
    target_kj : array_like
        Target energies, shape ``[K]``, kJ/mol.
    periodicities : sequence of int
        Distinct periodicities ``n >= 1``.
    types : tuple of 4 str
        Atom-type quadruple stored on the result.
    ridge : float
        Ridge penalty on the amplitudes (0: plain least squares); see
        :func:`~forcefield_refit.torsion_fit.fit_torsions`.
    temperature_k : float or None
        Boltzmann weighting temperature, K; None for uniform weights.
    phases : {"free", "0/180"}
        Free phases or phases restricted to 0/180 degrees.
    weight_energy_kj : array_like, optional
        ``[K]`` kJ/mol energies that set the Boltzmann weights (default: ``target_kj``).

    Returns
    -------
    FourierTorsion
        Terms in the order of ``periodicities``, with ``fit_rmse_kj`` set (weighted RMSE when weighted).

    Examples
    --------
    >>> phi = np.arange(-180.0, 180.0, 30.0)
    >>> t = fit_fourier(phi, 5.0 + 2.0 * (1 + np.cos(np.radians(2 * phi - 180.0))), periodicities=(2,))
    >>> [(n, round(p, 6), round(k, 6)) for n, p, k in t.terms]
    [(2, 180.0, 2.0)]
    """
    pers = _check_periodicities(periodicities)
    phi_deg = np.asarray(angles_deg, dtype=float)
    target = np.asarray(target_kj, dtype=float)
    if phi_deg.ndim != 1 or target.shape != phi_deg.shape:
        raise RefitInputError(
            f"angles_deg has shape {phi_deg.shape} and target_kj {target.shape}; allowed: two 1-D arrays "
            "of the same length. Hint: fit profile.achieved_angles_deg against one energy per geometry."
        )
    if not (np.all(np.isfinite(phi_deg)) and np.all(np.isfinite(target))):
        raise RefitInputError(
            "angles_deg/target_kj contain NaN or inf; allowed: finite values. Hint: drop failed points."
        )
    n_unknowns = 1 + 2 * len(pers)
    n_distinct = np.unique(np.round(np.mod(phi_deg, 360.0), 6)).size
    if n_distinct < n_unknowns:
        raise RefitInputError(
            f"angles_deg has {n_distinct} distinct angles; allowed: at least {n_unknowns} for periodicities "
            f"{pers} (1 + 2 per term). Hint: use a finer grid (e.g. every 15-30 degrees)."
        )
    from forcefield_refit.torsion_fit import TorsionFitData, fit_torsions

    quad = tuple(types)
    weights = None if weight_energy_kj is None else np.asarray(weight_energy_kj, dtype=float)
    data = TorsionFitData("profile", target, {quad: phi_deg[:, None]}, weight_energy_kj=weights)  # type: ignore[dict-item]
    fitted = fit_torsions(
        [data], periodicities=pers, ridge=ridge, temperature_k=temperature_k, phases=phases  # type: ignore[arg-type]
    )
    return fitted[quad]  # type: ignore[index]


def _torsion_forces(system: openmm.System) -> list[openmm.PeriodicTorsionForce]:
    return [f for f in system.getForces() if isinstance(f, openmm.PeriodicTorsionForce)]


def _normalise(quad: Sequence[int]) -> AtomQuad:
    q = tuple(int(i) for i in quad)
    if len(q) != 4:
        raise RefitInputError(f"atom quadruple {tuple(quad)}; allowed: 4 atom indices. Hint: (i, j, k, l).")
    return min(q, q[::-1])  # type: ignore[return-value]


def system_torsion_terms(system: openmm.System, atom_quad: Sequence[int]) -> list[tuple[int, float, float]]:
    """PeriodicTorsionForce terms of a System acting on one atom quadruple (either direction).

    Parameters
    ----------
    system : openmm.System
        System to read.
    atom_quad : sequence of 4 int
        0-based atom indices.

    Returns
    -------
    list of (int, float, float)
        ``(periodicity, phase_deg, k_kj)`` for every term on that quadruple, in force order.
    """
    key = _normalise(atom_quad)
    terms = []
    for force in _torsion_forces(system):
        for i in range(force.getNumTorsions()):
            a, b, c, d, n, phase, k = force.getTorsionParameters(i)
            if _normalise((a, b, c, d)) == key:
                terms.append(
                    (
                        int(n),
                        float(phase.value_in_unit(unit.degree)),
                        float(k.value_in_unit(unit.kilojoule_per_mole)),
                    )
                )
    return terms


def remove_torsions(system: openmm.System, atom_quads: Iterable[Sequence[int]]) -> openmm.System:
    """Copy of ``system`` with every PeriodicTorsionForce term on the given quadruples set to ``k = 0``.

    This is the MM baseline for a refit: its energy on the scan geometries is subtracted from the
    reference profile. The input System is not modified.

    Parameters
    ----------
    system : openmm.System
        The full MM System.
    atom_quads : iterable of 4-int sequences
        Atom quadruples (either direction) whose torsion terms are removed.

    Returns
    -------
    openmm.System
        Deep copy with those terms zeroed.

    Raises
    ------
    RefitMatchError
        If a quadruple has no PeriodicTorsionForce term (nothing to remove means a wrong index).
    """
    keys = {_normalise(q) for q in atom_quads}
    baseline = copy.deepcopy(system)
    found: set[AtomQuad] = set()
    for force in _torsion_forces(baseline):
        for i in range(force.getNumTorsions()):
            a, b, c, d, n, phase, _k = force.getTorsionParameters(i)
            key = _normalise((a, b, c, d))
            if key in keys:
                force.setTorsionParameters(i, a, b, c, d, n, phase, 0.0)
                found.add(key)
    missing = sorted(keys - found)
    if missing:
        raise RefitMatchError(
            f"atom_quads {missing} have no PeriodicTorsionForce term in the System; allowed: quadruples the "
            "force field parameterised. Hint: find them with torsion_atoms_by_type()."
        )
    logger.debug("zeroed torsion terms on %d quadruples", len(found))
    return baseline


def atom_types(topology: app.Topology, forcefield: app.ForceField) -> list[str]:
    """OpenMM atom type of every atom, as assigned by the force field's residue templates.

    Parameters
    ----------
    topology : openmm.app.Topology
        Molecule (with bonds).
    forcefield : openmm.app.ForceField
        Loaded force field, e.g. ``ForceField("amber14-all.xml")``.

    Returns
    -------
    list of str
        Type names indexed by atom index, e.g. ``"protein-CX"``.
    """
    data = app.ForceField._SystemData(topology)
    forcefield._matchAllResiduesToTemplates(data, topology, {}, False)
    return [data.atomType[atom] for atom in topology.atoms()]


def proper_torsions(topology: app.Topology) -> list[AtomQuad]:
    """All proper torsions ``a-b-c-d`` of a bonded topology, each once (``a < d`` orientation not imposed).

    Returns
    -------
    list of tuple of 4 int
        Atom quadruples along bonds.
    """
    neighbours: dict[int, set[int]] = {atom.index: set() for atom in topology.atoms()}
    for bond in topology.bonds():
        i, j = bond[0].index, bond[1].index
        neighbours[i].add(j)
        neighbours[j].add(i)
    quads: set[AtomQuad] = set()
    for b in neighbours:
        for c in neighbours[b]:
            if b >= c:
                continue
            for a in neighbours[b] - {c}:
                for d in neighbours[c] - {b, a}:
                    quads.add((a, b, c, d))
    return sorted(quads)


def torsion_atoms_by_type(
    topology: app.Topology, forcefield: app.ForceField | Sequence[str], types: Sequence[str]
) -> list[AtomQuad]:
    """Atom quadruples of a molecule whose OpenMM atom types match a type quadruple.

    Parameters
    ----------
    topology : openmm.app.Topology
        Molecule with bonds (e.g. ``PDBFile(...).topology``).
    forcefield : ForceField or sequence of str
        A loaded ForceField or the ffxml files to load (``["amber14-all.xml"]``).
    types : sequence of 4 str
        OpenMM types, e.g. ``("protein-C", "protein-N", "protein-CX", "protein-C")``; a match in
        reverse order is returned reversed, so every result is oriented like ``types``.

    Returns
    -------
    list of tuple of 4 int
        Matching quadruples, sorted.

    Raises
    ------
    RefitMatchError
        If nothing matches (the message lists the types present in the molecule).
    """
    wanted = tuple(types)
    if len(wanted) != 4:
        raise RefitInputError(
            f"types={wanted}; allowed: four atom types. Hint: ('protein-C', 'protein-N', ...)."
        )
    ff = forcefield if isinstance(forcefield, app.ForceField) else app.ForceField(*forcefield)
    assigned = atom_types(topology, ff)
    matches = set()
    for quad in proper_torsions(topology):
        quad_types = tuple(assigned[i] for i in quad)
        if quad_types == wanted:
            matches.add(quad)
        elif quad_types[::-1] == wanted:
            matches.add(quad[::-1])
    if not matches:
        raise RefitMatchError(
            f"types={wanted} match no proper torsion; allowed types in this molecule: "
            f"{sorted(set(assigned))}. "
            "Hint: OpenMM amber14 names carry a prefix, e.g. 'protein-CX' (see atom_types.openmm_type_name)."
        )
    return sorted(matches)


def check_dihedral_bonded(bonds: Iterable[tuple[int, int]], dihedral_atoms: Sequence[int]) -> None:
    """Raise unless ``a-b``, ``b-c`` and ``c-d`` are covalent bonds (a proper dihedral).

    Parameters
    ----------
    bonds : iterable of (int, int)
        Covalent bonds, 0-based atom indices.
    dihedral_atoms : sequence of 4 int
        ``(a, b, c, d)``.

    Raises
    ------
    RefitMatchError
        Naming the first missing bond.

    Examples
    --------
    >>> check_dihedral_bonded([(0, 1), (1, 2), (2, 3)], (0, 1, 2, 3))
    """
    pairs = {frozenset((int(i), int(j))) for i, j in bonds}
    quad = tuple(int(i) for i in dihedral_atoms)
    for i, j in zip(quad[:-1], quad[1:], strict=True):
        if frozenset((i, j)) not in pairs:
            raise RefitMatchError(
                f"dihedral_atoms={quad}: atoms {i} and {j} are not bonded; allowed: a proper dihedral a-b-c-d "
                "along covalent bonds. Hint: check the 0-based indices against topology.bonds()."
            )


def check_types_known(forcefield: app.ForceField, types: Iterable[str]) -> None:
    """Raise unless every atom type (or atom class) is defined in the base force field.

    Parameters
    ----------
    forcefield : openmm.app.ForceField
        Base force field.
    types : iterable of str
        Type names (``protein-CX``) or class names (``CT`` in amber99sb.xml).

    Raises
    ------
    RefitMatchError
        Listing the unknown names and a few known ones.
    """
    known = set(forcefield._atomTypes) | {t.atomClass for t in forcefield._atomTypes.values()}
    unknown = sorted({t for t in types if t not in known})
    if unknown:
        close = sorted(k for k in known if any(u.split("-")[-1] == k.split("-")[-1] for u in unknown))[:8]
        raise RefitMatchError(
            f"types {unknown} are not atom types of the base force field; allowed: its type or class names, "
            f"e.g. {close or sorted(known)[:8]}. Hint: amber14 types carry a prefix ('protein-CX'); use "
            "atom_types.openmm_type_name()."
        )
