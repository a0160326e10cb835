"""Joint, weighted, regularised torsion fits (exact oracles) and the bad-input errors of the torsion path."""

from __future__ import annotations

import numpy as np
import pytest
from openmm import app

from forcefield_refit.exceptions import RefitInputError, RefitMatchError
from forcefield_refit.profiles import moving_side
from forcefield_refit.torsion_fit import TorsionFitData, boltzmann_weights, fit_torsions
from forcefield_refit.torsions import FourierTorsion, check_types_known, fit_fourier
from forcefield_refit.validate import torsion_rmse
from forcefield_refit.writers.openmm_xml import write_ffxml

A = ("A", "B", "C", "D")
B = ("E", "B", "C", "D")
TRUE_A = FourierTorsion(
    A, [(1, 0.0, 1.2), (2, 180.0, 0.7), (3, 0.0, 0.4), (4, 0.0, 0.1), (5, 180.0, 0.05), (6, 0.0, 0.2)]
)
TRUE_B = FourierTorsion(
    B, [(1, 180.0, 0.5), (2, 0.0, 2.0), (3, 180.0, 0.3), (4, 0.0, 0.0), (5, 0.0, 0.0), (6, 0.0, 0.0)]
)
GRID = np.arange(-180.0, 180.0, 15.0)


def _molecule(offset_deg: float, constant: float, with_b: bool) -> TorsionFitData:
    """A scan where dihedral A follows the grid, a second A dihedral sits at +120 deg, B at -120 deg."""
    a = np.stack([GRID, GRID + 120.0], axis=1)
    energy = TRUE_A.energy(np.radians(a)).sum(axis=1) + constant
    dihedrals = {A: a}
    if with_b:
        b = (GRID + offset_deg)[:, None]
        energy = energy + TRUE_B.energy(np.radians(b[:, 0]))
        dihedrals[B] = b
    return TorsionFitData(f"m{offset_deg}", energy, dihedrals)


def test_joint_fit_across_molecules_recovers_shared_types() -> None:
    data = [_molecule(-120.0, 3.0, True), _molecule(45.0, -8.0, True), _molecule(0.0, 1.0, False)]
    fit = fit_torsions(data, periodicities=range(1, 7))
    assert torsion_rmse(fit[A], TRUE_A) < 1e-9
    assert torsion_rmse(fit[B], TRUE_B) < 1e-9
    assert fit[A].fit_rmse_kj is not None and fit[A].fit_rmse_kj < 1e-9


def test_phases_0_180_mode_and_free_phase() -> None:
    shifted = FourierTorsion(A, [(2, 40.0, 1.0)])
    target = shifted.energy(np.radians(GRID))
    free = fit_fourier(GRID, target, (2,), types=A)
    assert free.terms[0][1] == pytest.approx(40.0)
    restricted = fit_fourier(GRID, target, (1, 2, 3), types=A, phases="0/180")
    assert {p for _, p, _ in restricted.terms} <= {0.0, 180.0}
    assert restricted.fit_rmse_kj is not None and restricted.fit_rmse_kj > 0.1  # cannot express 40 deg
    symmetric = fit_fourier(GRID, TRUE_A.energy(np.radians(GRID)), range(1, 7), types=A, phases="0/180")
    assert torsion_rmse(symmetric, TRUE_A) < 1e-9


def test_ridge_shrinks_amplitudes() -> None:
    target = TRUE_A.energy(np.radians(GRID))
    plain = fit_fourier(GRID, target, range(1, 7), types=A)
    ridged = fit_fourier(GRID, target, range(1, 7), types=A, ridge=10.0)
    assert sum(k for *_, k in ridged.terms) < 0.8 * sum(k for *_, k in plain.terms)


def test_boltzmann_weights_favour_low_energy() -> None:
    rng = np.random.default_rng(3)
    target = TRUE_A.energy(np.radians(GRID))
    noisy = target + np.where(target > np.median(target), rng.normal(scale=2.0, size=GRID.size), 0.0)
    uniform = fit_fourier(GRID, noisy, range(1, 7), types=A)
    weighted = fit_fourier(GRID, noisy, range(1, 7), types=A, temperature_k=100.0, weight_energy_kj=target)
    low = target <= np.median(target)

    def low_error(t: FourierTorsion) -> float:
        resid = t.energy(np.radians(GRID)) - noisy
        resid -= np.mean(resid[low])
        return float(np.sqrt(np.mean(resid[low] ** 2)))

    assert low_error(weighted) < 0.7 * low_error(uniform)
    w = boltzmann_weights(np.array([0.0, 2.494]), 300.0)
    assert w[1] / w[0] == pytest.approx(np.exp(-1.0), rel=1e-3)
    with pytest.raises(RefitInputError, match="temperature_k=0.*allowed: > 0 K"):
        boltzmann_weights(np.zeros(2), 0.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"periodicities": (1, 7)}, r"periodicities=\(1, 7\); allowed: distinct integers >= 1 and <= 6"),
        ({"periodicities": range(1, 7), "angles": np.arange(0.0, 360.0, 45.0)}, "8 distinct angles.*at least 13"),
        ({"ridge": -1.0}, "ridge=-1.0; allowed: >= 0"),
        ({"phases": "90"}, "phases='90'; allowed: 'free' or '0/180'"),
    ],
)
def test_fit_rejects_bad_settings(kwargs, match) -> None:
    angles = kwargs.pop("angles", GRID)
    with pytest.raises(RefitInputError, match=match):
        fit_fourier(angles, np.zeros(angles.size), **kwargs)


def test_too_few_points_counted_across_profiles() -> None:
    few = TorsionFitData("few", np.zeros(4), {A: np.array([0.0, 90.0, 180.0, 270.0])})
    with pytest.raises(RefitInputError, match=r"4 distinct angles for \('A', 'B', 'C', 'D'\).*at least 7"):
        fit_torsions([few], periodicities=(1, 2, 3))
    more = TorsionFitData("more", np.zeros(4), {A: np.array([45.0, 135.0, 225.0, 315.0])})
    fit_torsions([few, more], periodicities=(1, 2, 3))  # 8 distinct angles jointly


def test_unbonded_dihedral_and_unknown_types_are_named() -> None:
    bonds = [(0, 1), (1, 2), (2, 3), (3, 4)]
    with pytest.raises(RefitMatchError, match=r"dihedral_atoms=\(0, 1, 2, 4\): atoms 2 and 4 are not bonded"):
        moving_side(bonds, (0, 1, 2, 4))
    forcefield = app.ForceField("amber14-all.xml")
    check_types_known(forcefield, ["protein-CX", "protein-C"])
    with pytest.raises(RefitMatchError, match=r"types \['protein-CZ'\] are not atom types.*type or class names"):
        check_types_known(forcefield, ["protein-CZ", "protein-C"])


def test_write_ffxml_checks_types_against_base(tmp_path) -> None:
    bad = FourierTorsion(("C", "N", "QQ", "C"), [(1, 0.0, 1.0)])
    with pytest.raises(RefitMatchError, match="not atom types of the base force field"):
        write_ffxml(tmp_path / "x.xml", [bad], base_forcefield=app.ForceField("amber14-all.xml"))
    assert not (tmp_path / "x.xml").exists()
