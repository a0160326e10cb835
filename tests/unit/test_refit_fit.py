"""Exact oracles for forcefield_refit: Fourier fit, dihedral gradient, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from forcefield_refit.atom_types import amber_type_name, openmm_type_name
from forcefield_refit.exceptions import RefitInputError
from forcefield_refit.profiles import dihedral, dihedral_gradient, evaluate_profile, torsion_scan
from forcefield_refit.torsions import FourierTorsion, fit_fourier
from forcefield_refit.validate import torsion_rmse


def test_fit_fourier_recovers_analytic_series_with_offset() -> None:
    true = FourierTorsion(("A", "B", "C", "D"), [(1, 30.0, 0.7), (2, 180.0, 4.2), (3, 0.0, 1.5)])
    phi = np.arange(-180.0, 180.0, 15.0)
    target = true.energy(np.radians(phi)) - 12.3
    fitted = fit_fourier(phi, target, periodicities=(1, 2, 3), types=true.types)
    assert [n for n, _, _ in fitted.terms] == [1, 2, 3]
    for (n, phase, k), (n0, phase0, k0) in zip(fitted.terms, true.terms, strict=True):
        assert n == n0
        assert k == pytest.approx(k0, abs=1e-10)
        assert phase == pytest.approx(phase0, abs=1e-8)
    assert fitted.fit_rmse_kj is not None and fitted.fit_rmse_kj < 1e-10
    assert torsion_rmse(fitted, true) < 1e-10


def test_fit_fourier_negative_amplitude_becomes_phase_shift() -> None:
    phi = np.arange(0.0, 360.0, 30.0)
    target = -2.0 * np.cos(np.radians(2 * phi))  # = 2 (1 + cos(2 phi - 180)) - 2
    (n, phase, k), *_ = fit_fourier(phi, target, periodicities=(2,)).terms
    assert (n, round(phase, 8), round(k, 10)) == (2, 180.0, 2.0)


def test_dihedral_gradient_matches_finite_differences() -> None:
    x = np.random.default_rng(0).normal(size=(5, 3))
    atoms = (0, 2, 3, 4)
    analytic = dihedral_gradient(x, atoms)
    h = 1e-6
    numeric = np.zeros((4, 3))
    for row, atom in enumerate(atoms):
        for k in range(3):
            xp, xm = x.copy(), x.copy()
            xp[atom, k] += h
            xm[atom, k] -= h
            numeric[row, k] = (dihedral(xp, atoms) - dihedral(xm, atoms)) / (2 * h)
    np.testing.assert_allclose(analytic, numeric, atol=1e-7)


def test_scan_of_analytic_torsion_reaches_targets_without_restraint_leak() -> None:
    """Toy energy = one cosine on the dihedral; recorded energies must be exactly that cosine."""
    atoms = (0, 1, 2, 3)
    toy = FourierTorsion(("A", "B", "C", "D"), [(3, 0.0, 5.0)])

    def energy_fn(x: np.ndarray) -> tuple[float, np.ndarray]:
        phi = dihedral(x, atoms)
        de_dphi = -5.0 * 3 * np.sin(3 * phi)
        forces = np.zeros_like(x)
        forces[list(atoms)] = -de_dphi * dihedral_gradient(x, atoms)
        return float(toy.energy(phi)), forces

    x0 = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 1.0]]) * 0.15
    profile = torsion_scan(energy_fn, x0, atoms, np.arange(-180.0, 180.0, 60.0), max_iterations=100)
    assert profile.positions.shape == (6, 4, 3)
    expected = toy.energy(np.radians(profile.achieved_angles_deg))
    np.testing.assert_allclose(profile.energies_kj, expected - expected.min(), atol=1e-9)
    np.testing.assert_allclose(
        evaluate_profile(energy_fn, profile.positions), profile.energies_kj, atol=1e-12
    )
    # restraint pulls the dihedral close to the grid despite the 15 kJ/mol barrier
    deviation = (profile.achieved_angles_deg - profile.angles_deg + 180.0) % 360.0 - 180.0
    assert np.max(np.abs(deviation)) < 1.0


def test_type_names_round_trip() -> None:
    assert amber_type_name("protein-CX") == "CX"
    assert openmm_type_name("CX") == "protein-CX"
    assert openmm_type_name("protein-CX") == "protein-CX"


@pytest.mark.parametrize(
    ("angles", "target", "periodicities", "match"),
    [
        (np.arange(0.0, 360.0, 30.0), np.zeros(11), (1, 2), "same length"),
        (
            np.arange(0.0, 360.0, 30.0),
            np.zeros(12),
            (0, 2),
            "periodicities=.*allowed: distinct integers >= 1",
        ),
        (np.arange(0.0, 360.0, 30.0), np.zeros(12), (2, 2), "periodicities"),
        (np.array([]), np.array([]), (1,), "0 distinct angles.*at least 3"),
        (np.array([0.0, 90.0, 360.0]), np.zeros(3), (1, 2), "2 distinct angles.*at least 5"),
    ],
)
def test_fit_fourier_rejects_bad_input(angles, target, periodicities, match) -> None:
    with pytest.raises(RefitInputError, match=match):
        fit_fourier(angles, target, periodicities)


def test_scan_rejects_empty_grid_and_bad_atoms() -> None:
    x = np.zeros((4, 3))

    def flat(pos: np.ndarray) -> tuple[float, np.ndarray]:
        return 0.0, np.zeros_like(pos)

    with pytest.raises(RefitInputError, match="angles_deg has shape \\(0,\\).*non-empty"):
        torsion_scan(flat, x, (0, 1, 2, 3), [])
    with pytest.raises(RefitInputError, match="dihedral_atoms=\\(0, 1, 2, 2\\)"):
        torsion_scan(flat, x, (0, 1, 2, 2), [0.0])
    with pytest.raises(RefitInputError, match="positions has shape"):
        torsion_scan(flat, np.zeros((4, 2)), (0, 1, 2, 3), [0.0])
    with pytest.raises(ValueError, match="restraint_k=-1"):
        torsion_scan(flat, x, (0, 1, 2, 3), [0.0], restraint_k=-1)
