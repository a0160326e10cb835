"""Dielectric constant from box-dipole fluctuations: analytic dipole series, molecule imaging, bad input."""

from __future__ import annotations

import math

import numpy as np
import openmm.unit as u
import pytest
from MDAnalysisTests.datafiles import waterDCD, waterPSF

from biomol_nnp.analysis.dielectric import (
    box_dipole,
    check_neutral_molecules,
    dielectric_constant,
    dielectric_from_trajectory,
    fluctuation_to_epsilon,
)
from biomol_nnp.exceptions import InputError
from biomol_nnp.units import ELECTROSTATIC_CONSTANT

KT_PER_K = u.MOLAR_GAS_CONSTANT_R.value_in_unit(u.kilojoule_per_mole / u.kelvin)


def epsilon_molar_units(variance_e2_nm2, volume_nm3, temperature_k):
    """The formula in OpenMM units: eps - 1 = 4 pi k_e var(M) / (3 V kB T), k_e = 1/(4 pi eps0) in kJ nm/mol/e^2."""
    return 1.0 + 4.0 * math.pi * ELECTROSTATIC_CONSTANT * variance_e2_nm2 / (
        3.0 * volume_nm3 * KT_PER_K * temperature_k
    )


def test_si_formula_matches_the_molar_form():
    for variance, volume, temperature in [(1.0, 1.0, 300.0), (37.5, 27.0, 298.15), (0.2, 64.0, 350.0)]:
        assert fluctuation_to_epsilon(variance, volume, temperature) == pytest.approx(
            epsilon_molar_units(variance, volume, temperature), rel=1e-8
        )


def test_gaussian_dipole_series_gives_the_analytic_epsilon():
    """M ~ N(mu, sigma^2 I): var(M) = 3 sigma^2, independent of the mean; error from the block jackknife."""
    rng = np.random.default_rng(42)
    sigma, volume, temperature = 2.5, 27.0, 300.0
    expected = fluctuation_to_epsilon(3 * sigma**2, volume, temperature)
    dipoles = rng.normal(0.0, sigma, (40000, 3)) + np.array([0.5, -1.0, 0.2])
    result = dielectric_constant(dipoles, volume, temperature, n_blocks=10)
    # sample variance of a sum of 3 chi^2_1 * sigma^2: relative standard error sqrt(2/(3n))
    analytic_error = (expected - 1) * math.sqrt(2 / (3 * len(dipoles)))
    assert result.epsilon == pytest.approx(expected, abs=4 * analytic_error)
    assert result.error == pytest.approx(analytic_error, rel=0.6)
    assert result.mean_dipole_e_nm == pytest.approx([0.5, -1.0, 0.2], abs=0.05)
    volumes = np.full(len(dipoles), volume)  # one volume per frame (NPT) gives the same with a constant box
    assert dielectric_constant(dipoles, volumes, temperature, 10).epsilon == pytest.approx(result.epsilon)


def water(offset):
    """A TIP3P-like water (charges -0.834, 0.417, 0.417 e) with its oxygen at ``offset`` nm."""
    geometry = np.array([[0.0, 0.0, 0.0], [0.09572, 0.0, 0.0], [-0.02399, 0.09266, 0.0]])
    return geometry + offset, np.array([-0.834, 0.417, 0.417])


def test_box_dipole_is_the_sum_of_whole_molecule_dipoles_whatever_the_wrapping():
    box = np.diag([2.0, 2.0, 2.0])
    first, q = water(np.array([1.98, 1.0, 1.0]))  # hydrogen 1 crosses the x edge
    second, _ = water(np.array([0.5, 0.5, 0.5]))
    positions = np.vstack([first, second])
    charges = np.concatenate([q, q])
    molecules = [0, 0, 0, 1, 1, 1]
    expected = 2 * np.sum(q[:, None] * (first - first[0]), axis=0)
    wrapped = positions % 2.0  # atom-by-atom wrapping splits the first molecule
    assert box_dipole(wrapped, charges, molecules, box) == pytest.approx(expected, abs=1e-12)
    shifted = positions + np.array([0.0, 2.0, -4.0])  # a lattice translation
    assert box_dipole(shifted, charges, molecules, box) == pytest.approx(expected, abs=1e-12)
    # an O-H dipole of TIP3P: |mu| = 0.0489 e nm = 2.35 D
    assert np.linalg.norm(expected) / 2 == pytest.approx(0.0489, abs=5e-4)


def test_charged_molecules_and_bad_series_are_refused():
    with pytest.raises(InputError, match=r"molecule 1 has net charge 1.0000 e .* select only the water"):
        check_neutral_molecules(np.array([-0.8, 0.4, 0.4, 1.0]), [0, 0, 0, 1])
    with pytest.raises(InputError, match=r"shape \(10, 2\)"):
        dielectric_constant(np.zeros((10, 2)), 1.0, 300.0)
    with pytest.raises(InputError, match="n_blocks=5 with 6 frames"):
        dielectric_constant(np.zeros((6, 3)), 1.0, 300.0)
    with pytest.raises(InputError, match="temperature_k=-1"):
        dielectric_constant(np.zeros((20, 3)), 1.0, -1.0)
    with pytest.raises(InputError, match="volumes_nm3 has 3 values"):
        dielectric_constant(np.zeros((20, 3)), [1.0, 1.0, 1.0], 300.0)


def test_trajectory_reader_matches_a_direct_sum(tmp_path):
    """Five TIP3 waters (CHARMM PSF with charges) over 10 frames: the reader's dipoles equal q.r summed directly."""
    import MDAnalysis

    result = dielectric_from_trajectory(waterDCD, waterPSF, 300.0, selection="resname TIP3", n_blocks=2)
    universe = MDAnalysis.Universe(waterPSF, waterDCD)
    atoms = universe.select_atoms("resname TIP3")
    dipoles = []
    for _ in universe.trajectory:
        dipoles.append(sum(r.atoms.charges @ (r.atoms.positions - r.atoms.positions[0]) for r in atoms.residues) / 10)
    dipoles = np.asarray(dipoles)
    assert result.n_frames == 10
    assert result.dipole_variance_e2_nm2 == pytest.approx(
        np.mean(np.sum(dipoles**2, 1)) - np.sum(dipoles.mean(0) ** 2), rel=1e-5
    )
    assert result.mean_volume_nm3 == pytest.approx(125.0, rel=1e-6)
    with pytest.raises(InputError, match="has no charges"):
        dielectric_from_trajectory(
            waterDCD, _pdb_of(universe, tmp_path / "water.pdb"), 300.0, selection="resname TIP3", n_blocks=2
        )


def _pdb_of(universe, path):
    universe.atoms.write(str(path))
    return str(path)
