"""Samplers: water-dimer H-bond scan, water clusters from the solvated box, region carving."""

import numpy as np
import pytest

from biomol_nnp.config import SystemSettings
from biomol_nnp.exceptions import InputError
from biomol_nnp.qm.clusters import carve_region, water_clusters
from biomol_nnp.qm.scans import water_dimer_scan

SOLVATED = SystemSettings().solvated_pdb


def test_water_dimer_scan_sets_distance_and_keeps_waters_rigid() -> None:
    configs = water_dimer_scan(distances_nm=[0.26, 0.30, 0.40], angles_deg=[-30.0, 0.0])
    assert len(configs) == 6
    ref = configs[1].positions
    for c in configs:
        oo = np.linalg.norm(c.positions[3] - c.positions[0])
        assert oo == pytest.approx([0.26, 0.30, 0.40][c.frame], abs=1e-9)
        # rigid monomers: the acceptor's internal distances equal the S22 ones
        for i, j in ((3, 4), (3, 5), (4, 5)):
            assert np.linalg.norm(c.positions[i] - c.positions[j]) == pytest.approx(
                np.linalg.norm(ref[i] - ref[j]), abs=1e-12
            )
    with pytest.raises(InputError, match=r"must be >= 0.2 nm"):
        water_dimer_scan(distances_nm=[0.1])


def test_gfn2_water_dimer_scan_has_its_minimum_near_the_s22_distance() -> None:
    pytest.importorskip("xtb")
    from biomol_nnp.config import LabelSettings
    from biomol_nnp.qm.engine import create_engine

    engine = create_engine(LabelSettings(accuracy=0.1))
    configs = water_dimer_scan(distances_nm=[0.26, 0.29, 0.32, 0.38], angles_deg=[0.0])
    energies = [engine.compute(c.atomic_numbers, c.positions).energy for c in configs]
    assert int(np.argmin(energies)) == 1  # S22 O...O is 0.291 nm


def test_water_clusters_are_whole_compact_and_sized() -> None:
    configs = water_clusters(SOLVATED, sizes=[2, 5, 20], seed=1, point_charge_cutoff_nm=0.5)
    assert [c.n_atoms for c in configs] == [6, 15, 60]
    for c in configs:
        np.testing.assert_array_equal(c.atomic_numbers.reshape(-1, 3), np.tile([8, 1, 1], (c.n_atoms // 3, 1)))
        w = c.positions.reshape(-1, 3, 3)
        np.testing.assert_allclose(np.linalg.norm(w[:, 1:] - w[:, :1], axis=-1), 0.09572, atol=2e-3)
        # compact: every water is within 1 nm of the first (no periodic image far away)
        assert np.linalg.norm(w[:, 0] - w[0, 0], axis=-1).max() < 1.0
        assert c.n_mm > 0 and c.n_mm % 3 == 0 and c.mm_charges.sum() == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(InputError, match="cluster size 0"):
        water_clusters(SOLVATED, sizes=[0])


def test_carving_takes_whole_residues_and_refuses_cut_bonds() -> None:
    import openmm.app as app
    from openmm import NonbondedForce, unit

    pdb = app.PDBFile(str(SOLVATED))
    system = app.ForceField("amber14-all.xml", "amber14/tip3p.xml").createSystem(pdb.topology)
    nb = next(f for f in system.getForces() if isinstance(f, NonbondedForce))
    q = np.array(
        [nb.getParticleParameters(i)[0].value_in_unit(unit.elementary_charge) for i in range(system.getNumParticles())]
    )
    xyz = np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    box = np.asarray(pdb.topology.getPeriodicBoxVectors().value_in_unit(unit.nanometer))
    config = carve_region(pdb.topology, xyz, box, [0, 1, 2], q, cutoff_nm=0.6)
    assert config.n_atoms == 22 and config.total_charge == 0
    assert config.n_mm > 0 and config.n_mm % 3 == 0  # whole waters
    with pytest.raises(InputError, match=r"the region cuts the bond C\(ALA2\)-N\(NME3\); add residue 2"):
        carve_region(pdb.topology, xyz, box, [0, 1], q, cutoff_nm=0.6, link_atoms=False)
