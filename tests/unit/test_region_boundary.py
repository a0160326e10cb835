"""Region boundaries: cut bonds, link-atom caps, boundary charges, refusals; carving and labelling with caps."""

import numpy as np
import pytest
from openmm import NonbondedForce, app, unit

from biomol_nnp.config import LabelSettings, SystemSettings
from biomol_nnp.exceptions import InputError
from biomol_nnp.qm.clusters import carve_region
from biomol_nnp.qm.labeling import label_one
from biomol_nnp.region import find_cut_bonds, link_atom_positions, redistribute_boundary_charges


@pytest.fixture(scope="module")
def solvated():
    pdb = app.PDBFile(str(SystemSettings().solvated_pdb))
    system = app.ForceField("amber14-all.xml", "amber14/tip3p.xml").createSystem(pdb.topology)
    nonbonded = next(f for f in system.getForces() if isinstance(f, NonbondedForce))
    charges = np.array([nonbonded.getParticleParameters(i)[0].value_in_unit(unit.elementary_charge)
                        for i in range(system.getNumParticles())])
    xyz = np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    box = np.asarray(pdb.topology.getPeriodicBoxVectors().value_in_unit(unit.nanometer))
    return pdb.topology, xyz, box, charges


def alanine_atoms(topology):
    return [a.index for a in topology.atoms() if a.residue.name == "ALA"]


def test_cut_bonds_caps_and_charges(solvated):
    topology, xyz, _, charges = solvated
    region = alanine_atoms(topology)
    cuts = find_cut_bonds(topology, region)
    names = {(list(topology.atoms())[c.inside].name, list(topology.atoms())[c.outside].name) for c in cuts}
    assert names == {("N", "C"), ("C", "N")}  # ACE C - ALA N and ALA C - NME N
    numbers = [a.element.atomic_number for a in topology.atoms()]
    caps = link_atom_positions(xyz, cuts, numbers)
    for cut, cap in zip(cuts, caps, strict=True):
        bond = xyz[cut.outside] - xyz[cut.inside]
        along = cap - xyz[cut.inside]
        assert np.linalg.norm(np.cross(bond, along)) < 1e-12  # on the bond line
        expected = 0.101 if numbers[cut.inside] == 7 else 0.109
        assert np.linalg.norm(along) == pytest.approx(expected)
    moved = redistribute_boundary_charges(topology, charges, cuts, region)
    assert moved.sum() == pytest.approx(charges.sum(), abs=1e-12)
    assert all(moved[c.outside] == 0.0 for c in cuts)
    assert np.all(moved[region] == charges[region])


def test_carved_region_with_caps_labels_with_xtb(solvated):
    topology, xyz, box, charges = solvated
    alanine_residue = next(r.index for r in topology.residues() if r.name == "ALA")
    config = carve_region(topology, xyz, box, [alanine_residue], charges, cutoff_nm=0.5)
    assert config.n_atoms == 10 + 2 and list(config.atomic_numbers[-2:]) == [1, 1]
    assert config.total_charge == 0
    # the capping residues' atoms are point charges, their boundary atoms carry no charge
    boundary_positions = [xyz[c.outside] for c in find_cut_bonds(topology, alanine_atoms(topology))]
    for position in boundary_positions:
        match = np.linalg.norm(config.mm_positions - position, axis=1) < 1e-9
        assert match.sum() == 1 and config.mm_charges[match][0] == 0.0
    record = label_one(config, LabelSettings(threads=1))
    assert record.status == "ok", record.reason
    assert float(record.vacuum.charges.sum()) == pytest.approx(0.0, abs=1e-6)


def make_topology(elements, bonds):
    topology = app.Topology()
    residue = topology.addResidue("MOL", topology.addChain())
    atoms = [topology.addAtom(f"{e.symbol}{i}", e, residue) for i, e in enumerate(elements)]
    for a, b in bonds:
        topology.addBond(atoms[a], atoms[b])
    return topology


def test_ring_disulfide_and_other_cuts_are_refused():
    carbon, sulfur, oxygen = app.element.carbon, app.element.sulfur, app.element.oxygen
    ring = make_topology([carbon] * 4, [(0, 1), (1, 2), (2, 3), (3, 0)])
    with pytest.raises(InputError, match="part of a ring"):
        find_cut_bonds(ring, [0, 1])
    disulfide = make_topology([carbon, sulfur, sulfur, carbon], [(0, 1), (1, 2), (2, 3)])
    with pytest.raises(InputError, match="disulfide"):
        find_cut_bonds(disulfide, [0, 1])
    ether = make_topology([carbon, oxygen, carbon], [(0, 1), (1, 2)])
    with pytest.raises(InputError, match="only single C-C or C-N bonds"):
        find_cut_bonds(ether, [0])
    chain = make_topology([carbon] * 3, [(0, 1), (1, 2)])
    assert len(find_cut_bonds(chain, [0, 1])) == 1
