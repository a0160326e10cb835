"""Iterative torsion refit compared on the MM-relaxed surface (forcefield_refit.relaxed_fit), closed loops.

Targets are MM surfaces of alanine dipeptide whose phi series (C-N-CX-C) is replaced by a known one:

- torsions only: the relaxed iterative fit recovers the known series and the profile (an exact fixed point);
- plus a non-torsional difference (stiffer, wider C-N-CA angle in the target): the plain fit on the target's
  geometries absorbs angle strain into the series; the iterative MM-relaxed fit has a lower honest RMSE.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import numpy as np
import openmm
import pytest
from openmm import unit

from forcefield_refit.energy import openmm_energy_function
from forcefield_refit.exceptions import RefitInputError
from forcefield_refit.fit_profiles import offset_free_rmse
from forcefield_refit.molecules import Molecule, atom_labels, backbone_dihedrals, dihedrals_by_label, load_molecule
from forcefield_refit.profiles import moving_side, relax_points, torsion_scan
from forcefield_refit.relaxed_fit import RelaxedProfile, fit_relaxed, mix_torsions, refit_system
from forcefield_refit.torsion_fit import fit_torsions
from forcefield_refit.torsions import FourierTorsion, TypeQuad
from forcefield_refit.validate import torsion_rmse

ROOT = Path(__file__).resolve().parents[2]
BASE = ("amber14-all.xml",)
KNOWN = [(1, 0.0, 1.5), (2, 180.0, 4.0), (3, 0.0, 0.8)]


def _setup() -> tuple[Molecule, openmm.System, TypeQuad, dict[TypeQuad, list]]:
    molecule = load_molecule(ROOT / "systems" / "dipeptides" / "ala.pdb")
    labels = atom_labels(molecule.topology, openmm.app.ForceField(*BASE))
    phi = backbone_dihedrals(molecule.topology)["phi"]
    types: TypeQuad = tuple(labels[i] for i in phi)  # type: ignore[assignment]
    return molecule, molecule.system(BASE), types, dihedrals_by_label(molecule.topology, labels, [types])


def _target_system(system: openmm.System, dihedrals: dict, types: TypeQuad, angle_shift_deg: float) -> openmm.System:
    """The MM System with the known phi series and, optionally, every C-N-CA angle wider and stiffer."""
    target = refit_system(system, dihedrals, {types: FourierTorsion(types, KNOWN)})
    if angle_shift_deg:
        quad = dihedrals[types][0]
        force = next(f for f in target.getForces() if isinstance(f, openmm.HarmonicAngleForce))
        for i in range(force.getNumAngles()):
            a, b, c, theta, k = force.getAngleParameters(i)
            if {a, c} == {quad[0], quad[2]} and b == quad[1]:
                theta_rad = theta.value_in_unit(unit.radian) + np.radians(angle_shift_deg)
                force.setAngleParameters(
                    i, a, b, c, theta_rad, 3.0 * k.value_in_unit(unit.kilojoule_per_mole / unit.radian**2)
                )
    return target


def _problem(angle_shift_deg: float) -> tuple[list[RelaxedProfile], TypeQuad]:
    molecule, system, types, dihedrals = _setup()
    phi = backbone_dihedrals(molecule.topology)["phi"]
    target = openmm_energy_function(_target_system(system, dihedrals, types, angle_shift_deg))
    scan = torsion_scan(
        target,
        molecule.positions,
        phi,
        np.arange(-180.0, 180.0, 45.0),
        max_iterations=300,
        moving_atoms=moving_side(molecule.bonds, phi),
    )
    return [RelaxedProfile("ala phi", scan, system, dihedrals)], types


def _fit(types: TypeQuad, data: list) -> dict[TypeQuad, FourierTorsion]:
    return fit_torsions(data, periodicities=(1, 2, 3))


def test_relaxed_refit_recovers_known_torsions() -> None:
    profiles, types = _problem(angle_shift_deg=0.0)
    result = fit_relaxed(profiles, functools.partial(_fit, types), iterations=3, max_iterations=200)
    assert torsion_rmse(result.torsions[types], FourierTorsion(types, KNOWN)) < 0.02  # kJ/mol
    assert result.rmse_kj["ala phi"] < 0.01
    assert result.original_rmse_kj["ala phi"] > 1.0  # ff14SB's own phi differs from the known series
    assert result.converged


def test_relaxed_refit_beats_the_fit_on_target_geometries() -> None:
    profiles, types = _problem(angle_shift_deg=8.0)
    result = fit_relaxed(profiles, functools.partial(_fit, types), iterations=2, accumulate=True, max_iterations=150)
    plain = result.history_kj[0]["ala phi"]  # the fit on the target's geometries, relaxed on its own surface
    assert result.best_iteration > 0
    assert result.rmse_kj["ala phi"] < 0.7 * plain
    # the reported RMSE is that of the returned series' own relaxed profile
    relaxed = relax_points(
        openmm_energy_function(refit_system(profiles[0].system, profiles[0].dihedrals, result.torsions)),
        profiles[0].reference,
        max_iterations=150,
    )
    assert offset_free_rmse(relaxed.energies_kj, profiles[0].reference.energies_kj) == pytest.approx(
        result.rmse_kj["ala phi"], abs=1e-6
    )


def test_mixed_series_energy_is_the_mixed_energy() -> None:
    t: TypeQuad = ("A", "B", "C", "D")
    old = {t: FourierTorsion(t, [(1, 30.0, 2.0), (3, 0.0, 1.0)])}
    new = {t: FourierTorsion(t, [(1, 200.0, 0.5), (2, 90.0, 1.5)])}
    phi = np.radians(np.arange(-180.0, 180.0, 7.0))
    mixed = mix_torsions(old, new, 0.3)[t].energy(phi)
    expected = 0.7 * old[t].energy(phi) + 0.3 * new[t].energy(phi)
    assert np.ptp(mixed - expected) < 1e-12  # equal up to a constant
    assert all(k >= 0 for _, _, k in mix_torsions(old, new, 0.3)[t].terms)


def test_relaxed_fit_bad_input_named() -> None:
    molecule, system, types, dihedrals = _setup()
    with pytest.raises(RefitInputError, match="no series for"):
        refit_system(system, dihedrals, {})
    with pytest.raises(RefitInputError, match="at least one profile"):
        fit_relaxed([], functools.partial(_fit, types))
    with pytest.raises(RefitInputError, match="damping=0.0; allowed: 0 < damping <= 1"):
        fit_relaxed([], functools.partial(_fit, types), damping=0.0)
    scan = torsion_scan(
        openmm_energy_function(system),
        molecule.positions,
        backbone_dihedrals(molecule.topology)["phi"],
        [0.0],
        20.0,
        20,
    )
    bad = copy.copy(scan)
    bad.positions = scan.positions[0]
    with pytest.raises(RefitInputError, match="one frame per scan angle"):
        relax_points(openmm_energy_function(system), bad)
