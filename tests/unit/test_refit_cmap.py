"""CMAP: 2-D relaxed scan of alanine dipeptide, fit of a known correction, and engine round trips.

Oracle: the reference energy is ff14SB plus a known smooth CMAP (added as a CMAPTorsionForce), so
``target - MM without CMAP`` is exactly that map on the relaxed geometries; the fit must reproduce it, and
every written file (CHARMM prm, GROMACS itp, OpenMM ffxml) must give the fitted map's energies back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openmm
import pytest
from openmm import app

from forcefield_refit.cmap import cmap_scan, default_order, fit_cmap
from forcefield_refit.energy import openmm_energy_function
from forcefield_refit.exceptions import RefitInputError
from forcefield_refit.molecules import backbone_dihedrals, load_molecule
from forcefield_refit.profiles import evaluate_profile
from forcefield_refit.reload import reload_charmm_prm, reload_gromacs_itp
from forcefield_refit.term_energy import term_energies
from forcefield_refit.terms import CmapTerm, openmm_cmap_values
from forcefield_refit.writers.charmm_prm import write_charmm_prm
from forcefield_refit.writers.gromacs_itp import write_gromacs_itp
from forcefield_refit.writers.openmm_xml import load_forcefield, write_ffxml

ROOT = Path(__file__).resolve().parents[2]
TYPES = ("protein-C", "protein-N", "protein-CX", "protein-C", "protein-N")
N_COARSE = 8


def _true_grid(n: int = 24) -> np.ndarray:
    a = np.radians(-180.0 + 360.0 * np.arange(n) / n)
    phi, psi = np.meshgrid(a, a, indexing="ij")
    return 4.0 * np.cos(phi + 0.5) + 2.0 * np.sin(psi) + 1.5 * np.cos(phi - psi) + 0.7 * np.sin(2 * psi + 1.0)


@pytest.fixture(scope="module")
def scan():
    molecule = load_molecule(ROOT / "systems" / "dipeptides" / "ala.pdb")
    system = molecule.system(["amber14-all.xml"])
    dihedrals = backbone_dihedrals(molecule.topology)
    chain = (*dihedrals["phi"], dihedrals["psi"][3])
    reference = molecule.system(["amber14-all.xml"])
    force = openmm.CMAPTorsionForce()
    force.addMap(24, openmm_cmap_values(_true_grid()))
    force.addTorsion(0, *dihedrals["phi"], *dihedrals["psi"])
    reference.addForce(force)
    profile = cmap_scan(
        openmm_energy_function(reference), molecule.positions, dihedrals["phi"], dihedrals["psi"],
        molecule.bonds, n_grid=N_COARSE, max_iterations=200,
    )
    mm = evaluate_profile(openmm_energy_function(system), profile.positions)
    return molecule, chain, profile, profile.energies_kj - mm


def test_scan_reaches_the_grid(scan) -> None:
    _, _, profile, _ = scan
    assert profile.positions.shape == (N_COARSE**2, 22, 3)
    for achieved, target in ((profile.phi_deg, profile.target_phi_deg), (profile.psi_deg, profile.target_psi_deg)):
        assert np.max(np.abs((achieved - target + 180.0) % 360.0 - 180.0)) < 5.0


def test_fit_recovers_known_map_from_coarse_grid(scan) -> None:
    _, chain, profile, residual = scan
    fitted = fit_cmap(profile.phi_deg, profile.psi_deg, residual, TYPES, order=2)
    assert fitted.resolution == 24
    truth = CmapTerm(TYPES, _true_grid())
    engine_fit = term_energies(profile.positions, cmaps={chain: fitted})["cmaps"]
    engine_true = term_energies(profile.positions, cmaps={chain: truth})["cmaps"]
    diff = engine_fit - engine_true
    assert np.max(np.abs(diff - diff.mean())) < 0.05  # kJ/mol; spline vs Fourier on a smooth map
    assert fitted.fit_rmse_kj is not None and fitted.fit_rmse_kj < 0.05


def test_cmap_files_reload_with_fitted_energies(tmp_path, scan) -> None:
    molecule, chain, profile, residual = scan
    fitted = fit_cmap(profile.phi_deg, profile.psi_deg, residual, TYPES, order=2)
    expected = term_energies(profile.positions, cmaps={chain: fitted})["cmaps"]
    charmm = reload_charmm_prm(write_charmm_prm(tmp_path / "cmap.prm", cmaps=[fitted])).cmaps[0]
    gromacs = reload_gromacs_itp(write_gromacs_itp(tmp_path / "cmap.itp", cmaps=[fitted]), ["C", "N", "CX"]).cmaps[0]
    for reloaded in (charmm, gromacs):
        got = term_energies(profile.positions, cmaps={chain: reloaded})["cmaps"]
        np.testing.assert_allclose(got, expected, atol=1e-3)
    ffxml = write_ffxml(tmp_path / "cmap.xml", cmaps=[fitted])
    system = load_forcefield([str(ffxml)], ["amber14-all.xml"]).createSystem(
        molecule.topology, nonbondedMethod=app.NoCutoff, constraints=None
    )
    for force in system.getForces():
        force.setForceGroup(7 if isinstance(force, openmm.CMAPTorsionForce) else 0)
    energy_fn = openmm_energy_function(system, groups={7})
    np.testing.assert_allclose([energy_fn(x)[0] for x in profile.positions], expected, atol=1e-3)


def test_fit_cmap_rejects_too_few_points_and_bad_shapes() -> None:
    angles = np.arange(-180.0, 180.0, 90.0)
    with pytest.raises(RefitInputError, match=r"order=2 needs 25 points; got 4"):
        fit_cmap(angles, angles, np.zeros(4), TYPES, order=2)
    with pytest.raises(RefitInputError, match="equal-length finite 1-D"):
        fit_cmap(angles, angles[:3], np.zeros(4), TYPES)
    assert default_order(64) == 3 and default_order(576) == 8
