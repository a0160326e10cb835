"""GFN2-xTB engine: reference binding energy, finite-difference forces, charges, embedding, errors."""

import numpy as np
import pytest

from biomol_nnp.config import LabelSettings
from biomol_nnp.exceptions import InputError, QMCalculationError
from biomol_nnp.qm.scans import S22_WATER_DIMER_ANGSTROM, WATER_DIMER_NUMBERS
from biomol_nnp.qm.xtb_engine import QMResult, XTBEngine, check_charge_multiplicity
from biomol_nnp.units import ANGSTROM_TO_NM, KJ_TO_KCAL

pytest.importorskip("xtb")

# S22 water dimer (Jurecka, Sponer, Cerny, Hobza, PCCP 8, 1985 (2006)) as distributed by the BEGDB
# database and ase.collections.s22, Angstrom (biomol_nnp.qm.scans). Atoms 0-2: H-bond donor, 3-5: acceptor.
TIP3P_CHARGES = np.array([-0.834, 0.417, 0.417])


@pytest.fixture(scope="module")
def engine() -> XTBEngine:
    return XTBEngine(LabelSettings(accuracy=0.01))


def dimer_nm() -> np.ndarray:
    return S22_WATER_DIMER_ANGSTROM * ANGSTROM_TO_NM


def water_with_point_charges(shift_nm: float = 0.05) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Donor water of the S22 dimer; the acceptor, moved away by ``shift_nm`` along x, as TIP3P charges."""
    xyz = dimer_nm()
    mm = xyz[3:].copy()
    mm[:, 0] += shift_nm
    return xyz[:3], mm, WATER_DIMER_NUMBERS[3:]


def test_water_dimer_binding_energy_matches_gfn2_reference(engine: XTBEngine) -> None:
    # GFN2-xTB water dimer binding energy: -4.95 kcal/mol (DESIGN.md; CCSD(T)/CBS about -5.0).
    xyz = dimer_nm()
    e_dimer = engine.compute(WATER_DIMER_NUMBERS, xyz).energy
    e_a = engine.compute(WATER_DIMER_NUMBERS[:3], xyz[:3]).energy
    e_b = engine.compute(WATER_DIMER_NUMBERS[3:], xyz[3:]).energy
    binding_kcal = (e_dimer - e_a - e_b) * KJ_TO_KCAL
    assert binding_kcal == pytest.approx(-4.95, abs=0.2)


def _energy(engine: XTBEngine, xyz: np.ndarray, mm: np.ndarray, mm_z: np.ndarray) -> float:
    z = WATER_DIMER_NUMBERS[:3]
    return engine.compute(z, xyz, mm_positions=mm, mm_charges=TIP3P_CHARGES, mm_numbers=mm_z).energy


def test_forces_on_atoms_and_point_charges_match_finite_differences(engine: XTBEngine) -> None:
    xyz, mm, mm_z = water_with_point_charges()
    result = engine.compute(WATER_DIMER_NUMBERS[:3], xyz, mm_positions=mm, mm_charges=TIP3P_CHARGES, mm_numbers=mm_z)
    assert result.forces.shape == (3, 3) and result.mm_forces.shape == (3, 3)
    h = 1e-5  # nm
    for target, analytic in ((xyz, result.forces), (mm, result.mm_forces)):
        numeric = np.zeros_like(target)
        for i in range(target.shape[0]):
            for k in range(3):
                plus, minus = target.copy(), target.copy()
                plus[i, k] += h
                minus[i, k] -= h
                args_p = (plus, mm) if target is xyz else (xyz, plus)
                args_m = (minus, mm) if target is xyz else (xyz, minus)
                e_p = _energy(engine, *args_p, mm_z)
                e_m = _energy(engine, *args_m, mm_z)
                numeric[i, k] = -(e_p - e_m) / (2 * h)
        # forces are O(100) kJ/mol/nm; SCC convergence noise limits the agreement to ~1e-3
        np.testing.assert_allclose(analytic, numeric, atol=5e-3)


def test_point_charge_forces_are_zero_shaped_without_charges(engine: XTBEngine) -> None:
    result = engine.compute(WATER_DIMER_NUMBERS[:3], dimer_nm()[:3])
    assert isinstance(result, QMResult)
    assert result.mm_forces.shape == (0, 3)
    assert result.dipole.shape == (3,)
    # vacuum forces of an isolated molecule sum to zero (translation invariance)
    np.testing.assert_allclose(result.forces.sum(axis=0), 0.0, atol=1e-6)


@pytest.mark.parametrize(
    ("numbers", "xyz_angstrom", "charge"),
    [
        ([8, 1, 1], [[0.0, 0.0, -0.0657], [0.7590, 0.0, 0.5214], [-0.7590, 0.0, 0.5214]], 0),
        ([8, 1], [[0.0, 0.0, 0.0], [0.0, 0.0, 0.97]], -1),
        (
            [7, 1, 1, 1, 1],
            [
                [0.0, 0.0, 0.0],
                [0.59, 0.59, 0.59],
                [-0.59, -0.59, 0.59],
                [-0.59, 0.59, -0.59],
                [0.59, -0.59, -0.59],
            ],
            1,
        ),
    ],
    ids=["water", "hydroxide", "ammonium"],
)
def test_charges_sum_to_total_charge(engine: XTBEngine, numbers, xyz_angstrom, charge) -> None:
    xyz = np.array(xyz_angstrom) * ANGSTROM_TO_NM
    result = engine.compute(np.array(numbers), xyz, total_charge=charge)
    assert result.charges.shape == (len(numbers),)
    assert result.charges.sum() == pytest.approx(charge, abs=1e-6)


def test_embedding_energy_changes_sign_when_point_charges_flip(engine: XTBEngine) -> None:
    # O...O 0.34 nm: the first-order electrostatic term (odd in q) dominates polarization (even in q).
    xyz, mm, mm_z = water_with_point_charges(shift_nm=0.05)
    z = WATER_DIMER_NUMBERS[:3]
    e_vac = engine.compute(z, xyz).energy
    e_plus = engine.compute(z, xyz, mm_positions=mm, mm_charges=TIP3P_CHARGES, mm_numbers=mm_z).energy - e_vac
    e_minus = engine.compute(z, xyz, mm_positions=mm, mm_charges=-TIP3P_CHARGES, mm_numbers=mm_z).energy - e_vac
    assert e_plus < -1.0  # donor water next to an acceptor: attractive
    assert e_minus > 1.0
    # the even part (polarization) is negative and smaller than the odd part
    assert 0.5 * (e_plus + e_minus) < 0.0
    assert abs(0.5 * (e_plus + e_minus)) < abs(0.5 * (e_plus - e_minus))


@pytest.mark.parametrize(
    ("charge", "multiplicity", "match"),
    [
        (0, 2, r"even number of electrons \(10\)"),
        (1, 1, r"odd number of electrons \(9\)"),
        (0, 0, r"multiplicity must be an integer >= 1"),
        (11, 1, r"leaves -1 electrons"),
    ],
)
def test_impossible_charge_multiplicity_is_refused(engine: XTBEngine, charge, multiplicity, match) -> None:
    with pytest.raises(InputError, match=match):
        engine.compute(WATER_DIMER_NUMBERS[:3], dimer_nm()[:3], total_charge=charge, multiplicity=multiplicity)


def test_possible_open_shell_is_accepted() -> None:
    assert check_charge_multiplicity(np.array([8, 1]), 0, 2) == 9  # OH radical, doublet


def test_missing_point_charge_elements_are_refused(engine: XTBEngine) -> None:
    xyz, mm, _ = water_with_point_charges()
    with pytest.raises(InputError, match="mm_numbers is required"):
        engine.compute(WATER_DIMER_NUMBERS[:3], xyz, mm_positions=mm, mm_charges=TIP3P_CHARGES)


def test_xtb_failures_become_qm_calculation_errors(engine: XTBEngine) -> None:
    xyz = dimer_nm()[:3].copy()
    xyz[1] = xyz[0]  # two atoms on top of each other: xtb refuses the structure
    with pytest.raises(QMCalculationError, match="GFN2-xTB failed"):
        engine.compute(WATER_DIMER_NUMBERS[:3], xyz)
    tight = XTBEngine(LabelSettings(max_iterations=1))
    with pytest.raises(QMCalculationError, match="did not converge"):
        tight.compute(WATER_DIMER_NUMBERS, dimer_nm())
