"""Alanine dipeptide (amber14): parameter recovery from an MM scan and engine round trips.

Oracle: scanning phi with the full ff14SB energy and subtracting the baseline with the phi terms
removed leaves exactly the ff14SB phi series, sum k (1 + cos(n phi - phase)), on the achieved angles;
the fit must return the parameters OpenMM put in the System.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openmm
import pytest
from openmm import app

from forcefield_refit.energy import openmm_energy_function
from forcefield_refit.exceptions import RefitMatchError
from forcefield_refit.profiles import TorsionProfile, evaluate_profile, moving_side, torsion_scan
from forcefield_refit.torsions import (
    FourierTorsion,
    fit_fourier,
    remove_torsions,
    system_torsion_terms,
    torsion_atoms_by_type,
)
from forcefield_refit.validate import ffxml_profile, reload_frcmod, torsion_only_system, torsion_rmse
from forcefield_refit.writers.amber_frcmod import write_frcmod
from forcefield_refit.writers.openmm_xml import write_ffxml

PDB_PATH = Path(__file__).resolve().parents[2] / "systems" / "alanine_dipeptide" / "vacuum.pdb"
PHI_TYPES = ("protein-C", "protein-N", "protein-CX", "protein-C")
PSI_TYPES = ("protein-N", "protein-CX", "protein-C", "protein-N")


def _build(*files: str) -> openmm.System:
    pdb = app.PDBFile(str(PDB_PATH))
    return app.ForceField(*files).createSystem(pdb.topology, nonbondedMethod=app.NoCutoff, constraints=None)


@pytest.fixture(scope="module")
def dipeptide() -> tuple[app.PDBFile, openmm.System]:
    return app.PDBFile(str(PDB_PATH)), _build("amber14-all.xml")


@pytest.fixture(scope="module")
def phi_quad(dipeptide) -> tuple[int, int, int, int]:
    pdb, _ = dipeptide
    (quad,) = torsion_atoms_by_type(pdb.topology, ["amber14-all.xml"], PHI_TYPES)
    return quad


@pytest.fixture(scope="module")
def phi_scan(dipeptide, phi_quad) -> TorsionProfile:
    pdb, system = dipeptide
    positions = pdb.getPositions(asNumpy=True).value_in_unit(openmm.unit.nanometer)
    bonds = [(b[0].index, b[1].index) for b in pdb.topology.bonds()]
    return torsion_scan(
        openmm_energy_function(system),
        np.asarray(positions),
        phi_quad,
        np.arange(-180.0, 180.0, 30.0),
        max_iterations=50,
        moving_atoms=moving_side(bonds, phi_quad),
    )


@pytest.fixture(scope="module")
def mm_phi_target(dipeptide, phi_quad, phi_scan) -> np.ndarray:
    _, system = dipeptide
    baseline = evaluate_profile(
        openmm_energy_function(remove_torsions(system, [phi_quad])), phi_scan.positions
    )
    return phi_scan.energies_kj - baseline


def test_backbone_types_in_amber14(dipeptide) -> None:
    pdb, system = dipeptide
    names = {a.index: (a.residue.name, a.name) for a in pdb.topology.atoms()}
    (phi,) = torsion_atoms_by_type(pdb.topology, ["amber14-all.xml"], PHI_TYPES)
    (psi,) = torsion_atoms_by_type(pdb.topology, ["amber14-all.xml"], PSI_TYPES)
    assert [names[i] for i in phi] == [("ACE", "C"), ("ALA", "N"), ("ALA", "CA"), ("ALA", "C")]
    assert [names[i] for i in psi] == [("ALA", "N"), ("ALA", "CA"), ("ALA", "C"), ("NME", "N")]
    # ff14SB values (protein.ff14SB.xml), k = 0 terms are not added to the System by OpenMM
    assert system_torsion_terms(system, phi) == [
        (3, 0.0, pytest.approx(1.75728)),
        (2, 0.0, pytest.approx(1.12968)),
    ]
    assert [n for n, _, _ in system_torsion_terms(system, psi)] == [3, 2, 1]


def test_scan_records_unrestrained_energy(dipeptide, phi_scan) -> None:
    _, system = dipeptide
    full = evaluate_profile(openmm_energy_function(system), phi_scan.positions)
    np.testing.assert_allclose(phi_scan.energies_kj, full, atol=1e-9)
    deviation = (phi_scan.achieved_angles_deg - phi_scan.angles_deg + 180.0) % 360.0 - 180.0
    assert np.max(np.abs(deviation)) < 3.0
    assert phi_scan.restraint_energies_kj.max() > 0.0  # the restraint acted, and was not recorded


def test_recovers_amber14_phi_parameters(dipeptide, phi_quad, phi_scan, mm_phi_target) -> None:
    _, system = dipeptide
    reference = system_torsion_terms(system, phi_quad)
    periodicities = sorted(n for n, _, _ in reference)
    fitted = fit_fourier(phi_scan.achieved_angles_deg, mm_phi_target, periodicities, types=PHI_TYPES)
    assert fitted.fit_rmse_kj is not None and fitted.fit_rmse_kj < 1e-8
    expected = {n: (phase, k) for n, phase, k in reference}
    for n, phase, k in fitted.terms:
        assert k == pytest.approx(expected[n][1], abs=1e-8)
        assert (phase - expected[n][0] + 180.0) % 360.0 - 180.0 == pytest.approx(0.0, abs=1e-6)


def test_frcmod_round_trip_through_parmed(tmp_path, phi_scan, mm_phi_target) -> None:
    fitted = fit_fourier(phi_scan.achieved_angles_deg, mm_phi_target, (1, 2, 3), types=PHI_TYPES)
    path = write_frcmod(tmp_path / "refit.frcmod", [fitted], title="phi refit")
    lines = path.read_text().splitlines()
    assert lines[:2] == ["phi refit", "DIHE"]
    assert [float(line.split()[-1]) for line in lines[2:5]] == [-1.0, -2.0, 3.0]
    assert float(lines[4].split()[-3]) == pytest.approx(0.42, abs=1e-8)  # ff14SB phi n=3: 0.42 kcal/mol
    (reloaded,) = reload_frcmod(path)
    assert reloaded.types in (("C", "N", "CX", "C"), ("C", "CX", "N", "C"))
    for (n, phase, k), (n0, phase0, k0) in zip(reloaded.terms, fitted.terms, strict=True):
        assert n == n0
        assert k == pytest.approx(k0, abs=1e-7)
        assert phase == pytest.approx(phase0, abs=1e-6)
    phi = np.radians(phi_scan.achieved_angles_deg)
    np.testing.assert_allclose(reloaded.energy(phi), fitted.energy(phi), atol=1e-6)
    assert torsion_rmse(reloaded, fitted) < 1e-6


def test_ffxml_overrides_amber14_phi(tmp_path, dipeptide, phi_quad, phi_scan) -> None:
    pdb, original = dipeptide
    phi = np.radians(phi_scan.achieved_angles_deg)
    wanted = FourierTorsion(PHI_TYPES, [(1, 180.0, 3.0), (2, 0.0, 1.0), (3, 45.0, 0.5)])
    fitted = fit_fourier(phi_scan.achieved_angles_deg, wanted.energy(phi) + 7.0, (1, 2, 3), types=PHI_TYPES)
    path = write_ffxml(tmp_path / "refit.xml", [fitted])

    refit_system = _build(str(path), "amber14-all.xml")  # refit file FIRST, same constructor call
    torsion_fn = openmm_energy_function(torsion_only_system(refit_system, phi_quad))
    engine = evaluate_profile(torsion_fn, phi_scan.positions, relative=False)
    np.testing.assert_allclose(engine, fitted.energy(phi), atol=1e-3)
    helper = ffxml_profile([str(path), "amber14-all.xml"], PDB_PATH, phi_quad, phi_scan.positions)
    np.testing.assert_allclose(helper, fitted.energy(phi), atol=1e-3)

    amber = evaluate_profile(
        openmm_energy_function(torsion_only_system(original, phi_quad)), phi_scan.positions, relative=False
    )
    assert np.max(np.abs(amber - engine)) > 1.0  # the override took effect
    # other torsions untouched: psi keeps its ff14SB terms
    (psi,) = torsion_atoms_by_type(pdb.topology, ["amber14-all.xml"], PSI_TYPES)
    assert system_torsion_terms(refit_system, psi) == system_torsion_terms(original, psi)


def test_remove_torsions_copies_and_rejects_unknown_quads(dipeptide, phi_quad) -> None:
    _, system = dipeptide
    baseline = remove_torsions(system, [phi_quad[::-1]])
    assert all(k == 0.0 for _, _, k in system_torsion_terms(baseline, phi_quad))
    assert all(k > 0.0 for _, _, k in system_torsion_terms(system, phi_quad))
    with pytest.raises(RefitMatchError, match=r"atom_quads \[\(0, 1, 2, 3\)\] have no PeriodicTorsionForce"):
        remove_torsions(system, [(0, 1, 2, 3)])
    with pytest.raises(RefitMatchError, match="match no proper torsion.*protein-CX"):
        torsion_atoms_by_type(app.PDBFile(str(PDB_PATH)).topology, ["amber14-all.xml"], ("C", "N", "CX", "C"))
