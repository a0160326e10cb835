"""Joint, regularised, weighted Fourier fits of torsion terms shared by several dihedrals and profiles.

Model for profile ``p`` with frames ``f``::

    target[p, f] ~ c_p + sum_T sum_{d in dihedrals(p, T)} sum_n k_{T,n} (1 + cos(n phi_d[f] - phase_{T,n}))

``T`` runs over the atom-type quadruples being fitted; all dihedrals of one quadruple, in every profile
(several molecules, several scans) share one series. Each profile has its own free offset ``c_p``.
With free phases the model is linear in ``a = k cos(phase)``, ``b = k sin(phase)``; with
``phases="0/180"`` only the cosine column is kept and the sign of its coefficient selects phase 0 or 180.

Solved as weighted ridge least squares: minimise ``sum w (y - X beta)^2 + ridge * |beta_fourier|^2``
(offsets are not penalised). Boltzmann-like weights ``w = exp(-(E - E_min) / (R T))`` per profile
(``temperature_k``; ``E`` is the profile's total energy when given, else its target) favour the
low-energy part of each profile, as BespokeFit and ForceBalance do.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from forcefield_refit.exceptions import RefitInputError
from forcefield_refit.torsions import _PHASE_SNAP_DEG, _ZERO_K_KJ, FourierTorsion, TypeQuad
from forcefield_refit.units import MOLAR_GAS_CONSTANT_KJ

logger = logging.getLogger(__name__)

#: Largest periodicity any of the supported formats accept (CHARMM, Amber, OpenMM).
MAX_PERIODICITY = 6

PhaseMode = Literal["free", "0/180"]


@dataclass
class TorsionFitData:
    """One profile for :func:`fit_torsions`.

    Attributes
    ----------
    name : str
        Label used in messages and reports.
    target_kj : np.ndarray
        ``[K]`` kJ/mol: reference energy minus the MM baseline without the fitted terms.
    dihedrals_deg : dict
        ``{type quadruple: [K, m] degrees}``: every dihedral of that quadruple in the molecule, per frame.
    weight_energy_kj : np.ndarray or None
        ``[K]`` kJ/mol energies that set the Boltzmann weights (the reference profile); ``target_kj`` if None.

    Examples
    --------
    >>> d = TorsionFitData("phi", np.zeros(3), {("A", "B", "C", "D"): np.zeros((3, 1))})
    >>> d.n_frames
    3
    """

    name: str
    target_kj: np.ndarray
    dihedrals_deg: dict[TypeQuad, np.ndarray]
    weight_energy_kj: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        self.target_kj = np.asarray(self.target_kj, dtype=float)
        k = self.target_kj.shape[0] if self.target_kj.ndim == 1 else -1
        cleaned = {}
        for types, angles in self.dihedrals_deg.items():
            arr = np.asarray(angles, dtype=float)
            arr = arr[:, None] if arr.ndim == 1 else arr
            if arr.ndim != 2 or arr.shape[0] != k or arr.shape[1] < 1:
                raise RefitInputError(
                    f"profile {self.name!r}: dihedrals_deg[{types}] has shape {arr.shape} and target_kj "
                    f"{self.target_kj.shape}; allowed: [K, m] angles for a 1-D target of length K. "
                    "Hint: one column per dihedral of that type quadruple."
                )
            cleaned[tuple(types)] = arr
        if not np.all(np.isfinite(self.target_kj)) or not all(np.all(np.isfinite(a)) for a in cleaned.values()):
            raise RefitInputError(
                f"profile {self.name!r}: target_kj/dihedrals_deg contain NaN or inf; allowed: finite values. "
                "Hint: drop failed points."
            )
        if self.weight_energy_kj is not None:
            self.weight_energy_kj = np.asarray(self.weight_energy_kj, dtype=float)
            if self.weight_energy_kj.shape != self.target_kj.shape:
                raise RefitInputError(
                    f"profile {self.name!r}: weight_energy_kj has shape {self.weight_energy_kj.shape}; allowed: "
                    f"{self.target_kj.shape} like target_kj. Hint: pass the reference profile energies."
                )
        self.dihedrals_deg = cleaned  # type: ignore[assignment]

    @property
    def n_frames(self) -> int:
        """Number of frames ``K``."""
        return int(self.target_kj.shape[0])


def check_periodicities(periodicities: Sequence[int]) -> tuple[int, ...]:
    """Validate periodicities: distinct integers in ``1..6``.

    Raises
    ------
    RefitInputError
        Naming the value and the allowed range.
    """
    pers = tuple(periodicities)
    bad = [n for n in pers if int(n) != n or not 1 <= n <= MAX_PERIODICITY]
    if not pers or bad or len(set(pers)) != len(pers):
        raise RefitInputError(
            f"periodicities={pers}; allowed: distinct integers >= 1 and <= {MAX_PERIODICITY} "
            "(Amber/CHARMM/OpenMM accept 1..6). Hint: (1, 2, 3) for a backbone torsion."
        )
    return tuple(int(n) for n in pers)


def boltzmann_weights(energy_kj: np.ndarray, temperature_k: float | None) -> np.ndarray:
    """``exp(-(E - E_min) / (R T))`` normalised to mean 1; all ones when ``temperature_k`` is None.

    Parameters
    ----------
    energy_kj : np.ndarray
        ``[K]`` kJ/mol.
    temperature_k : float or None
        Kelvin (> 0); ``None`` for uniform weights. 1000-2000 K keeps barriers in play.

    Returns
    -------
    np.ndarray
        ``[K]`` weights.

    Examples
    --------
    >>> w = boltzmann_weights(np.array([0.0, 10.0]), 300.0)
    >>> bool(w[0] > w[1])
    True
    """
    energy = np.asarray(energy_kj, dtype=float)
    if temperature_k is None:
        return np.ones_like(energy)
    if not temperature_k > 0:
        raise RefitInputError(
            f"temperature_k={temperature_k}; allowed: > 0 K or None (uniform weights). Hint: 1000.0."
        )
    w = np.exp(-(energy - energy.min()) / (MOLAR_GAS_CONSTANT_KJ * temperature_k))
    return w / w.mean()


def _periodicity_map(
    types: Sequence[TypeQuad], periodicities: Sequence[int] | Mapping[TypeQuad, Sequence[int]]
) -> dict[TypeQuad, tuple[int, ...]]:
    if isinstance(periodicities, Mapping):
        missing = [t for t in types if t not in periodicities]
        if missing:
            raise RefitInputError(
                f"periodicities has no entry for {missing}; allowed: one entry per fitted type quadruple. "
                "Hint: pass a single sequence to use it for all."
            )
        return {t: check_periodicities(periodicities[t]) for t in types}
    pers = check_periodicities(periodicities)
    return {t: pers for t in types}


def _check_enough_points(data: Sequence[TorsionFitData], pers: dict[TypeQuad, tuple[int, ...]]) -> None:
    for types, ns in pers.items():
        angles = np.concatenate([d.dihedrals_deg[types][:, 0] for d in data if types in d.dihedrals_deg])
        distinct = np.unique(np.round(np.mod(angles, 360.0), 6)).size
        needed = 1 + 2 * len(ns)
        if distinct < needed:
            raise RefitInputError(
                f"angles_deg has {distinct} distinct angles for {types}; allowed: at least {needed} for "
                f"periodicities {ns} (1 + 2 per term). Hint: use a finer grid (e.g. every 15-30 degrees) or fewer "
                "periodicities."
            )


def fit_torsions(
    data: Sequence[TorsionFitData],
    periodicities: Sequence[int] | Mapping[TypeQuad, Sequence[int]] = (1, 2, 3),
    ridge: float = 0.0,
    temperature_k: float | None = None,
    phases: PhaseMode = "free",
    prior: Mapping[TypeQuad, FourierTorsion] | None = None,
) -> dict[TypeQuad, FourierTorsion]:
    """Fit one Fourier series per atom-type quadruple, jointly over all profiles and dihedrals.

    Parameters
    ----------
    data : sequence of TorsionFitData
        Profiles; a type quadruple may appear in several of them (several molecules/scans).
    periodicities : sequence of int or mapping
        Periodicities (1..6) for every quadruple, or ``{quadruple: periodicities}``.
    ridge : float
        Ridge penalty on the Fourier amplitudes, (kJ/mol)^0 (dimensionless weight relative to the
        weighted squared residuals in (kJ/mol)^2); 0 for plain least squares. Typical 1e-3..1e-1.
    temperature_k : float or None
        Boltzmann weighting temperature, K (see :func:`boltzmann_weights`); None for uniform weights.
    phases : {"free", "0/180"}
        Free phases (any angle; all supported formats store it) or phases restricted to 0/180 degrees.
    prior : mapping, optional
        ``{quadruple: FourierTorsion}`` starting parameters (e.g. the base force field's terms): the ridge
        penalty pulls the amplitudes toward them (``ridge * |beta - beta_prior|^2``) instead of toward zero,
        so directions the scans do not determine stay at the starting values. Quadruples or periodicities
        missing from it are pulled toward zero.

    Returns
    -------
    dict
        ``{type quadruple: FourierTorsion}`` with ``k >= 0`` and ``fit_rmse_kj`` = weighted RMSE over all
        profiles containing it (kJ/mol).

    Examples
    --------
    >>> phi = np.arange(-180.0, 180.0, 30.0)
    >>> quad = ("A", "B", "C", "D")
    >>> y = 2.0 * (1 + np.cos(np.radians(2 * phi)))
    >>> fit = fit_torsions([TorsionFitData("p", y, {quad: phi})], periodicities=(2,))
    >>> round(fit[quad].terms[0][2], 6)
    2.0
    """
    if not data:
        raise RefitInputError("data=[]; allowed: at least one TorsionFitData. Hint: one per scanned profile.")
    if phases not in ("free", "0/180"):
        raise RefitInputError(f"phases={phases!r}; allowed: 'free' or '0/180'. Hint: 'free' for all formats.")
    if not ridge >= 0:
        raise RefitInputError(f"ridge={ridge}; allowed: >= 0. Hint: 0 (none) to 1e-1.")
    types = list(dict.fromkeys(t for d in data for t in d.dihedrals_deg))
    if not types:
        raise RefitInputError("data holds no dihedrals; allowed: >= 1 type quadruple. Hint: fill dihedrals_deg.")
    pers = _periodicity_map(types, periodicities)
    _check_enough_points(data, pers)
    per_term = 2 if phases == "free" else 1
    columns: list[tuple[TypeQuad, int, str]] = [
        (t, n, kind) for t in types for n in pers[t] for kind in (("cos", "sin") if per_term == 2 else ("cos",))
    ]
    n_rows = sum(d.n_frames for d in data)
    design = np.zeros((n_rows, len(data) + len(columns)))
    y = np.zeros(n_rows)
    w = np.zeros(n_rows)
    row = 0
    for p, d in enumerate(data):
        rows = slice(row, row + d.n_frames)
        design[rows, p] = 1.0
        y[rows] = d.target_kj
        energy = d.weight_energy_kj if d.weight_energy_kj is not None else d.target_kj
        w[rows] = boltzmann_weights(energy, temperature_k)
        for c, (t, n, kind) in enumerate(columns):
            if t in d.dihedrals_deg:
                phi = np.radians(d.dihedrals_deg[t]) * n
                design[rows, len(data) + c] = (np.cos(phi) if kind == "cos" else np.sin(phi)).sum(axis=1)
        row += d.n_frames
    sqrt_w = np.sqrt(w)
    a = design * sqrt_w[:, None]
    b = y * sqrt_w
    if ridge > 0:
        penalty = np.zeros((len(columns), design.shape[1]))
        penalty[:, len(data) :] = np.sqrt(ridge) * np.eye(len(columns))
        a = np.vstack([a, penalty])
        b = np.concatenate([b, np.sqrt(ridge) * _prior_vector(columns, prior or {})])
    coef, *_ = np.linalg.lstsq(a, b, rcond=None)
    residual = design @ coef - y
    result = {}
    for t in types:
        terms = []
        for n in pers[t]:
            ca = coef[len(data) + columns.index((t, n, "cos"))]
            cb = coef[len(data) + columns.index((t, n, "sin"))] if per_term == 2 else 0.0
            k = float(np.hypot(ca, cb))
            phase = float(np.degrees(np.arctan2(cb, ca)) % 360.0) if k > _ZERO_K_KJ else 0.0
            if 360.0 - phase < _PHASE_SNAP_DEG:
                phase = 0.0
            terms.append((n, phase, k))
        mask = np.concatenate([np.full(d.n_frames, t in d.dihedrals_deg) for d in data])
        rmse = float(np.sqrt(np.sum(w[mask] * residual[mask] ** 2) / np.sum(w[mask])))
        result[t] = FourierTorsion(types=t, terms=terms, fit_rmse_kj=rmse)
        logger.info("fit %s (periodicities %s, %s phases): weighted RMSE %.4g kJ/mol", t, pers[t], phases, rmse)
    return result


def _prior_vector(columns: Sequence[tuple[TypeQuad, int, str]], prior: Mapping[TypeQuad, FourierTorsion]) -> np.ndarray:
    """Linear coefficients (``k cos phase``, ``k sin phase``) of the prior for every design column."""
    out = np.zeros(len(columns))
    for c, (t, n, kind) in enumerate(columns):
        series = prior.get(t) or prior.get(t[::-1])  # type: ignore[arg-type]
        if series is None:
            continue
        for m, phase_deg, k in series.terms:
            if m == n:
                phase = np.radians(phase_deg)
                out[c] += k * (np.cos(phase) if kind == "cos" else np.sin(phase))
    return out
