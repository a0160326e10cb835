"""Amber prmtop + inpcrd with a fitted CMAP (what a frcmod cannot hold), reloaded by ParmEd and OpenMM.

Oracle: the CMAP energy of the fitted map evaluated by OpenMM on the phi/psi chain (term_energies), and the
base System's energy for everything else, on perturbed structures; 1e-3 kJ/mol as the issue asks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openmm
import parmed
import pytest
from openmm import app, unit

from forcefield_refit.energy import openmm_energy_function
from forcefield_refit.exceptions import RefitInputError, RefitMatchError
from forcefield_refit.molecules import atom_labels, backbone_dihedrals, load_molecule
from forcefield_refit.term_energy import term_energies
from forcefield_refit.terms import CmapTerm
from forcefield_refit.writers.amber_prmtop import add_cmaps, cmap_chains, write_amber_prmtop

ROOT = Path(__file__).resolve().parents[2]
TOL_KJ = 1e-3
TYPES = ("protein-C", "protein-N", "protein-CX", "protein-C", "protein-N")


def _grid(n: int = 24) -> np.ndarray:
    a = np.radians(-180.0 + 360.0 * np.arange(n) / n)
    phi, psi = np.meshgrid(a, a, indexing="ij")
    return 2.5 * np.cos(phi) + 1.2 * np.sin(2 * psi + 0.3) + 0.7 * np.cos(phi - psi)


@pytest.fixture(scope="module")
def ala():
    molecule = load_molecule(ROOT / "systems" / "dipeptides" / "ala.pdb")
    forcefield = app.ForceField("amber14-all.xml")
    return molecule, forcefield, molecule.system(forcefield)


def _frames(positions: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(3)
    return positions[None] + rng.normal(scale=0.01, size=(6, *positions.shape))


def test_cmap_chains_find_the_phi_psi_chain(ala) -> None:
    molecule, forcefield, _ = ala
    term = CmapTerm(TYPES, _grid())
    dihedrals = backbone_dihedrals(molecule.topology)
    chains = cmap_chains(molecule.topology, atom_labels(molecule.topology, forcefield), term)
    assert chains == [(*dihedrals["phi"], dihedrals["psi"][3])]
    labels = atom_labels(molecule.topology, forcefield)
    shifted = CmapTerm(("protein-N", "protein-CX", "protein-C", "protein-N", "protein-CT"), _grid())
    assert cmap_chains(molecule.topology, labels, shifted) == [(*dihedrals["psi"], 18)]  # NME methyl C
    absent = CmapTerm(("protein-C", "protein-N", "protein-CX", "protein-C", "protein-OH"), _grid())
    assert cmap_chains(molecule.topology, labels, absent) == []
    with pytest.raises(RefitInputError, match="labels has 3 entries; allowed: one per atom"):
        cmap_chains(molecule.topology, labels[:3], term)


def test_prmtop_round_trip_parmed_and_openmm(tmp_path, ala) -> None:
    molecule, forcefield, system = ala
    term = CmapTerm(TYPES, _grid())
    (chain,) = cmap_chains(molecule.topology, atom_labels(molecule.topology, forcefield), term)
    prmtop, inpcrd = write_amber_prmtop(
        tmp_path / "ala.prmtop", molecule.topology, system, molecule.positions, {chain: term}
    )
    frames = _frames(molecule.positions)
    expected_cmap = term_energies(frames, cmaps={chain: term})["cmaps"]
    base_fn = openmm_energy_function(system)
    expected_total = np.array([base_fn(x)[0] for x in frames]) + expected_cmap

    by_parmed = parmed.load_file(str(prmtop), str(inpcrd))
    assert isinstance(by_parmed, parmed.amber.AmberParm)
    (cmap,) = by_parmed.cmaps
    assert tuple(a.idx for a in (cmap.atom1, cmap.atom2, cmap.atom3, cmap.atom4, cmap.atom5)) == chain
    np.testing.assert_allclose(by_parmed.coordinates / 10.0, molecule.positions, atol=1e-6)

    by_openmm = app.AmberPrmtopFile(str(prmtop)).createSystem(nonbondedMethod=app.NoCutoff, constraints=None)
    parmed_system = by_parmed.createSystem(nonbondedMethod=app.NoCutoff, constraints=None)
    for reloaded in (by_openmm, parmed_system):
        forces = reloaded.getForces()
        group = next(i for i, f in enumerate(forces) if isinstance(f, openmm.CMAPTorsionForce))
        for i, force in enumerate(forces):
            force.setForceGroup(i)
        cmap_fn, total_fn = openmm_energy_function(reloaded, groups={group}), openmm_energy_function(reloaded)
        np.testing.assert_allclose([cmap_fn(x)[0] for x in frames], expected_cmap, atol=TOL_KJ, rtol=0)
        np.testing.assert_allclose([total_fn(x)[0] for x in frames], expected_total, atol=TOL_KJ, rtol=0)
    coords = app.AmberInpcrdFile(str(inpcrd)).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    np.testing.assert_allclose(coords, molecule.positions, atol=1e-6)


def test_prmtop_refuses_bad_input(tmp_path, ala) -> None:
    molecule, _, system = ala
    term = CmapTerm(TYPES, _grid())
    chain = (4, 6, 8, 14, 16)
    with pytest.raises(RefitInputError, match=r"cmaps=\{\}; allowed: at least one"):
        write_amber_prmtop(tmp_path / "a.prmtop", molecule.topology, system, molecule.positions, {})
    with pytest.raises(RefitInputError, match=r"positions_nm has shape \(3, 3\)"):
        write_amber_prmtop(tmp_path / "a.prmtop", molecule.topology, system, np.zeros((3, 3)), {chain: term})
    with pytest.raises(RefitInputError, match=r"cmaps chain \(4, 6, 8, 14, 99\)"):
        add_cmaps(system, {(4, 6, 8, 14, 99): term})
    with pytest.raises(RefitMatchError, match="already has a CMAPTorsionForce"):
        write_amber_prmtop(
            tmp_path / "a.prmtop",
            molecule.topology,
            add_cmaps(system, {chain: term}),
            molecule.positions,
            {chain: term},
        )
    (tmp_path / "a.inpcrd").write_text("keep\n")
    with pytest.raises(RefitInputError, match=r"a.inpcrd' exists; allowed: a new file, or overwrite=True"):
        write_amber_prmtop(tmp_path / "a.prmtop", molecule.topology, system, molecule.positions, {chain: term})
    assert not (tmp_path / "a.prmtop").exists()  # nothing written when one output is refused
    assert (tmp_path / "a.inpcrd").read_text() == "keep\n"
    write_amber_prmtop(
        tmp_path / "a.prmtop", molecule.topology, system, molecule.positions, {chain: term}, overwrite=True
    )
    assert (tmp_path / "a.inpcrd").read_text() != "keep\n"
