"""Iterative torsion refit against relaxed reference scans, compared on the MM-relaxed surface.

The plain fit (:func:`forcefield_refit.fit_profiles.profile_fit_data`) evaluates the MM baseline on the
*reference's* relaxed geometries, so bond/angle/1-4 strain that MM would relax away (and that is not a torsion)
ends up in the fitted series. What BespokeFit and ForceBalance do instead, and what this module does:

1. fit the torsions (first on the reference geometries);
2. relax every grid point on the *refit* MM surface with the scanned dihedral restrained as the reference
   scan restrained it (grid angle, force constant), starting from the reference geometry
   (:func:`forcefield_refit.profiles.relax_points`);
3. measure the honest error: the refit force field's own MM-relaxed profile against the reference profile
   (offset-free RMSE);
4. refit on ``reference - E_MM(without the fitted terms)`` at the MM-relaxed geometries, and repeat from 2
   until no profile's RMSE changes by more than ``tolerance_kj`` or after ``iterations`` refits.

The returned torsions are those of the iteration with the lowest RMS over profiles of the honest RMSE (a
fixed-point iteration need not decrease monotonically); every iteration's RMSEs are kept in ``history_kj``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import openmm

from forcefield_refit.energy import openmm_energy_function
from forcefield_refit.exceptions import RefitInputError
from forcefield_refit.fit_profiles import baseline_system, fit_data_on_geometries, offset_free_rmse
from forcefield_refit.profiles import TorsionProfile, relax_points
from forcefield_refit.torsion_fit import TorsionFitData
from forcefield_refit.torsions import AtomQuad, FourierTorsion, TypeQuad
from forcefield_refit.units import KJ_TO_KCAL

logger = logging.getLogger(__name__)

FitFunction = Callable[[list[TorsionFitData]], dict[TypeQuad, FourierTorsion]]
"""``fit data of every profile -> {series key: FourierTorsion}`` (e.g. a ``fit_torsions`` partial)."""


@dataclass
class RelaxedProfile:
    """One reference profile to refit against on the MM-relaxed surface.

    Attributes
    ----------
    name : str
        Profile label, e.g. ``"ala phi"``.
    reference : TorsionProfile
        Relaxed reference scan (energies relative, geometries that start the MM relaxations).
    system : openmm.System
        Full original MM System of the molecule.
    dihedrals : dict
        ``{series key: [atom quadruples]}``: the fitted dihedrals; a key names one fitted series (a type
        quadruple, or a molecule-specific name for bespoke parameters) and may occur in several profiles.
    """

    name: str
    reference: TorsionProfile
    system: openmm.System
    dihedrals: dict[TypeQuad, list[AtomQuad]]


@dataclass
class RelaxedFitResult:
    """Outcome of :func:`fit_relaxed` (energies kJ/mol; RMSEs offset-free, kJ/mol).

    Attributes
    ----------
    torsions : dict
        Chosen series (lowest RMS over profiles of the honest RMSE).
    refit : dict
        ``{profile: TorsionProfile}`` relaxed on the refit MM surface with ``torsions``.
    original : dict
        ``{profile: TorsionProfile}`` relaxed on the original MM surface.
    rmse_kj, original_rmse_kj : dict
        ``{profile: RMSE}`` of the refit and original MM-relaxed profiles against the reference.
    history_kj : list of dict
        Honest RMSE per profile of every iteration (0: the fit on the reference geometries).
    best_iteration : int
        Index into ``history_kj`` of ``torsions``.
    converged : bool
        The last refit changed no profile's RMSE by more than the tolerance.
    fit_data : list of TorsionFitData
        The data ``torsions`` were fitted on.
    """

    torsions: dict[TypeQuad, FourierTorsion]
    refit: dict[str, TorsionProfile]
    original: dict[str, TorsionProfile]
    rmse_kj: dict[str, float]
    original_rmse_kj: dict[str, float]
    history_kj: list[dict[str, float]] = field(default_factory=list)
    best_iteration: int = 0
    converged: bool = False
    fit_data: list[TorsionFitData] = field(default_factory=list)


def refit_system(
    system: openmm.System,
    dihedrals: Mapping[TypeQuad, Sequence[AtomQuad]],
    torsions: Mapping[TypeQuad, FourierTorsion],
) -> openmm.System:
    """Copy of ``system`` whose fitted dihedrals carry the fitted series instead of their original terms.

    Raises
    ------
    RefitInputError
        If a fitted key has no series in ``torsions``.
    """
    missing = sorted(set(dihedrals) - set(torsions))
    if missing:
        raise RefitInputError(
            f"torsions has no series for {missing}; allowed: one series per fitted key. "
            "Hint: pass the output of the fit over every profile."
        )
    out = baseline_system(system, dihedrals)
    force = openmm.PeriodicTorsionForce()
    for key, quads in dihedrals.items():
        for a, b, c, d in quads:
            for n, phase_deg, k in torsions[key].terms:
                force.addTorsion(a, b, c, d, int(n), float(np.radians(phase_deg)), float(k))
    out.addForce(force)
    return out


def relaxed_profiles(
    profiles: Sequence[RelaxedProfile],
    torsions: Mapping[TypeQuad, FourierTorsion] | None,
    restraint_k: float = 2000.0,
    max_iterations: int = 500,
) -> dict[str, TorsionProfile]:
    """Every profile relaxed on the MM surface (original when ``torsions`` is None, else refit)."""
    out = {}
    for p in profiles:
        system = p.system if torsions is None else refit_system(p.system, p.dihedrals, torsions)
        out[p.name] = relax_points(openmm_energy_function(system), p.reference, restraint_k, max_iterations)
    return out


def _rmse(profiles: Sequence[RelaxedProfile], relaxed: Mapping[str, TorsionProfile]) -> dict[str, float]:
    return {p.name: offset_free_rmse(relaxed[p.name].energies_kj, p.reference.energies_kj) for p in profiles}


def _fit_data(profiles: Sequence[RelaxedProfile], geometries: Mapping[str, np.ndarray]) -> list[TorsionFitData]:
    return [
        fit_data_on_geometries(p.name, p.system, p.dihedrals, p.reference.energies_kj, geometries[p.name])[0]
        for p in profiles
    ]


def mix_torsions(
    old: Mapping[TypeQuad, FourierTorsion], new: Mapping[TypeQuad, FourierTorsion], fraction: float
) -> dict[TypeQuad, FourierTorsion]:
    """``old + fraction (new - old)`` per key and periodicity, in the linear ``(k cos phase, k sin phase)`` space.

    The energy of the mixed series is the same mix of the two energies up to a constant. Keys only in ``new``
    are taken from it.

    Examples
    --------
    >>> t = ("A", "B", "C", "D")
    >>> mix_torsions({t: FourierTorsion(t, [(1, 0.0, 2.0)])}, {t: FourierTorsion(t, [(1, 0.0, 4.0)])}, 0.5)[t].terms
    [(1, 0.0, 3.0)]
    """
    out = {}
    for key, series in new.items():
        coeffs: dict[int, complex] = {}
        for weight, source in ((1.0 - fraction, old.get(key)), (fraction, series)):
            for n, phase_deg, k in source.terms if source is not None else [(n, 0.0, 0.0) for n, _, _ in series.terms]:
                coeffs[int(n)] = coeffs.get(int(n), 0j) + weight * k * np.exp(1j * np.radians(phase_deg))
        terms = [
            (n, float(np.degrees(np.angle(c)) % 360.0) if abs(c) > 1e-12 else 0.0, float(abs(c)))
            for n, c in sorted(coeffs.items())
        ]
        out[key] = FourierTorsion(series.types, terms)
    return out


def fit_relaxed(
    profiles: Sequence[RelaxedProfile],
    fit: FitFunction,
    iterations: int = 5,
    tolerance_kj: float = 0.01 / KJ_TO_KCAL,
    restraint_k: float = 2000.0,
    max_iterations: int = 500,
    damping: float = 1.0,
    accumulate: bool = False,
) -> RelaxedFitResult:
    """Iterative refit compared on the MM-relaxed surface (see the module docstring).

    Parameters
    ----------
    profiles : sequence of RelaxedProfile
        Reference profiles; series keys shared between profiles are fitted jointly.
    fit : FitFunction
        The torsion fit (periodicities, ridge, prior, weights are its business).
    iterations : int
        Most refits on MM-relaxed geometries after the first fit (0: the plain fit, honestly measured).
    tolerance_kj : float
        Stop when no profile's honest RMSE changed by more than this, kJ/mol (default 0.01 kcal/mol).
    restraint_k : float
        Dihedral restraint of the MM relaxations, kJ/mol/rad^2.
    max_iterations : int
        L-BFGS-B cap per MM relaxation.
    damping : float
        Fraction of each refit's change of the series that is taken (``mix_torsions``; 1: plain fixed-point
        iteration, 0.5 damps oscillations where a relaxation switches between local minima).
    accumulate : bool
        Fit each refit on the data of every iteration so far (the reference geometries and all MM-relaxed
        ones, one free offset each) instead of the latest only: averages over the local minima that the
        relaxations visit.

    Returns
    -------
    RelaxedFitResult
    """
    if not 0.0 < damping <= 1.0:
        raise RefitInputError(f"damping={damping}; allowed: 0 < damping <= 1. Hint: 0.5 damps oscillations.")
    if not profiles or iterations < 0:
        raise RefitInputError(
            f"{len(profiles)} profiles, iterations={iterations}; allowed: at least one profile and iterations >= 0. "
            "Hint: iterations=5."
        )
    original = relaxed_profiles(profiles, None, restraint_k, max_iterations)
    data = _fit_data(profiles, {p.name: p.reference.positions for p in profiles})
    history: list[dict[str, float]] = []
    best: tuple[float, int, dict[TypeQuad, FourierTorsion], dict[str, TorsionProfile], list[TorsionFitData]]
    best = (np.inf, 0, {}, {}, data)
    converged = False
    torsions: dict[TypeQuad, FourierTorsion] = {}
    seen: list[TorsionFitData] = []
    for iteration in range(iterations + 1):
        seen = seen + data if accumulate else data
        torsions = fit(seen) if iteration == 0 else mix_torsions(torsions, fit(seen), damping)
        relaxed = relaxed_profiles(profiles, torsions, restraint_k, max_iterations)
        rmse = _rmse(profiles, relaxed)
        history.append(rmse)
        score = float(np.sqrt(np.mean(np.square(list(rmse.values())))))
        logger.info("relaxed refit iteration %d: RMS of profile RMSEs %.4f kcal/mol", iteration, score * KJ_TO_KCAL)
        if score < best[0]:
            best = (score, iteration, torsions, relaxed, seen)
        if iteration > 0 and max(abs(rmse[k] - history[-2][k]) for k in rmse) < tolerance_kj:
            converged = True
            break
        data = _fit_data(profiles, {name: r.positions for name, r in relaxed.items()})
    _, index, torsions, relaxed, data = best
    return RelaxedFitResult(
        torsions=torsions,
        refit=relaxed,
        original=original,
        rmse_kj=history[index],
        original_rmse_kj=_rmse(profiles, original),
        history_kj=history,
        best_iteration=index,
        converged=converged,
        fit_data=data,
    )
