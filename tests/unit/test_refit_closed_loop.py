"""Closed loop on one profile: target from ff14SB, refit of ff99SB's phi class terms (issue target 0.05 kcal/mol).

The full five-dipeptide report is benchmarks/refit_closed_loop.py; this is its fast unit version.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from openmm import app

from forcefield_refit.energy import openmm_energy_function
from forcefield_refit.exceptions import RefitMatchError
from forcefield_refit.fit_profiles import offset_free_rmse, scan_profile
from forcefield_refit.molecules import atom_labels, backbone_dihedrals, dihedrals_by_label, load_molecule
from forcefield_refit.torsion_fit import fit_torsions
from forcefield_refit.units import KJ_TO_KCAL

ROOT = Path(__file__).resolve().parents[2]


def test_ala_phi_closed_loop_recovers_ff14sb() -> None:
    molecule = load_molecule(ROOT / "systems" / "dipeptides" / "ala.pdb")
    ff99 = app.ForceField("amber99sb.xml")
    reference = openmm_energy_function(molecule.system(["amber14-all.xml"]))
    phi = backbone_dihedrals(molecule.topology)["phi"]
    profile = scan_profile(
        "ala phi", molecule, reference, ff99, phi, [("C", "N", "CT", "C")], np.arange(-180.0, 180.0, 20.0),
        by="class", max_iterations=200,
    )
    fitted = fit_torsions([profile.fit_data], periodicities=range(1, 7))
    target = profile.profile.energies_kj
    refit = offset_free_rmse(profile.refit_kj(fitted), target) * KJ_TO_KCAL
    original = offset_free_rmse(profile.original_kj, target) * KJ_TO_KCAL
    assert refit <= 0.05
    assert original > 5 * refit


def test_dipeptides_name_their_dihedrals_and_labels() -> None:
    names = {}
    for residue in ("ala", "gly", "ser", "val", "asn"):
        molecule = load_molecule(ROOT / "systems" / "dipeptides" / f"{residue}.pdb")
        names[residue] = sorted(backbone_dihedrals(molecule.topology))
    assert names["gly"] == ["phi", "psi"] and names["ala"] == ["phi", "psi"]
    assert all(names[r] == ["chi1", "phi", "psi"] for r in ("ser", "val", "asn"))
    nma = load_molecule(ROOT / "systems" / "nma" / "nma.pdb")
    with pytest.raises(RefitMatchError, match="allowed: ACE-X-NME"):
        backbone_dihedrals(nma.topology)
    labels = atom_labels(nma.topology, app.ForceField("amber99sb.xml"), by="class")
    with pytest.raises(RefitMatchError, match=r"types \[\('C', 'N', 'CT', 'C'\)\] match no proper torsion"):
        dihedrals_by_label(nma.topology, labels, [("C", "N", "CT", "C")])
