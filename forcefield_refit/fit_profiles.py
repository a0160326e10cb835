"""From a reference energy function to fit-ready torsion data: scan, MM baseline, dihedral angles.

``target = E_ref(x) - E_MM-without-fitted-terms(x)`` on the relaxed reference geometries ``x``, for every
atom-type quadruple being fitted (all dihedrals of those types in the molecule are removed from the
baseline and measured in each frame). The result feeds :func:`forcefield_refit.torsion_fit.fit_torsions`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import openmm
from openmm import app
from threadpoolctl import threadpool_limits

from forcefield_refit.energy import EnergyFunction, openmm_energy_function
from forcefield_refit.molecules import LabelKind, Molecule, atom_labels, dihedrals_by_label
from forcefield_refit.profiles import TorsionProfile, dihedral, evaluate_profile, moving_side, torsion_scan
from forcefield_refit.torsion_fit import TorsionFitData
from forcefield_refit.torsions import AtomQuad, FourierTorsion, TypeQuad, remove_torsions

logger = logging.getLogger(__name__)


@dataclass
class ScannedProfile:
    """A scanned profile with everything needed to fit and to report.

    Attributes
    ----------
    name : str
        e.g. ``"ala phi"``.
    profile : TorsionProfile
        Relaxed reference scan (energies relative to their minimum, kJ/mol).
    baseline_kj : np.ndarray
        ``[K]`` MM energy without the fitted terms, relative, kJ/mol.
    original_kj : np.ndarray
        ``[K]`` full original MM energy on the same geometries, relative, kJ/mol.
    fit_data : TorsionFitData
        ``target = reference - baseline`` and the dihedral angles of every fitted quadruple.
    """

    name: str
    profile: TorsionProfile
    baseline_kj: np.ndarray
    original_kj: np.ndarray
    fit_data: TorsionFitData

    def refit_kj(self, torsions: dict[TypeQuad, FourierTorsion]) -> np.ndarray:
        """Refit MM energy ``baseline + sum fitted series`` on the scan geometries, ``[K]`` kJ/mol."""
        total = self.baseline_kj.copy()
        for types, angles in self.fit_data.dihedrals_deg.items():
            total += torsions[types].energy(np.radians(angles)).sum(axis=1)
        return total


def offset_free_rmse(first: np.ndarray, second: np.ndarray, weights: np.ndarray | None = None) -> float:
    """RMSE of ``first - second`` after removing their (weighted) mean difference, same units as input.

    Examples
    --------
    >>> offset_free_rmse(np.array([1.0, 2.0]), np.array([11.0, 12.0]))
    0.0
    """
    diff = np.asarray(first, dtype=float) - np.asarray(second, dtype=float)
    w = np.ones_like(diff) if weights is None else np.asarray(weights, dtype=float)
    diff = diff - np.sum(w * diff) / np.sum(w)
    return float(np.sqrt(np.sum(w * diff**2) / np.sum(w)))


def scan_profile(
    name: str,
    molecule: Molecule,
    reference_fn: EnergyFunction,
    mm_forcefield: app.ForceField,
    scan_atoms: Sequence[int],
    fit_types: Sequence[TypeQuad],
    angles_deg: Sequence[float] | np.ndarray,
    by: LabelKind = "type",
    restraint_k: float = 2000.0,
    max_iterations: int = 500,
    mm_system: openmm.System | None = None,
    fit_dihedrals: Mapping[TypeQuad, Sequence[AtomQuad]] | None = None,
) -> ScannedProfile:
    """Relaxed reference scan of one dihedral and the MM baseline without the fitted torsion types.

    Parameters
    ----------
    name : str
        Profile label.
    molecule : Molecule
        Molecule with bonds and starting positions (nm).
    reference_fn : EnergyFunction
        Target energy (NNP, QM, or another force field), kJ/mol and kJ/mol/nm.
    mm_forcefield : openmm.app.ForceField
        Force field being refit (e.g. amber99sb.xml).
    scan_atoms : sequence of 4 int
        Scanned dihedral (must be bonded).
    fit_types : sequence of type quadruples
        Labels (types or classes, see ``by``) whose terms are refit; each must occur in the molecule.
    angles_deg : array_like
        Scan grid, degrees.
    by : {"type", "class"}
        How ``fit_types`` name atoms.
    restraint_k : float
        kJ/mol/rad^2.
    max_iterations : int
        L-BFGS-B cap per point.
    mm_system : openmm.System, optional
        Prebuilt MM System of this molecule (built from ``mm_forcefield`` when omitted).
    fit_dihedrals : mapping, optional
        ``{key: [atom quadruples]}`` fitted instead of every dihedral matching ``fit_types`` (which is then
        ignored): lets one fit a subset of a class, e.g. from
        :func:`forcefield_refit.compare.fit_groups`. Keys name the fitted series.

    Returns
    -------
    ScannedProfile
    """
    if fit_dihedrals is None:  # unknown types fail before the (expensive) scan
        dihedrals_by_label(molecule.topology, atom_labels(molecule.topology, mm_forcefield, by), fit_types)
    with threadpool_limits(1):
        profile = torsion_scan(
            reference_fn,
            molecule.positions,
            scan_atoms,
            angles_deg,
            restraint_k=restraint_k,
            max_iterations=max_iterations,
            moving_atoms=moving_side(molecule.bonds, scan_atoms),
        )
    return profile_fit_data(name, molecule, profile, mm_forcefield, fit_types, by, mm_system, fit_dihedrals)


def profile_fit_data(
    name: str,
    molecule: Molecule,
    profile: TorsionProfile,
    mm_forcefield: app.ForceField,
    fit_types: Sequence[TypeQuad],
    by: LabelKind = "type",
    mm_system: openmm.System | None = None,
    fit_dihedrals: Mapping[TypeQuad, Sequence[AtomQuad]] | None = None,
) -> ScannedProfile:
    """MM baseline, original MM energy and fitted-dihedral angles on an existing reference scan.

    The second half of :func:`scan_profile` (same arguments), for scans made elsewhere or loaded from a
    cache; ``profile.energies_kj`` are the reference energies.
    """
    system = mm_system if mm_system is not None else molecule.system(mm_forcefield)
    if fit_dihedrals is None:
        quads = dihedrals_by_label(molecule.topology, atom_labels(molecule.topology, mm_forcefield, by), fit_types)
    else:
        quads = {tuple(k): [tuple(q) for q in v] for k, v in fit_dihedrals.items() if v}  # type: ignore[misc]
    data, baseline = fit_data_on_geometries(name, system, quads, profile.energies_kj, profile.positions)
    original = evaluate_profile(openmm_energy_function(system), profile.positions)
    logger.info("profile %s: %d points, fitted types %s", name, len(profile.angles_deg), list(quads))
    return ScannedProfile(name, profile, baseline, original, data)


def baseline_system(system: openmm.System, dihedrals: Mapping[TypeQuad, Sequence[AtomQuad]]) -> openmm.System:
    """Copy of ``system`` without the torsion terms of the fitted dihedrals (those that have terms)."""
    removable = [q for qs in dihedrals.values() for q in qs if _has_terms(system, q)]
    return remove_torsions(system, removable)


def fit_data_on_geometries(
    name: str,
    system: openmm.System,
    dihedrals: Mapping[TypeQuad, Sequence[AtomQuad]],
    reference_kj: np.ndarray,
    positions: np.ndarray,
) -> tuple[TorsionFitData, np.ndarray]:
    """``target = reference - E_MM(without the fitted dihedrals)`` and the fitted angles on given geometries.

    Parameters
    ----------
    name : str
        Profile label.
    system : openmm.System
        Full MM System of the molecule.
    dihedrals : mapping
        ``{series key: [atom quadruples]}`` fitted (their terms are removed from the baseline).
    reference_kj : np.ndarray
        ``[K]`` reference energies, kJ/mol (relative).
    positions : np.ndarray
        ``[K, N, 3]`` nm: the reference's relaxed geometries, or MM-relaxed ones (iterative refit).

    Returns
    -------
    (TorsionFitData, np.ndarray)
        Fit data (Boltzmann weights on the reference energies) and the relative baseline ``[K]`` kJ/mol.
    """
    baseline = evaluate_profile(openmm_energy_function(baseline_system(system, dihedrals)), positions)
    angles = {t: np.degrees([[dihedral(frame, q) for q in qs] for frame in positions]) for t, qs in dihedrals.items()}
    reference = np.asarray(reference_kj, dtype=float)
    return TorsionFitData(name, reference - baseline, angles, weight_energy_kj=reference), baseline


def _has_terms(system: openmm.System, quad: Sequence[int]) -> bool:
    from forcefield_refit.torsions import system_torsion_terms

    return bool(system_torsion_terms(system, quad))
