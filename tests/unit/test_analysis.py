"""Structure analyses (MDAnalysis) on MDAnalysisTests trajectories and synthetic systems with known answers."""

from __future__ import annotations

import csv
import json

import MDAnalysis
import numpy as np
import pytest
from MDAnalysis.coordinates.memory import MemoryReader
from MDAnalysisTests.datafiles import DCD, PSF

from biomol_nnp.analysis.structure import (
    analyze,
    hbond_occupancy,
    load_universe,
    ramachandran,
    water_rdf,
    write_hbonds,
    write_ramachandran,
    write_rdf,
)
from biomol_nnp.exceptions import InputError


@pytest.fixture(scope="module")
def adk():
    """Adenylate kinase (214 residues, 98 frames, CHARMM PSF with charges)."""
    return MDAnalysis.Universe(PSF, DCD)


def dihedral(p0, p1, p2, p3):
    """Dihedral angle in degrees (IUPAC sign), straight from the four positions."""
    b0, b1, b2 = p0 - p1, p2 - p1, p3 - p2
    b1 = b1 / np.linalg.norm(b1)
    v = b0 - np.dot(b0, b1) * b1
    w = b2 - np.dot(b2, b1) * b1
    return np.degrees(np.arctan2(np.dot(np.cross(b1, v), w), np.dot(v, w)))


def test_ramachandran_angles_histogram_and_files(adk, tmp_path):
    result = ramachandran(adk, "protein", bins=36, stop=20)
    assert result.angles.shape == (20, 212, 2)  # the two terminal residues have no phi or psi
    adk.trajectory[7]
    residues = adk.select_atoms("protein").residues
    assert result.residues[:2] == [f"{r.resname} {r.resid}" for r in residues[1:3]]  # labels: the residue itself
    for k in (1, 50, 120):
        prev, res, nxt = residues[k - 1], residues[k], residues[k + 1]
        pos = {name: res.atoms.select_atoms(f"name {name}").positions[0] for name in ("N", "CA", "C")}
        c_prev = prev.atoms.select_atoms("name C").positions[0]
        n_next = nxt.atoms.select_atoms("name N").positions[0]
        assert result.angles[7, k - 1, 0] == pytest.approx(dihedral(c_prev, pos["N"], pos["CA"], pos["C"]), abs=1e-3)
        assert result.angles[7, k - 1, 1] == pytest.approx(dihedral(pos["N"], pos["CA"], pos["C"], n_next), abs=1e-3)
    bin_area = (result.edges[1] - result.edges[0]) ** 2
    assert result.density.sum() * bin_area == pytest.approx(1.0)
    assert sum(result.populations.values()) == pytest.approx(1.0)
    assert result.populations["alpha_R"] > 0.4  # ADK is an alpha/beta protein, mostly helical
    paths = write_ramachandran(result, tmp_path)
    with open(paths["csv"]) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 20 * 212 and rows[0]["residue"] == result.residues[0]
    assert json.loads(paths["json"].read_text())["populations"] == result.populations
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


def water_dimer(frames_oo_nm):
    """Two waters; the donor H of water 1 points at the O of water 2 at each O...O distance (nm), linear H-bond."""
    universe = MDAnalysis.Universe.empty(6, n_residues=2, atom_resindex=[0, 0, 0, 1, 1, 1], trajectory=True)
    universe.add_TopologyAttr("name", ["O", "H1", "H2"] * 2)
    universe.add_TopologyAttr("element", ["O", "H", "H"] * 2)
    universe.add_TopologyAttr("resname", ["HOH", "HOH"])
    universe.add_TopologyAttr("resid", [1, 2])
    coordinates = []
    for d in frames_oo_nm:
        d_a = d * 10.0
        coordinates.append(
            [[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0], [d_a, 0, 0], [d_a + 0.24, 0.93, 0], [d_a + 0.24, -0.93, 0]]
        )
    universe.load_new(
        np.asarray(coordinates, dtype=np.float32), format=MemoryReader, dimensions=[30, 30, 30, 90, 90, 90]
    )
    return universe


def test_hbond_occupancy_of_a_water_dimer_is_the_fraction_of_bonded_frames(tmp_path):
    universe = water_dimer([0.28, 0.29, 0.45, 0.28])  # bonded, bonded, broken (> 0.3 nm), bonded
    result = hbond_occupancy(universe, selection="resname HOH")
    assert len(result.rows) == 1
    row = result.rows[0]
    assert (row["donor_index"], row["hydrogen_index"], row["acceptor_index"]) == (0, 1, 3)
    assert row["occupancy"] == pytest.approx(0.75)
    assert row["donor"] == "HOH 1 O" and row["acceptor"] == "HOH 2 O"
    paths = write_hbonds(result, tmp_path)
    with open(paths["csv"]) as handle:
        assert float(next(csv.DictReader(handle))["occupancy"]) == pytest.approx(0.75)


def test_hbond_occupancy_on_adk_backbone(adk):
    result = hbond_occupancy(adk, "protein", stop=10)
    assert result.frames == 10 and len(result.rows) > 100
    occupancies = [row["occupancy"] for row in result.rows]
    assert occupancies == sorted(occupancies, reverse=True) and 0 < occupancies[-1] <= occupancies[0] <= 1
    backbone = [r for r in result.rows if r["donor"].endswith(" N") and r["acceptor"].endswith(" O")]
    assert sum(r["occupancy"] >= 0.5 for r in backbone) > 20  # helix backbone N-H...O=C bonds persist


def ideal_gas(n=800, frames=10, box_a=30.0, seed=0):
    rng = np.random.default_rng(seed)
    universe = MDAnalysis.Universe.empty(n, n_residues=n, atom_resindex=np.arange(n), trajectory=True)
    universe.add_TopologyAttr("name", ["O"] * n)
    universe.add_TopologyAttr("resname", ["HOH"] * n)
    coordinates = rng.uniform(0, box_a, (frames, n, 3)).astype(np.float32)
    universe.load_new(coordinates, format=MemoryReader, dimensions=[box_a, box_a, box_a, 90, 90, 90])
    return universe


def test_rdf_of_an_ideal_gas_is_one_and_counts_neighbours(tmp_path):
    universe = ideal_gas()
    result = water_rdf(universe, r_max_nm=1.4, bins=28)
    far = result.g[result.r_nm > 0.3]
    assert np.mean(far) == pytest.approx(1.0, abs=0.02)
    assert np.all(np.abs(far - 1.0) < 0.25)
    # coordination up to r: 4/3 pi r^3 rho for g = 1 (checked through the written JSON)
    paths = write_rdf(result, tmp_path)
    data = json.loads(paths["json"].read_text())
    edge = data["first_minimum_nm"] + 0.025
    expected = 4.0 / 3.0 * np.pi * edge**3 * 800 / 27.0
    assert data["coordination_number"] == pytest.approx(expected, rel=0.1)
    assert np.loadtxt(paths["csv"], delimiter=",", skiprows=1).shape == (28, 2)


def test_analyze_dispatch_and_bad_input(tmp_path):
    with pytest.raises(InputError, match="kind='sasa' is not an analysis; choose one of"):
        analyze(DCD, PSF, "sasa", tmp_path)
    with pytest.raises(InputError, match="trajectory file 'missing.dcd' does not exist"):
        load_universe("missing.dcd", PSF)
    with pytest.raises(InputError, match="matches no atom"):
        analyze(DCD, PSF, "rdf", tmp_path)  # ADK has no water
    with pytest.raises(InputError, match="select none of the 98 frames"):
        ramachandran(MDAnalysis.Universe(PSF, DCD), start=200)
    with pytest.raises(InputError, match=r"r_max_nm=5.0.*half the shortest box edge \(1.500 nm\)"):
        water_rdf(ideal_gas(n=20, frames=2), r_max_nm=5.0)
    paths = analyze(DCD, PSF, "ramachandran", tmp_path, selection="protein and resid 10-20")
    assert json.loads(paths["json"].read_text())["frames"] == 98


def test_cli_analyze_writes_the_files(tmp_path):
    from biomol_nnp.analysis.structure import KINDS
    from biomol_nnp.cli import ANALYSIS_KINDS, main

    assert ANALYSIS_KINDS == KINDS
    assert main(["-q", "analyze", DCD, PSF, "--kind", "hbonds", "--start", "90", "-o", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "hbonds.json").read_text())["frames"] == 8
    assert main(["-q", "analyze", DCD, "missing.psf", "--kind", "rdf", "-o", str(tmp_path)]) == 2
