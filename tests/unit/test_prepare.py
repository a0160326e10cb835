"""`biomol-nnp prepare`: PDBFixer + Modeller + force field on real structures, MDAnalysis region selection."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import openmm
import pytest
from openmm import app, unit

from biomol_nnp.cli import main
from biomol_nnp.config import SYSTEMS_DIR, PrepareSettings
from biomol_nnp.exceptions import ConfigError, InputError
from biomol_nnp.prepare import build_peptide, find_tleap, malformed_pdb_line, peptide_residues, prepare, select_region

datafiles = pytest.importorskip("MDAnalysisTests.datafiles")
ADK_PDB = Path(datafiles.PDB_small)  # adenylate kinase, open state (4AKE), CHARMM names, with hydrogens
DIPEPTIDE_PDB = SYSTEMS_DIR / "alanine_dipeptide" / "vacuum.pdb"


def total_charge(system: openmm.System) -> float:
    nonbonded = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    return sum(
        nonbonded.getParticleParameters(i)[0].value_in_unit(unit.elementary_charge)
        for i in range(system.getNumParticles())
    )


def energy(system: openmm.System, positions, box=None) -> float:
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    if box is not None:
        context.setPeriodicBoxVectors(*box)
    context.setPositions(positions)
    return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


@pytest.fixture(scope="module")
def dipeptide(tmp_path_factory):
    """The shipped dipeptide, fully prepared: amber14, 1.0 nm water padding, 0.5 M KCl, region = the peptide."""
    settings = PrepareSettings(
        padding_nm=1.0,
        ionic_strength_molar=0.5,
        positive_ion="K+",
        nonbonded_cutoff_nm=0.9,
        region_selection="resname ACE ALA NME",
    )
    return prepare(DIPEPTIDE_PDB, tmp_path_factory.mktemp("dipeptide"), settings)


@pytest.fixture(scope="module")
def adk_vacuum(tmp_path_factory):
    """Adenylate kinase through PDBFixer, hydrogens at pH 7 and an amber14 System, without solvent."""
    settings = PrepareSettings(solvate=False, region_selection="protein and resid 45-50")
    return prepare(ADK_PDB, tmp_path_factory.mktemp("adk"), settings)


def test_dipeptide_writes_every_file(dipeptide):
    assert sorted(p.name for p in dipeptide.output_dir.iterdir()) == [
        "prepare.yaml",
        "region.json",
        "system.xml",
        "topology.pdb",
    ]
    assert not list(dipeptide.output_dir.glob(".*.tmp"))


def test_dipeptide_system_is_solvated_neutral_pme(dipeptide):
    system = openmm.XmlSerializer.deserialize((dipeptide.output_dir / "system.xml").read_text())
    pdb = app.PDBFile(str(dipeptide.output_dir / "topology.pdb"))
    assert system.getNumParticles() == pdb.topology.getNumAtoms() == dipeptide.topology.getNumAtoms()
    nonbonded = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    assert nonbonded.getNonbondedMethod() == openmm.NonbondedForce.PME
    assert nonbonded.getCutoffDistance().value_in_unit(unit.nanometer) == pytest.approx(0.9)
    assert system.usesPeriodicBoundaryConditions()
    box = pdb.topology.getPeriodicBoxVectors().value_in_unit(unit.nanometer)
    assert min(box[0][0], box[1][1], box[2][2]) > 2 * 0.9
    names = Counter(res.name for res in pdb.topology.residues())
    assert names["ACE"] == names["ALA"] == names["NME"] == 1
    assert names["HOH"] > 200
    assert names["K"] == names["CL"] > 0  # neutral peptide: salt only, in pairs
    assert total_charge(system) == pytest.approx(0.0, abs=1e-6)


def test_dipeptide_written_system_reloads_to_the_same_energy(dipeptide):
    """The engine's own parsers read back system.xml and topology.pdb: same energy as the in-memory System."""
    pdb = app.PDBFile(str(dipeptide.output_dir / "topology.pdb"))
    reloaded = openmm.XmlSerializer.deserialize((dipeptide.output_dir / "system.xml").read_text())
    box = pdb.topology.getPeriodicBoxVectors()
    e_written = energy(reloaded, pdb.positions, box)
    e_memory = energy(dipeptide.system, pdb.positions, box)
    assert np.isfinite(e_written)
    assert e_written == pytest.approx(e_memory, abs=1e-3)


def test_dipeptide_region_json(dipeptide):
    region = json.loads((dipeptide.output_dir / "region.json").read_text())
    assert region["selection"] == "resname ACE ALA NME"
    assert region["atom_indices"] == list(range(22))
    assert region["n_atoms"] == 22
    assert [r["name"] for r in region["residues"]] == ["ACE", "ALA", "NME"]
    assert region["mm_charge"] == pytest.approx(0.0, abs=1e-6)
    assert region["whole_residues"] is True


def test_dipeptide_prepare_yaml_round_trips(dipeptide):
    settings = PrepareSettings.from_yaml(dipeptide.output_dir / "prepare.yaml")
    assert settings.positive_ion == "K+"
    assert settings.padding_nm == 1.0
    assert settings.region_selection == "resname ACE ALA NME"


def test_adk_fixed_and_parameterized(adk_vacuum):
    topology, system = adk_vacuum.topology, adk_vacuum.system
    assert topology.getNumResidues() == 214
    assert topology.getPeriodicBoxVectors() is None  # the crystal cell is dropped in vacuum
    assert not system.usesPeriodicBoundaryConditions()
    charge = total_charge(system)
    assert charge == pytest.approx(round(charge), abs=1e-4)  # whole residues, integer net charge
    assert round(charge) == -4  # 18 Lys + 13 Arg - 17 Asp - 18 Glu; neutral His, charged termini cancel
    assert np.isfinite(energy(system, adk_vacuum.positions))


def test_adk_region_is_whole_residues_with_integer_charge(adk_vacuum):
    region = adk_vacuum.region
    assert region is not None
    assert [(r["name"], r["id"]) for r in region.residues] == [
        ("LEU", "45"),
        ("GLY", "46"),
        ("LYS", "47"),
        ("GLN", "48"),
        ("ALA", "49"),
        ("LYS", "50"),
    ]
    atoms = list(adk_vacuum.topology.atoms())
    assert {atoms[i].residue.id for i in region.atom_indices} == {"45", "46", "47", "48", "49", "50"}
    n_expected = sum(len(list(res.atoms())) for res in adk_vacuum.topology.residues() if 45 <= int(res.id) <= 50)
    assert len(region.atom_indices) == n_expected
    assert region.charge == pytest.approx(2.0, abs=1e-6)  # two lysines


def test_adk_missing_heavy_atoms_and_hydrogens_are_rebuilt(tmp_path):
    """Strip every hydrogen and the side chain of Arg 36 beyond CB: PDBFixer puts them back."""
    lines = ADK_PDB.read_text().splitlines()
    kept = []
    for line in lines:
        if line.startswith("ATOM"):
            name, resid = line[12:16].strip(), int(line[22:26])
            if name.startswith("H") or (resid == 36 and name not in ("N", "CA", "C", "O", "CB")):
                continue
        kept.append(line)
    stripped = tmp_path / "adk_heavy.pdb"
    stripped.write_text("\n".join(kept) + "\n")
    prepared = prepare(stripped, tmp_path / "out", PrepareSettings(solvate=False))
    arg36 = next(res for res in prepared.topology.residues() if res.id == "36")
    assert arg36.name == "ARG"
    assert {a.name for a in arg36.atoms()} >= {"CG", "CD", "NE", "CZ", "NH1", "NH2", "HH11", "HE"}
    n_h = sum(1 for a in prepared.topology.atoms() if a.element.symbol == "H")
    assert n_h > 1600
    assert not (tmp_path / "out" / "region.json").exists()  # no selection, no region file


def test_adk_charmm36_vacuum(tmp_path):
    prepared = prepare(ADK_PDB, tmp_path, PrepareSettings(forcefield="charmm36", solvate=False))
    charge = total_charge(prepared.system)
    assert charge == pytest.approx(-4.0, abs=1e-4)
    cmap = [f for f in prepared.system.getForces() if isinstance(f, openmm.CMAPTorsionForce)]
    assert cmap and cmap[0].getNumTorsions() > 200  # CHARMM36's backbone CMAP is there


@pytest.mark.slow
def test_adk_full_solvation(tmp_path):
    prepared = prepare(ADK_PDB, tmp_path, PrepareSettings(region_selection="protein and resid 45-50"))
    names = Counter(res.name for res in prepared.topology.residues())
    assert names["NA"] - names["CL"] == 4  # neutralizing counter-ions for a -4 protein
    assert total_charge(prepared.system) == pytest.approx(0.0, abs=1e-4)
    assert prepared.region is not None and len(prepared.region.residues) == 6


def test_trpzip2_from_mdanalysis_tests(tmp_path):
    """TrpZip2 (SWTWENGKWTWK-NH2, Amber names, truncated-octahedron MD frame): protein out, prepared in vacuum."""
    import MDAnalysis

    universe = MDAnalysis.Universe(datafiles.PRM7, datafiles.NCDFtruncoct)
    pdb = tmp_path / "tz2.pdb"
    with pytest.warns(UserWarning):  # MDAnalysis fills PDB fields Amber files lack
        universe.select_atoms("protein or resname NHE").write(str(pdb))
    prepared = prepare(pdb, tmp_path / "out", PrepareSettings(solvate=False, region_selection="protein and resid 5-8"))
    names = [res.name for res in prepared.topology.residues()]
    assert names[:4] == ["SER", "TRP", "THR", "TRP"] and names[-1] == "NH2"  # Amber's NHE is the PDB's NH2
    assert total_charge(prepared.system) == pytest.approx(2.0, abs=1e-4)  # N-terminus + 2 Lys - Glu
    assert prepared.region is not None and [r["name"] for r in prepared.region.residues] == ["GLU", "ASN", "GLY", "LYS"]
    assert prepared.region.charge == pytest.approx(0.0, abs=1e-6)
    reloaded = openmm.XmlSerializer.deserialize((tmp_path / "out" / "system.xml").read_text())
    assert energy(reloaded, prepared.positions) == pytest.approx(energy(prepared.system, prepared.positions), rel=1e-9)


def test_peptide_sequences_parse():
    assert peptide_residues("gw", caps=False) == ["GLY", "TRP"]
    assert peptide_residues("ACE HIP NME") == ["ACE", "HIP", "NME"]
    with pytest.raises(InputError, match=r"sequence 'AXZ' is not a peptide sequence \(unknown one-letter codes"):
        peptide_residues("AXZ")


@pytest.mark.skipif(find_tleap() is None, reason="tleap not installed: pip install -c constraints.txt -e .[build]")
def test_peptide_from_sequence_with_tleap(tmp_path):
    pdb = build_peptide("AGS", tmp_path / "ags.pdb")
    prepared = prepare(pdb, tmp_path / "out", PrepareSettings(solvate=False, region_selection="resname GLY"))
    assert [res.name for res in prepared.topology.residues()] == ["ACE", "ALA", "GLY", "SER", "NME"]
    assert total_charge(prepared.system) == pytest.approx(0.0, abs=1e-4)
    assert prepared.region is not None and len(prepared.region.atom_indices) == 7


def test_missing_tleap_is_explained(tmp_path, monkeypatch):
    monkeypatch.setattr("biomol_nnp.prepare.find_tleap", lambda: None)
    with pytest.raises(InputError, match=r"needs tleap, which is not installed; .*pip install -c constraints.txt"):
        build_peptide("AA", tmp_path / "aa.pdb")


# ----------------------------------------------------------------------------------------- region selection


def test_select_region_whole_residues_or_atoms(dipeptide):
    pdb = dipeptide.files["topology"]
    assert select_region(pdb, "resname ALA and name CA", whole_residues=False) == [8]
    assert select_region(pdb, "resname ALA and name CA") == list(range(6, 16))


def test_select_region_distance_selection_includes_waters(dipeptide):
    pdb = dipeptide.files["topology"]
    indices = select_region(pdb, "resname ALA or (resname HOH and around 4 resname ALA)")
    atoms = list(dipeptide.topology.atoms())
    names = {atoms[i].residue.name for i in indices}
    assert names == {"ALA", "HOH"}
    assert len(indices) % 3 == 10 % 3  # 10 alanine atoms plus whole waters


def test_select_region_empty_selection(dipeptide):
    with pytest.raises(InputError, match=r"selection 'resname XYZ' selects no atoms.*ALA"):
        select_region(dipeptide.files["topology"], "resname XYZ")


def test_select_region_invalid_selection(dipeptide):
    with pytest.raises(InputError, match=r"invalid MDAnalysis selection 'resid 1-': SelectionError"):
        select_region(dipeptide.files["topology"], "resid 1-")


def test_select_region_blank_selection_and_missing_file(dipeptide, tmp_path):
    with pytest.raises(InputError, match="region selection ' ' is empty"):
        select_region(dipeptide.files["topology"], " ")
    with pytest.raises(InputError, match="does not exist"):
        select_region(tmp_path / "none.pdb", "protein")


# ----------------------------------------------------------------------------------------- bad input


def test_missing_pdb(tmp_path):
    with pytest.raises(InputError, match="PDB file .*none.pdb' does not exist"):
        prepare(tmp_path / "none.pdb", tmp_path / "out", PrepareSettings())


def test_malformed_pdb(tmp_path):
    bad = tmp_path / "bad.pdb"
    bad.write_text("ATOM      1  N   ALA A   1      xx.xxx   0.000   0.000  1.00  0.00           N\nEND\n")
    with pytest.raises(InputError, match=r"cannot read PDB file .*bad.pdb.*\nline 1: ATOM record: x \(columns 31-38\)"):
        prepare(bad, tmp_path / "out", PrepareSettings())


def test_malformed_pdb_names_the_line_and_its_content(tmp_path):
    """A real file with one corrupted coordinate deep inside: the message gives line number, field and text."""
    lines = DIPEPTIDE_PDB.read_text().splitlines()
    number = next(k for k, line in enumerate(lines) if line.startswith("ATOM") and line[12:16].strip() == "CB")
    lines[number] = lines[number][:38] + "  1.2.3 " + lines[number][46:]
    bad = tmp_path / "bad.pdb"
    bad.write_text("\n".join(lines) + "\n")
    expected = rf"line {number + 1}: ATOM record: y \(columns 39-46\) is '  1.2.3 ', not a number: 'ATOM .* CB  ALA"
    assert malformed_pdb_line(bad) is not None
    with pytest.raises(InputError, match=expected):
        prepare(bad, tmp_path / "out", PrepareSettings())
    assert malformed_pdb_line(DIPEPTIDE_PDB) is None


def test_cutoff_longer_than_half_the_box(tmp_path):
    with pytest.raises(InputError, match=r"nonbonded_cutoff_nm 1.2 is more than half the box width"):
        prepare(DIPEPTIDE_PDB, tmp_path, PrepareSettings(padding_nm=0.5, nonbonded_cutoff_nm=1.2))


def test_charmm36_capped_dipeptide_ambiguity_is_explained(tmp_path):
    """CHARMM36 in OpenMM has two templates for a capped alanine (ALAD and ACE+ALA+NME): a clear error."""
    with pytest.raises(
        InputError, match=r"(?s)cannot .* with charmm36: Multiple non-identical.*ALAD.*Hint: .*Use forcefield 'amber14'"
    ):
        prepare(DIPEPTIDE_PDB, tmp_path, PrepareSettings(forcefield="charmm36", padding_nm=1.0))


def test_residue_without_template_has_openmm_diagnosis_and_hint(tmp_path):
    """A ligand kept in the structure (remove_heterogens off): OpenMM's diagnosis plus our hint."""
    lines = [line for line in DIPEPTIDE_PDB.read_text().splitlines() if line.startswith(("ATOM", "HETATM"))]
    ligand = "HETATM  999  C1  LIG B   1       5.000   5.000   5.000  1.00  0.00           C"
    pdb = tmp_path / "with_ligand.pdb"
    pdb.write_text("\n".join([*lines, "TER", ligand, "END"]) + "\n")
    settings = PrepareSettings(remove_heterogens=False, solvate=False)
    with pytest.raises(InputError, match=r"(?s)No template found .*LIG.*Hint: .*remove_heterogens: true"):
        prepare(pdb, tmp_path / "out", settings)


def test_settings_refuse_unknown_keys_and_ions(tmp_path):
    path = tmp_path / "prepare.yaml"
    path.write_text("padding: 1.0\n")
    with pytest.raises(ConfigError, match="padding"):
        PrepareSettings.from_yaml(path)
    with pytest.raises(ValueError, match="positive_ion"):
        PrepareSettings(positive_ion="Mg2+")


# ----------------------------------------------------------------------------------------- command line


def test_cli_prepare(tmp_path):
    out = tmp_path / "out"
    rc = main(["-q", "prepare", str(ADK_PDB), "-o", str(out), "--no-solvent", "--region", "resid 45-50 and name CA"])
    assert rc == 0
    region = json.loads((out / "region.json").read_text())
    assert len(region["residues"]) == 6 and region["mm_charge"] == pytest.approx(2.0)
    assert PrepareSettings.from_yaml(out / "prepare.yaml").solvate is False


def test_cli_prepare_bad_selection_exits_2(tmp_path):
    rc = main(["-q", "prepare", str(DIPEPTIDE_PDB), "-o", str(tmp_path), "--no-solvent", "--region", "resname XYZ"])
    assert rc == 2


def test_cli_prepare_needs_a_pdb_or_a_sequence(tmp_path, caplog):
    assert main(["prepare", "-o", str(tmp_path)]) == 2
    assert "give either a PDB file or --sequence" in caplog.text
    assert main(["prepare", str(DIPEPTIDE_PDB), "--sequence", "AA", "-o", str(tmp_path)]) == 2
