"""Engine interface: registry, tblite vs xtb-python, MM engine vs OpenMM, DFT finite differences."""

import pickle

import numpy as np
import pytest

from biomol_nnp.config import DFTSettings, LabelSettings
from biomol_nnp.exceptions import ConfigError, InputError, QMCalculationError
from biomol_nnp.qm.engine import QMEngine, available_methods, create_engine
from biomol_nnp.qm.scans import S22_WATER_DIMER_ANGSTROM, WATER_DIMER_NUMBERS
from biomol_nnp.units import ANGSTROM_TO_NM

# S22 water dimer; atoms 0-2 donor, 3-5 acceptor.
DIMER_NM = S22_WATER_DIMER_ANGSTROM * ANGSTROM_TO_NM
DIMER_Z = WATER_DIMER_NUMBERS
TIP3P_Q = np.array([-0.834, 0.417, 0.417])
# two point charges next to the donor water (nm, e)
PC_XYZ = np.array([[0.08, 0.02, 0.22], [0.05, -0.21, 0.05]])
PC_Q = np.array([-0.6, 0.45])
PC_Z = np.array([8, 1])


def hf_sto3g(**kw) -> LabelSettings:
    dft = {"functional": "HF", "basis": "sto-3g", "dispersion": "none", "density_fitting": False, **kw}
    return LabelSettings(method="DFT", dft=DFTSettings(**dft))


def test_registry_lists_methods_and_refuses_unknown_names() -> None:
    assert available_methods() == ["DFT", "GFN2-xTB", "GFN2-xTB-tblite", "MM"]
    with pytest.raises(InputError, match=r"unknown QM method 'CCSD\(T\)'; valid methods: DFT, GFN2-xTB"):
        create_engine(method="CCSD(T)")
    engine = create_engine(method="gfn2-xtb")  # case-insensitive
    assert isinstance(engine, QMEngine) and engine.engine_name == "xtb-python"
    dft = create_engine(LabelSettings(method="DFT"))
    assert (dft.method, dft.basis) == ("B3LYP-D3BJ", "def2-SVP (RI)")
    with pytest.raises(ConfigError, match="needs LabelSettings.mm_system_xml"):
        create_engine(LabelSettings(method="MM"))


@pytest.mark.parametrize("method", ["GFN2-xTB", "GFN2-xTB-tblite", "DFT"])
def test_impossible_multiplicity_is_refused_before_any_calculation(method) -> None:
    engine = create_engine(LabelSettings(method=method))
    with pytest.raises(InputError, match=r"even number of electrons \(10\)"):
        engine.compute(DIMER_Z[:3], DIMER_NM[:3], total_charge=0, multiplicity=2)
    with pytest.raises(InputError, match=r"atomic numbers in 1\.\.86"):
        engine.compute(np.array([8, 1, 118]), DIMER_NM[:3])


def test_tblite_matches_xtb_python_and_refuses_point_charges() -> None:
    pytest.importorskip("tblite")
    pytest.importorskip("xtb")
    settings = LabelSettings(accuracy=0.01)
    xtb = create_engine(settings).compute(DIMER_Z, DIMER_NM)
    tbl = create_engine(settings, method="GFN2-xTB-tblite").compute(DIMER_Z, DIMER_NM)
    assert tbl.energy == pytest.approx(xtb.energy, abs=0.02)  # kJ/mol, out of -26600
    np.testing.assert_allclose(tbl.forces, xtb.forces, atol=0.05)  # kJ/mol/nm
    np.testing.assert_allclose(tbl.charges, xtb.charges, atol=1e-4)
    np.testing.assert_allclose(tbl.dipole, xtb.dipole, atol=1e-5)
    with pytest.raises(InputError, match="cannot take MM point charges"):
        create_engine(method="GFN2-xTB-tblite").compute(
            DIMER_Z[:3], DIMER_NM[:3], mm_positions=PC_XYZ, mm_charges=PC_Q, mm_numbers=PC_Z
        )


def _water_system(with_point_charges: bool):
    """Flexible water (harmonic bonds and angle, charges); optionally plus the two point charges."""
    import openmm

    system = openmm.System()
    bonds, angle = openmm.HarmonicBondForce(), openmm.HarmonicAngleForce()
    nb = openmm.NonbondedForce()
    nb.setNonbondedMethod(openmm.NonbondedForce.NoCutoff)
    for mass, q, eps in ((16.0, -0.834, 0.6364), (1.0, 0.417, 0.0), (1.0, 0.417, 0.0)):
        system.addParticle(mass)
        nb.addParticle(q, 0.315, eps)
    bonds.addBond(0, 1, 0.09572, 462750.4)
    bonds.addBond(0, 2, 0.09572, 462750.4)
    angle.addAngle(1, 0, 2, 1.82421813, 836.8)
    for i, j in ((0, 1), (0, 2), (1, 2)):
        nb.addException(i, j, 0.0, 0.1, 0.0)
    if with_point_charges:
        for q in PC_Q:
            system.addParticle(1.0)
            nb.addParticle(q, 0.1, 0.0)  # charge only, no Lennard-Jones
        nb.addException(3, 4, 0.0, 0.1, 0.0)  # the point charges do not see each other
    for force in (bonds, angle, nb):
        system.addForce(force)
    return system


def test_mm_engine_matches_openmm_with_the_point_charges_as_particles(tmp_path) -> None:
    import openmm
    from openmm import unit

    xyz = DIMER_NM[:3]
    engine = create_engine(LabelSettings(method="MM", mm_system_xml=_write(tmp_path, _water_system(False))))
    engine = pickle.loads(pickle.dumps(engine))  # travels to Dask workers
    result = engine.compute(DIMER_Z[:3], xyz, mm_positions=PC_XYZ, mm_charges=PC_Q, mm_numbers=PC_Z)

    context = openmm.Context(
        _water_system(True), openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
    )
    context.setPositions(np.vstack([xyz, PC_XYZ]))
    state = context.getState(getEnergy=True, getForces=True)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    assert result.energy == pytest.approx(energy, rel=1e-9, abs=1e-9)
    np.testing.assert_allclose(result.forces, forces[:3], rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(result.mm_forces, forces[3:], rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(result.charges, TIP3P_Q)
    np.testing.assert_allclose(result.dipole, (TIP3P_Q[:, None] * xyz).sum(axis=0))
    with pytest.raises(InputError, match="System's charges sum to 0.0000 e"):
        engine.compute(DIMER_Z[:3], xyz, total_charge=1, multiplicity=2)


def _write(tmp_path, system):
    import openmm

    path = tmp_path / "system.xml"
    path.write_text(openmm.XmlSerializer.serialize(system))
    return path


@pytest.fixture(scope="module")
def hf_engine():
    pytest.importorskip("pyscf")
    return create_engine(hf_sto3g(conv_tol=1e-12))


def _fd(energy, x: np.ndarray, index: tuple[int, int], h: float = 2e-5) -> float:
    plus, minus = x.copy(), x.copy()
    plus[index] += h
    minus[index] -= h
    return -(energy(plus) - energy(minus)) / (2 * h)


def test_dft_forces_on_atoms_and_point_charges_match_finite_differences(hf_engine) -> None:
    z, xyz = DIMER_Z[:3], DIMER_NM[:3]
    result = hf_engine.compute(z, xyz, mm_positions=PC_XYZ, mm_charges=PC_Q, mm_numbers=PC_Z)
    assert result.forces.shape == (3, 3) and result.mm_forces.shape == (2, 3)
    for index in ((0, 0), (1, 1), (2, 2)):
        numeric = _fd(lambda p: hf_engine.compute(z, p, mm_positions=PC_XYZ, mm_charges=PC_Q).energy, xyz, index)
        assert result.forces[index] == pytest.approx(numeric, rel=1e-5, abs=2e-3)
    for index in ((0, 2), (1, 0), (1, 1)):
        numeric = _fd(lambda p: hf_engine.compute(z, xyz, mm_positions=p, mm_charges=PC_Q).energy, PC_XYZ, index)
        assert result.mm_forces[index] == pytest.approx(numeric, rel=1e-5, abs=2e-3)
    # the cluster (region + point charges) feels no net force
    np.testing.assert_allclose(result.forces.sum(axis=0) + result.mm_forces.sum(axis=0), 0.0, atol=1e-4)
    assert result.charges.sum() == pytest.approx(0.0, abs=1e-8)


def test_dft_embedding_energy_flips_sign_with_the_charges(hf_engine) -> None:
    z, xyz = DIMER_Z[:3], DIMER_NM[:3]
    mm = DIMER_NM[3:] + np.array([0.05, 0.0, 0.0])
    vacuum = hf_engine.compute(z, xyz)
    plus = hf_engine.compute(z, xyz, mm_positions=mm, mm_charges=TIP3P_Q).energy - vacuum.energy
    minus = hf_engine.compute(z, xyz, mm_positions=mm, mm_charges=-TIP3P_Q).energy - vacuum.energy
    assert plus < -1.0 and minus > 1.0
    assert vacuum.mm_forces.shape == (0, 3)


@pytest.mark.filterwarnings("ignore:Basis may be available")
def test_dft_charged_open_shell_dispersion_and_failures() -> None:
    pytest.importorskip("pyscf")
    oh = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.097]])
    radical = create_engine(hf_sto3g()).compute(np.array([8, 1]), oh, total_charge=0, multiplicity=2)
    anion = create_engine(hf_sto3g()).compute(np.array([8, 1]), oh, total_charge=-1)
    assert radical.charges.sum() == pytest.approx(0.0, abs=1e-8)
    assert anion.charges.sum() == pytest.approx(-1.0, abs=1e-8)
    # D3(BJ) through pyscf-dispersion lowers the dimer energy and enters the forces
    with_d3 = create_engine(hf_sto3g(dispersion="d3bj")).compute(DIMER_Z, DIMER_NM)
    without = create_engine(hf_sto3g()).compute(DIMER_Z, DIMER_NM)
    assert -100.0 < with_d3.energy - without.energy < -1.0  # kJ/mol, intra- and intermolecular
    d3_forces = with_d3.forces - without.forces
    assert np.abs(d3_forces).max() > 0.1
    np.testing.assert_allclose(d3_forces.sum(axis=0), 0.0, atol=1e-6)
    with pytest.raises(QMCalculationError, match="SCF did not converge in 1 cycles"):
        create_engine(hf_sto3g(max_cycle=1, conv_tol=1e-12)).compute(DIMER_Z, DIMER_NM)
    overlapping = DIMER_NM[:3].copy()
    overlapping[2] = overlapping[0] + 0.001
    with pytest.raises(InputError, match="atoms 0 and 2 overlap"):
        create_engine(hf_sto3g()).compute(DIMER_Z[:3], overlapping)
    with pytest.raises(QMCalculationError, match="failed"):
        create_engine(hf_sto3g(basis="no-such-basis")).compute(DIMER_Z[:3], DIMER_NM[:3])
