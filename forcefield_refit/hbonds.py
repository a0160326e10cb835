"""Hydrogen-bond dimer scans and their fits: pair-specific LJ (NBFIX) and an angle-dependent H-bond term.

**Scan.** :func:`dimer_scan` places a rigid acceptor monomer around a rigid donor monomer: the acceptor atom
sits at distance ``r`` from the donor heavy atom ``D`` along the ``D -> H`` direction bent by ``alpha`` in the
donor's plane; the acceptor's "back" vector (from the acceptor atom to the mean of its bonded neighbours)
points away from the donor. Energies are interaction energies ``E(AB) - E(A) - E(B)``.

**NBFIX fit.** With ``E_MM`` the full MM interaction energy and ``LJ_comb`` the combining-rule LJ of the
intermolecular atom pairs of the fitted type pairs, ``y = E_target - E_MM + sum LJ_comb(r)`` equals
``sum (A / r^12 - B / r^6)`` for the new pair parameters: linear in ``(A, B) >= 0`` (non-negative least
squares, Boltzmann weights), then ``Rmin = (2 A / B)^(1/6)``, ``epsilon = B^2 / (4 A)``.

**H-bond term.** :class:`HbondTerm` adds ``(-cos theta)^p (c12 / r^12 - c10 / r^10 - c6 / r^6)`` for
``theta`` the D-H...A angle above 90 degrees and ``r`` the H...A distance (OpenMM ``CustomHbondForce``),
summed over every intermolecular donor (heavy, H) / acceptor triple of its types, as OpenMM applies it;
fitted linearly to ``E_target - E_MM``. ``form="12-10"`` (default, ``c6 = 0``, ``c12, c10 >= 0``: a
classic 12-10 well) or ``form="12-10-6"`` (``c12 >= 0``, ``c10`` and ``c6`` of either sign: a general
short-range correction that can also *remove* binding). ``p`` (``angle_power``) is 2 by default; 1 and 4
narrow or widen the angular window; 0 drops the angle (an H...A pair term, no ``step``).
"""

from __future__ import annotations

import dataclasses
import logging
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy.optimize import lsq_linear, nnls

from forcefield_refit.energy import EnergyFunction
from forcefield_refit.exceptions import RefitInputError
from forcefield_refit.terms import NBFixPair
from forcefield_refit.torsion_fit import boltzmann_weights

logger = logging.getLogger(__name__)

#: Energy expression of :class:`HbondTerm` with the default ``angle_power=2`` (OpenMM syntax; nm, kJ/mol).
HBOND_ENERGY = (
    "step(-c) * (-c)^2 * (c12 / r^12 - c10 / r^10 - c6 / r^6); c = cos(angle(d1, d2, a1)); r = distance(d2, a1)"
)

#: Allowed angular powers ``p`` of :class:`HbondTerm` (0: no angle dependence).
ANGLE_POWERS = (0, 1, 2, 4)

HbondForm = Literal["12-10", "12-10-6"]


@dataclass
class HbondTerm:
    """Angle-dependent 12-10 hydrogen-bond term for one donor (heavy, H) type pair and one acceptor type.

    Attributes
    ----------
    donor_types : tuple of 2 str
        (heavy atom type, hydrogen type), bonded.
    acceptor_type : str
        Acceptor atom type.
    c12 : float
        kJ/mol nm^12 (repulsion).
    c10 : float
        kJ/mol nm^10 (attraction when positive).
    c6 : float
        kJ/mol nm^6 (attraction when positive; 0 for the classic 12-10 form).
    angle_power : int
        ``p`` of the angular factor ``(-cos theta)^p`` (one of :data:`ANGLE_POWERS`; 0 = no angle).
    fit_rmse_kj : float or None
        Fit RMSE, kJ/mol.

    Examples
    --------
    >>> t = HbondTerm(("tip3p-O", "tip3p-H"), "tip3p-O", 1e-8, 1e-6)
    >>> round(float(t.energy(0.2, 180.0)), 6) == round(1e-8 / 0.2**12 - 1e-6 / 0.2**10, 6)
    True
    """

    donor_types: tuple[str, str]
    acceptor_type: str
    c12: float
    c10: float
    c6: float = 0.0
    angle_power: int = 2
    fit_rmse_kj: float | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.angle_power not in ANGLE_POWERS:
            raise RefitInputError(
                f"angle_power={self.angle_power}; allowed: {ANGLE_POWERS} (0: no angle dependence). Hint: 2."
            )

    @property
    def expression(self) -> str:
        """OpenMM ``CustomHbondForce`` energy expression of this term."""
        radial = "(c12 / r^12 - c10 / r^10 - c6 / r^6)"
        tail = "; r = distance(d2, a1)"
        if self.angle_power == 0:
            return radial + tail
        return f"step(-c) * (-c)^{self.angle_power} * {radial}; c = cos(angle(d1, d2, a1))" + tail

    @property
    def types(self) -> tuple[str, str, str]:
        """All three types (donor heavy, donor H, acceptor)."""
        return (*self.donor_types, self.acceptor_type)

    def energy(self, r_nm: np.ndarray | float, theta_deg: np.ndarray | float) -> np.ndarray:
        """Energy at H...A distance ``r_nm`` (nm) and D-H...A angle ``theta_deg`` (degrees), kJ/mol."""
        r = np.asarray(r_nm, dtype=float)
        return _angular(theta_deg, self.angle_power) * (self.c12 / r**12 - self.c10 / r**10 - self.c6 / r**6)

    def profile_energy(self, positions: np.ndarray, triples: Sequence[tuple[int, int, int]]) -> np.ndarray:
        """Energy summed over ``(donor, H, acceptor)`` triples on every frame ``[M, N, 3]`` nm; ``[M]`` kJ/mol."""
        r, theta = triple_geometry(positions, triples)
        return np.sum(self.energy(r, theta), axis=1)

    def ffxml_element(self) -> ET.Element:
        """``<CustomHbondForce>`` element for an OpenMM ffxml file (types must be base force-field types)."""
        force = ET.Element(
            "CustomHbondForce",
            {"particlesPerDonor": "2", "particlesPerAcceptor": "1", "bondCutoff": "3", "energy": self.expression},
        )
        for name in ("c12", "c10", "c6"):
            ET.SubElement(force, "PerDonorParameter", {"name": name})
        ET.SubElement(
            force, "Donor",
            {"type1": self.donor_types[0], "type2": self.donor_types[1], "c12": repr(self.c12), "c10": repr(self.c10),
             "c6": repr(self.c6)},
        )
        ET.SubElement(force, "Acceptor", {"type1": self.acceptor_type})
        return force


@dataclass
class DimerProfile:
    """Rigid dimer scan (see :func:`dimer_scan`).

    Attributes
    ----------
    distances_nm, angles_deg : np.ndarray
        ``[M]`` D...A distance (nm) and bend angle (degrees) of each point.
    positions : np.ndarray
        ``[M, N_A + N_B, 3]`` nm (donor monomer first).
    energies_kj : np.ndarray
        ``[M]`` interaction energies of the scanned energy function, kJ/mol.
    n_donor_atoms : int
        Atoms of the donor monomer (the first ``n_donor_atoms`` rows).
    donor, hydrogen, acceptor : int
        Indices in the dimer.
    """

    distances_nm: np.ndarray
    angles_deg: np.ndarray
    positions: np.ndarray
    energies_kj: np.ndarray
    n_donor_atoms: int
    donor: int
    hydrogen: int
    acceptor: int

    def select(self, keep: np.ndarray) -> DimerProfile:
        """The points ``keep`` (boolean or index array) of this profile."""
        return dataclasses.replace(
            self, distances_nm=self.distances_nm[keep], angles_deg=self.angles_deg[keep],
            positions=self.positions[keep], energies_kj=self.energies_kj[keep],
        )


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _align(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rotation matrix taking unit vector ``source`` onto ``target`` (minimal rotation)."""
    s, t = source / np.linalg.norm(source), target / np.linalg.norm(target)
    cross = np.cross(s, t)
    if np.linalg.norm(cross) < 1e-12:
        if np.dot(s, t) > 0:
            return np.eye(3)
        perp = np.cross(s, [1.0, 0.0, 0.0] if abs(s[0]) < 0.9 else [0.0, 1.0, 0.0])
        return _rotation(perp, np.pi)
    return _rotation(cross, float(np.arctan2(np.linalg.norm(cross), np.dot(s, t))))


def place_dimer(
    donor_xyz: np.ndarray,
    acceptor_xyz: np.ndarray,
    donor: int,
    hydrogen: int,
    plane_atom: int,
    acceptor: int,
    acceptor_back: Sequence[int],
    distance_nm: float,
    angle_deg: float,
) -> np.ndarray:
    """Dimer coordinates ``[N_A + N_B, 3]`` (nm) for one (distance, angle) point; both monomers rigid.

    Parameters
    ----------
    donor_xyz, acceptor_xyz : np.ndarray
        Monomer coordinates, nm.
    donor, hydrogen, plane_atom : int
        Donor heavy atom, its H, and a third donor atom defining the bend plane (indices in ``donor_xyz``).
    acceptor : int
        Acceptor atom (index in ``acceptor_xyz``).
    acceptor_back : sequence of int
        Acceptor atoms whose mean defines the acceptor's back direction (its bonded neighbours).
    distance_nm : float
        D...A distance.
    angle_deg : float
        Bend of the D...A direction away from D->H, in the donor plane.
    """
    d, h, p = donor_xyz[donor], donor_xyz[hydrogen], donor_xyz[plane_atom]
    normal = np.cross(h - d, p - d)
    if np.linalg.norm(normal) < 1e-9:
        raise RefitInputError(
            f"plane_atom={plane_atom} is collinear with donor {donor} and hydrogen {hydrogen}; allowed: an atom off "
            "the D-H line. Hint: the other hydrogen of a water, or the carbonyl C of NMA."
        )
    direction = _rotation(normal, np.radians(angle_deg)) @ ((h - d) / np.linalg.norm(h - d))
    a = acceptor_xyz[acceptor]
    back = np.mean(acceptor_xyz[list(acceptor_back)], axis=0) - a
    rot = _align(back, direction)
    placed = (acceptor_xyz - a) @ rot.T + d + distance_nm * direction
    return np.concatenate([donor_xyz, placed])


def dimer_scan(
    dimer_fn: EnergyFunction,
    monomer_energies_kj: tuple[float, float],
    donor_xyz: np.ndarray,
    acceptor_xyz: np.ndarray,
    donor: int,
    hydrogen: int,
    plane_atom: int,
    acceptor: int,
    acceptor_back: Sequence[int],
    distances_nm: Sequence[float],
    angles_deg: Sequence[float] = (0.0,),
) -> DimerProfile:
    """Rigid scan of a hydrogen-bonded dimer over D...A distances and bend angles.

    Parameters
    ----------
    dimer_fn : EnergyFunction
        Energy of the dimer (donor monomer atoms first), kJ/mol.
    monomer_energies_kj : (float, float)
        Energies of the isolated rigid monomers (donor, acceptor), kJ/mol; subtracted.
    donor_xyz, acceptor_xyz, donor, hydrogen, plane_atom, acceptor, acceptor_back
        See :func:`place_dimer`.
    distances_nm : sequence of float
        D...A distances, nm (e.g. 0.25-0.45).
    angles_deg : sequence of float
        Bend angles, degrees (e.g. -30, 0, 30).

    Returns
    -------
    DimerProfile
    """
    dist = np.asarray(distances_nm, dtype=float)
    ang = np.asarray(angles_deg, dtype=float)
    if dist.ndim != 1 or dist.size == 0 or np.any(dist <= 0) or ang.ndim != 1 or ang.size == 0:
        raise RefitInputError(
            f"distances_nm={dist.tolist()}, angles_deg={ang.tolist()}; allowed: non-empty 1-D, distances > 0 nm. "
            "Hint: np.linspace(0.26, 0.45, 12) and (-30, 0, 30)."
        )
    r_grid, a_grid = (g.ravel() for g in np.meshgrid(dist, ang, indexing="ij"))
    frames = np.stack([
        place_dimer(donor_xyz, acceptor_xyz, donor, hydrogen, plane_atom, acceptor, acceptor_back, r, a)
        for r, a in zip(r_grid, a_grid, strict=True)
    ])
    offset = float(sum(monomer_energies_kj))
    energies = np.array([dimer_fn(f)[0] for f in frames]) - offset
    n_a = donor_xyz.shape[0]
    return DimerProfile(r_grid, a_grid, frames, energies, n_a, donor, hydrogen, n_a + acceptor)


def intermolecular_pairs(
    labels: Sequence[str], n_donor_atoms: int, types: tuple[str, str]
) -> list[tuple[int, int]]:
    """Intermolecular atom pairs ``(i in A, j in B)`` whose labels are the type pair (either order)."""
    want = sorted(types)
    return [
        (i, j)
        for i in range(n_donor_atoms)
        for j in range(n_donor_atoms, len(labels))
        if sorted((labels[i], labels[j])) == want
    ]


@dataclass
class NBFixData:
    """One dimer profile for :func:`fit_nbfix`.

    Attributes
    ----------
    profile : DimerProfile
    target_kj : np.ndarray
        ``[M]`` reference interaction energies, kJ/mol.
    mm_kj : np.ndarray
        ``[M]`` full MM interaction energies, kJ/mol.
    labels : list of str
        Atom types of the dimer (donor monomer first).
    lj_types : dict
        ``{type: (sigma nm, epsilon kJ/mol)}`` of the base force field (Lorentz-Berthelot combination).
    """

    profile: DimerProfile
    target_kj: np.ndarray
    mm_kj: np.ndarray
    labels: list[str]
    lj_types: dict[str, tuple[float, float]]


def _combined_lj(lj_types: dict[str, tuple[float, float]], a: str, b: str, r: np.ndarray) -> np.ndarray:
    (s1, e1), (s2, e2) = lj_types[a], lj_types[b]
    sigma, eps = 0.5 * (s1 + s2), np.sqrt(e1 * e2)
    x = (sigma / r) ** 6
    return 4.0 * eps * (x * x - x)


def fit_nbfix(
    data: Sequence[NBFixData],
    pair_types: Sequence[tuple[str, str]],
    temperature_k: float | None = 1000.0,
    window_kj: float | None = None,
) -> list[NBFixPair]:
    """Fit pair-specific LJ for the given type pairs jointly over dimer profiles (NNLS on A, B).

    Parameters
    ----------
    data : sequence of NBFixData
    pair_types : sequence of (str, str)
        Type pairs to refit; every pair must occur intermolecularly in some profile.
    temperature_k : float or None
        Boltzmann weights on the target energies, K (favour the well).
    window_kj : float, optional
        Keep only points within this many kJ/mol of each profile's target minimum.

    Returns
    -------
    list of NBFixPair
        One per pair type, ``fit_rmse_kj`` = weighted RMSE of the refit interaction energies.
    """
    if not data or not pair_types:
        raise RefitInputError("data and pair_types must be non-empty; allowed: >= 1 each. Hint: one per dimer.")
    rows, ys, ws = [], [], []
    for d in data:
        keep = np.ones(d.target_kj.size, dtype=bool)
        if window_kj is not None:
            keep = d.target_kj <= d.target_kj.min() + window_kj
        x = d.profile.positions[keep]
        y = d.target_kj[keep] - d.mm_kj[keep]
        cols = []
        for types in pair_types:
            missing = [t for t in types if t not in d.lj_types]
            if missing:
                from forcefield_refit.exceptions import RefitMatchError

                raise RefitMatchError(
                    f"pair_types {types}: {missing} not in the base force field LJ types; allowed: "
                    f"{sorted(d.lj_types)[:6]}... Hint: OpenMM type names ('tip3p-O', 'protein-O')."
                )
            pairs = intermolecular_pairs(d.labels, d.profile.n_donor_atoms, types)
            r = np.stack([np.linalg.norm(x[:, i] - x[:, j], axis=1) for i, j in pairs], axis=1) if pairs else None
            if r is None:
                cols += [np.zeros(len(y)), np.zeros(len(y))]
                continue
            y = y + _combined_lj(d.lj_types, types[0], types[1], r).sum(axis=1)
            cols += [(r**-12).sum(axis=1), -(r**-6).sum(axis=1)]
        rows.append(np.stack(cols, axis=1))
        ys.append(y)
        ws.append(boltzmann_weights(d.target_kj[keep], temperature_k))
    design, y_all, w = np.concatenate(rows), np.concatenate(ys), np.concatenate(ws)
    unused = [pair_types[i] for i in range(len(pair_types)) if not np.any(design[:, 2 * i])]
    if unused:
        raise RefitInputError(
            f"pair_types {unused} occur in no dimer profile; allowed: type pairs across the two monomers. "
            "Hint: check the atom types of the dimers (atom_labels)."
        )
    scale = np.abs(design).max(axis=0)
    coef, _ = nnls(design / scale * np.sqrt(w)[:, None], y_all * np.sqrt(w))
    coef = coef / scale
    resid = design @ coef - y_all
    rmse = float(np.sqrt(np.sum(w * resid**2) / np.sum(w)))
    out = []
    for i, types in enumerate(pair_types):
        a, b = coef[2 * i], coef[2 * i + 1]
        if a <= 0 or b <= 0:
            raise RefitInputError(
                f"pair_types {types}: fitted A={a:.3g}, B={b:.3g}; allowed: both > 0 for an LJ well. Hint: the data "
                "do not constrain this pair; use more scan points near the minimum or drop the pair."
            )
        out.append(NBFixPair(tuple(types), float((2 * a / b) ** (1 / 6)), float(b * b / (4 * a)), fit_rmse_kj=rmse))  # type: ignore[arg-type]
        logger.info("NBFIX %s: Rmin %.4f nm, epsilon %.4f kJ/mol (RMSE %.3f)", types, out[-1].rmin_nm,
                    out[-1].epsilon_kj, rmse)
    return out


def _angular(theta_deg: np.ndarray | float, power: int) -> np.ndarray:
    """``(-cos theta)^p`` above 90 degrees, 0 below; 1 everywhere for ``p = 0``."""
    c = np.cos(np.radians(np.asarray(theta_deg, dtype=float)))
    if power == 0:
        return np.ones_like(c)
    return np.where(c < 0, (-c) ** power, 0.0)


def triple_geometry(positions: np.ndarray, triples: Sequence[tuple[int, int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """H...A distances (nm) and D-H...A angles (degrees), ``[M, T]`` each, for frames ``[M, N, 3]``."""
    x = np.asarray(positions, dtype=float)
    idx = np.asarray(triples, dtype=int).reshape(-1, 3)
    d, h, a = x[:, idx[:, 0]], x[:, idx[:, 1]], x[:, idx[:, 2]]
    u, v = d - h, a - h
    r = np.linalg.norm(v, axis=-1)
    cos = np.sum(u * v, axis=-1) / (np.linalg.norm(u, axis=-1) * r)
    return r, np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def nbfix_correction(
    pairs: Sequence[NBFixPair], lj_types: dict[str, tuple[float, float]], labels: Sequence[str], profile: DimerProfile
) -> np.ndarray:
    """Interaction-energy change ``[M]`` (kJ/mol) when the NBFIX pairs replace the combining-rule LJ of their types.

    Summed over the intermolecular atom pairs of each pair's types in every frame of ``profile``.
    """
    correction = np.zeros(profile.positions.shape[0])
    for pair in pairs:
        for i, j in intermolecular_pairs(labels, profile.n_donor_atoms, pair.types):
            r = np.linalg.norm(profile.positions[:, i] - profile.positions[:, j], axis=1)
            correction += pair.energy(r) - _combined_lj(lj_types, pair.types[0], pair.types[1], r)
    return correction


def hbond_geometry(profile: DimerProfile) -> tuple[np.ndarray, np.ndarray]:
    """H...A distance (nm) and D-H...A angle (degrees) of the scanned triple in every frame, ``[M]`` each."""
    r, theta = triple_geometry(profile.positions, [(profile.donor, profile.hydrogen, profile.acceptor)])
    return r[:, 0], theta[:, 0]


def hbond_triples(
    labels: Sequence[str],
    bonds: Sequence[tuple[int, int]],
    n_donor_atoms: int,
    types: tuple[str, str, str],
) -> list[tuple[int, int, int]]:
    """Intermolecular ``(donor heavy, H, acceptor)`` triples of a dimer with the given types, both directions.

    These are the triples an OpenMM ``CustomHbondForce`` of those types acts on between the two monomers
    (donor monomer: the first ``n_donor_atoms`` atoms).
    """
    side = [i >= n_donor_atoms for i in range(len(labels))]
    pairs = [(i, j) for a, b in bonds for i, j in ((a, b), (b, a)) if (labels[i], labels[j]) == types[:2]]
    return sorted(
        (d, h, a) for d, h in pairs for a in range(len(labels)) if labels[a] == types[2] and side[a] != side[d]
    )


def fit_hbond_term(
    profiles: Sequence[DimerProfile],
    residuals_kj: Sequence[np.ndarray],
    donor_types: tuple[str, str],
    acceptor_type: str,
    temperature_k: float | None = 1000.0,
    target_kj: Sequence[np.ndarray] | None = None,
    triples: Sequence[Sequence[tuple[int, int, int]]] | None = None,
    form: HbondForm = "12-10",
    angle_power: int = 2,
) -> HbondTerm:
    """Fit one :class:`HbondTerm` to ``residual = target - MM`` (bounded least squares, Boltzmann weights).

    Parameters
    ----------
    profiles : sequence of DimerProfile
        Scans whose donor/hydrogen/acceptor atoms have the given types.
    residuals_kj : sequence of np.ndarray
        ``[M]`` per profile, kJ/mol.
    donor_types, acceptor_type
        Types written to the ffxml.
    temperature_k : float or None
        Weighting temperature, K.
    target_kj : sequence of np.ndarray, optional
        Target energies for the weights (default: residuals).
    triples : sequence of sequences of (int, int, int), optional
        Per profile, every ``(donor, H, acceptor)`` triple the term acts on (:func:`hbond_triples`); default:
        the scanned triple only.
    form : {"12-10", "12-10-6"}
        ``c12, c10 >= 0`` (``c6 = 0``), or ``c12 >= 0`` with ``c10``, ``c6`` of either sign.
    angle_power : int
        ``p`` of ``(-cos theta)^p``, one of :data:`ANGLE_POWERS`.

    Returns
    -------
    HbondTerm
    """
    if triples is not None and len(triples) != len(profiles):
        raise RefitInputError(
            f"{len(profiles)} profiles and {len(triples)} triple lists; allowed: one triple list per profile. "
            "Hint: hbond_triples() for each dimer."
        )
    per_profile = (
        [[list(t)] for t in triples] if triples is not None
        else [[[(p.donor, p.hydrogen, p.acceptor)]] for p in profiles]
    )
    for i, found in enumerate(per_profile):
        if not found[0]:
            raise RefitInputError(
                f"profile {i}: no {donor_types}/{acceptor_type} donor-acceptor triple between the monomers; "
                "allowed: types present in the dimer. Hint: check atom_labels of the dimer."
            )
    (term,) = fit_hbond_terms(
        profiles, residuals_kj, [(*donor_types, acceptor_type)], per_profile, temperature_k, target_kj, form,
        angle_power,
    )
    return term


def fit_hbond_terms(
    profiles: Sequence[DimerProfile],
    residuals_kj: Sequence[np.ndarray],
    types: Sequence[tuple[str, str, str]],
    triples: Sequence[Sequence[Sequence[tuple[int, int, int]]]],
    temperature_k: float | None = 1000.0,
    target_kj: Sequence[np.ndarray] | None = None,
    form: HbondForm = "12-10",
    angle_power: int = 2,
) -> list[HbondTerm]:
    """Fit several :class:`HbondTerm` jointly: every term acts on its triples in every profile, as in OpenMM.

    Parameters
    ----------
    profiles, residuals_kj, temperature_k, target_kj, form, angle_power
        As in :func:`fit_hbond_term`.
    types : sequence of (donor heavy, H, acceptor) types
        One per term.
    triples : ``[profile][term] -> [(d, h, a), ...]``
        The triples of each term in each profile (may be empty).

    Returns
    -------
    list of HbondTerm
        In the order of ``types``; ``fit_rmse_kj`` is the joint weighted RMSE.
    """
    if len(profiles) != len(residuals_kj) or not profiles or len(triples) != len(profiles) or not types:
        raise RefitInputError(
            f"{len(profiles)} profiles, {len(residuals_kj)} residual arrays, {len(triples)} triple lists, "
            f"{len(types)} terms; allowed: equal numbers per profile, >= 1. "
            "Hint: one residual (target - MM) and one triple list per term per profile."
        )
    if form not in ("12-10", "12-10-6"):
        raise RefitInputError(f"form={form!r}; allowed: '12-10' or '12-10-6'. Hint: '12-10-6' to also remove binding.")
    HbondTerm(types[0][:2], types[0][2], 0.0, 0.0, angle_power=angle_power)  # type: ignore[arg-type]  # validates p
    powers, signs = ((12, 10), (1, -1)) if form == "12-10" else ((12, 10, 6), (1, -1, -1))
    cols, ys, ws = [], [], []
    for i, (p, y) in enumerate(zip(profiles, residuals_kj, strict=True)):
        block = np.zeros((p.positions.shape[0], len(types) * len(powers)))
        for t, found in enumerate(triples[i]):
            if len(found):
                r, theta = triple_geometry(p.positions, found)
                f = _angular(theta, angle_power)
                for c, (sg, n) in enumerate(zip(signs, powers, strict=True)):  # c12/r^12 - c10/r^10 - c6/r^6
                    block[:, t * len(powers) + c] = np.sum(sg * f / r**n, axis=1)
        cols.append(block)
        ys.append(np.asarray(y, dtype=float))
        ws.append(boltzmann_weights(target_kj[i] if target_kj is not None else y, temperature_k))
    design, y_all, w = np.concatenate(cols), np.concatenate(ys), np.concatenate(ws)
    scale = np.abs(design).max(axis=0)
    scale[scale == 0] = 1.0
    a, b = design / scale * np.sqrt(w)[:, None], y_all * np.sqrt(w)
    if form == "12-10":
        coef, _ = nnls(a, b)
    else:
        lower = np.tile([0.0, -np.inf, -np.inf], len(types))
        coef = lsq_linear(a, b, bounds=(lower, np.full(lower.size, np.inf))).x
    coef = coef / scale
    rmse = float(np.sqrt(np.sum(w * (design @ coef - y_all) ** 2) / np.sum(w)))
    out = []
    for t, (d, h, acc) in enumerate(types):
        k = [*coef[t * len(powers) : (t + 1) * len(powers)], 0.0]
        out.append(HbondTerm((d, h), acc, float(k[0]), float(k[1]), float(k[2]), angle_power, fit_rmse_kj=rmse))
        logger.info("H-bond %s (%s, p=%d): c12 %.3g c10 %.3g c6 %.3g, joint RMSE %.3f kJ/mol", out[-1].types,
                    form, angle_power, out[-1].c12, out[-1].c10, out[-1].c6, rmse)
    return out
