"""Hydrogen-bond dimer scans (water-water, NMA-water, water-NMA, NMA-NMA) and their fits.

Oracles: the reference energy is the amber14/TIP3P energy plus a known term written to an ffxml and loaded
by OpenMM's ForceField (an NBFIX pair in a LennardJonesForce, or a CustomHbondForce); the fits must recover
the known parameters, and the refit ffxml must reproduce the reference energies (1e-3 kJ/mol).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from openmm import app

from forcefield_refit.energy import openmm_energy_function
from forcefield_refit.exceptions import RefitInputError
from forcefield_refit.hbonds import (
    DimerProfile,
    HbondTerm,
    NBFixData,
    dimer_scan,
    fit_hbond_term,
    fit_nbfix,
    hbond_triples,
)
from forcefield_refit.molecules import Molecule, atom_labels, combine, load_molecule, water_molecule
from forcefield_refit.profiles import evaluate_profile
from forcefield_refit.terms import NBFixPair
from forcefield_refit.writers.openmm_xml import lennard_jones_types, load_forcefield, write_ffxml

ROOT = Path(__file__).resolve().parents[2]
BASE = ["amber14-all.xml", "amber14/tip3p.xml"]
#: NMA atoms (tleap ACE-NME order): carbonyl C 4, O 5, amide N 6, H 7.
NMA_C, NMA_O, NMA_N, NMA_H = 4, 5, 6, 7
DISTANCES = np.linspace(0.25, 0.42, 9)
ANGLES = (-30.0, 0.0, 30.0)


def _scan(ff: app.ForceField, donor: Molecule, acceptor: Molecule, atoms: tuple) -> tuple[DimerProfile, Molecule]:
    dimer = combine(donor, acceptor)
    monomers = tuple(openmm_energy_function(m.system(ff))(m.positions)[0] for m in (donor, acceptor))
    fn = openmm_energy_function(dimer.system(ff))
    profile = dimer_scan(fn, monomers, donor.positions, acceptor.positions, *atoms, DISTANCES, ANGLES)
    return profile, dimer


def _interaction(ff: app.ForceField, dimer: Molecule, profile: DimerProfile) -> np.ndarray:
    n = profile.n_donor_atoms
    total = evaluate_profile(openmm_energy_function(dimer.system(ff)), profile.positions, relative=False)
    first = Molecule("a", _sub_topology(dimer, 0), dimer.positions[:n])
    second = Molecule("b", _sub_topology(dimer, 1), dimer.positions[n:])
    e_a = openmm_energy_function(first.system(ff))(profile.positions[0, :n])[0]
    e_b = openmm_energy_function(second.system(ff))(profile.positions[0, n:])[0]
    return total - e_a - e_b


def _sub_topology(dimer: Molecule, chain_index: int) -> app.Topology:
    top = app.Topology()
    chain = list(dimer.topology.chains())[chain_index]
    new_chain = top.addChain()
    mapping = {}
    for residue in chain.residues():
        res = top.addResidue(residue.name, new_chain)
        for atom in residue.atoms():
            mapping[atom] = top.addAtom(atom.name, atom.element, res)
    for bond in dimer.topology.bonds():
        if bond[0] in mapping and bond[1] in mapping:
            top.addBond(mapping[bond[0]], mapping[bond[1]])
    return top


@pytest.fixture(scope="module")
def base() -> app.ForceField:
    return app.ForceField(*BASE)


@pytest.fixture(scope="module")
def molecules() -> dict[str, Molecule]:
    return {"water": water_molecule(), "nma": load_molecule(ROOT / "systems" / "nma" / "nma.pdb")}


def test_mm_dimer_scans_find_hydrogen_bonds(base, molecules) -> None:
    w, nma = molecules["water"], molecules["nma"]
    cases = {
        "water-water": (w, w, (0, 1, 2, 0, [1, 2])),
        "nma-water": (nma, w, (NMA_N, NMA_H, NMA_C, 0, [1, 2])),
        "water-nma": (w, nma, (0, 1, 2, NMA_O, [NMA_C])),
        "nma-nma": (nma, nma, (NMA_N, NMA_H, NMA_C, NMA_O, [NMA_C])),
    }
    for name, (donor, acceptor, atoms) in cases.items():
        profile, _ = _scan(base, donor, acceptor, atoms)
        best = int(np.argmin(profile.energies_kj))
        assert profile.energies_kj[best] < -12.0, name  # an H-bond: < -3 kcal/mol
        assert 0.26 <= profile.distances_nm[best] <= 0.33, name
        assert profile.energies_kj[0] > profile.energies_kj[best], name  # repulsive wall at 0.25 nm


def test_nbfix_fit_recovers_known_pairs_jointly(tmp_path, base, molecules) -> None:
    w, nma = molecules["water"], molecules["nma"]
    lj = lennard_jones_types(base)
    truth = [NBFixPair(("tip3p-O", "tip3p-H"), 0.185, 0.35), NBFixPair(("protein-O", "tip3p-H"), 0.19, 0.5)]
    ffxml = write_ffxml(tmp_path / "truth.xml", nbfix=truth, lj_types=lj)
    target_ff = load_forcefield([str(ffxml)], BASE)
    data, dimers = [], []
    for donor, acceptor, atoms in ((w, w, (0, 1, 2, 0, [1, 2])), (w, nma, (0, 1, 2, NMA_O, [NMA_C]))):
        profile, dimer = _scan(base, donor, acceptor, atoms)
        target = _interaction(target_ff, dimer, profile)
        data.append(NBFixData(profile, target, profile.energies_kj, atom_labels(dimer.topology, base), lj))
        dimers.append(dimer)
    fitted = fit_nbfix(data, [p.types for p in truth], temperature_k=None)
    for got, want in zip(fitted, truth, strict=True):
        assert got.rmin_nm == pytest.approx(want.rmin_nm, rel=1e-6)
        assert got.epsilon_kj == pytest.approx(want.epsilon_kj, rel=1e-6)
    refit = write_ffxml(tmp_path / "refit.xml", nbfix=fitted, lj_types=lj)
    reloaded = load_forcefield([str(refit)], BASE)
    for d, dimer in zip(data, dimers, strict=True):
        np.testing.assert_allclose(_interaction(reloaded, dimer, d.profile), d.target_kj, atol=1e-3)
    with pytest.raises(RefitInputError, match=r"pair_types \[\('protein-N', 'tip3p-H'\)\] occur in no dimer"):
        fit_nbfix(data[:1], [("protein-N", "tip3p-H")])


def test_custom_hbond_term_fit_and_ffxml(tmp_path, base, molecules) -> None:
    w, nma = molecules["water"], molecules["nma"]
    truth = HbondTerm(("protein-N", "protein-H"), "tip3p-O", 2.0e-9, 3.0e-7)
    target_ff = app.ForceField(str(write_ffxml(tmp_path / "hb.xml", hbonds=[truth])), *BASE)
    profile, dimer = _scan(base, nma, w, (NMA_N, NMA_H, NMA_C, 0, [1, 2]))
    target = _interaction(target_ff, dimer, profile)
    fitted = fit_hbond_term([profile], [target - profile.energies_kj], truth.donor_types, truth.acceptor_type,
                            temperature_k=None)
    assert fitted.c12 == pytest.approx(truth.c12, rel=1e-6)
    assert fitted.c10 == pytest.approx(truth.c10, rel=1e-6)
    refit_ff = app.ForceField(str(write_ffxml(tmp_path / "refit.xml", hbonds=[fitted])), *BASE)
    np.testing.assert_allclose(_interaction(refit_ff, dimer, profile), target, atol=1e-3)


@pytest.mark.parametrize("angle_power", [0, 4])
def test_general_hbond_term_over_all_triples_matches_openmm(tmp_path, base, molecules, angle_power) -> None:
    """Water dimer, 12-10-6 form with a repulsive r^-6 part: OpenMM applies the term to all four intermolecular
    O-H...O triples (both waters donate); fitting over those triples recovers it and the refit ffxml reproduces
    the target."""
    w = molecules["water"]
    truth = HbondTerm(("tip3p-O", "tip3p-H"), "tip3p-O", 3.0e-9, -2.0e-7, -4.0e-4, angle_power=angle_power)
    target_ff = app.ForceField(str(write_ffxml(tmp_path / "hb.xml", hbonds=[truth])), *BASE)
    profile, dimer = _scan(base, w, w, (0, 1, 2, 0, [1, 2]))
    target = _interaction(target_ff, dimer, profile)
    triples = hbond_triples(atom_labels(dimer.topology, base), dimer.bonds, profile.n_donor_atoms, truth.types)
    assert triples == [(0, 1, 3), (0, 2, 3), (3, 4, 0), (3, 5, 0)]
    np.testing.assert_allclose(profile.energies_kj + truth.profile_energy(profile.positions, triples), target,
                               atol=1e-3)
    fitted = fit_hbond_term([profile], [target - profile.energies_kj], truth.donor_types, truth.acceptor_type,
                            temperature_k=None, triples=[triples], form="12-10-6", angle_power=angle_power)
    for name in ("c12", "c10", "c6"):
        assert getattr(fitted, name) == pytest.approx(getattr(truth, name), rel=1e-5), name
    refit_ff = app.ForceField(str(write_ffxml(tmp_path / "refit.xml", hbonds=[fitted])), *BASE)
    np.testing.assert_allclose(_interaction(refit_ff, dimer, profile), target, atol=1e-3)


def test_hbond_term_rejects_bad_options(base, molecules) -> None:
    with pytest.raises(RefitInputError, match=r"angle_power=3; allowed: \(0, 1, 2, 4\)"):
        HbondTerm(("tip3p-O", "tip3p-H"), "tip3p-O", 1e-9, 1e-7, angle_power=3)
    w = molecules["water"]
    profile, _ = _scan(base, w, w, (0, 1, 2, 0, [1, 2]))
    with pytest.raises(RefitInputError, match="form='12-6'; allowed: '12-10' or '12-10-6'"):
        fit_hbond_term([profile], [profile.energies_kj], ("tip3p-O", "tip3p-H"), "tip3p-O", form="12-6")  # type: ignore[arg-type]
    with pytest.raises(RefitInputError, match="no .* donor-acceptor triple between the monomers"):
        fit_hbond_term([profile], [profile.energies_kj], ("protein-N", "protein-H"), "tip3p-O", triples=[[]])
