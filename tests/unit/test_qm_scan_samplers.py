"""Relaxed torsion-scan and NMA hydrogen-bond dimer samplers, and `biomol-nnp sample --kind` for them."""

import numpy as np
import pytest

from biomol_nnp.cli import main
from biomol_nnp.config import SYSTEMS_DIR, LabelSettings, PipelineSettings
from biomol_nnp.exceptions import InputError
from biomol_nnp.qm.configurations import read_configurations
from biomol_nnp.qm.labeling import label_configurations
from biomol_nnp.qm.labels import LabelStore
from biomol_nnp.qm.scans import HBOND_DIMERS, hbond_dimer_scan
from biomol_nnp.qm.torsion_scans import dipeptide_torsion_scan, dipeptide_torsion_scan_2d
from forcefield_refit.profiles import dihedral, dihedral_gradient

ALA = SYSTEMS_DIR / "alanine_dipeptide" / "vacuum.pdb"
PHI, PSI = (4, 6, 8, 14), (6, 8, 14, 16)  # C(ACE)-N-CA-C and N-CA-C-N(NME) of the shipped ACE-ALA-NME


def _mm_energy(pdb):
    from forcefield_refit.energy import openmm_energy_function
    from forcefield_refit.molecules import load_molecule

    molecule = load_molecule(pdb)
    return openmm_energy_function(molecule.system(["amber14-all.xml"])), molecule


def _bond_lengths(xyz: np.ndarray, bonds) -> np.ndarray:
    return np.array([np.linalg.norm(xyz[i] - xyz[j]) for i, j in bonds])


def test_1d_torsion_scan_reaches_targets_relaxes_and_keeps_bonds() -> None:
    energy, molecule = _mm_energy(ALA)
    targets = [-150.0, -60.0, 60.0]
    configs = dipeptide_torsion_scan(ALA, "phi", targets, trajectory_id=3)
    assert [c.frame for c in configs] == [0, 1, 2]
    assert {c.source for c in configs} == {"torsion-scan-ala-phi"}
    assert {c.trajectory_id for c in configs} == {3}
    reference = _bond_lengths(molecule.positions, molecule.bonds)
    for config, target in zip(configs, targets, strict=True):
        assert config.total_charge == 0 and config.n_mm == 0 and config.n_atoms == 22
        assert np.degrees(dihedral(config.positions, PHI)) == pytest.approx(target, abs=2.0)
        np.testing.assert_allclose(_bond_lengths(config.positions, molecule.bonds), reference, atol=0.01)
        # relaxed: the MM forces balance the restraint's (k = 2000 kJ/mol/rad^2), nothing else is left
        delta = np.radians(np.degrees(dihedral(config.positions, PHI)) - target)
        gradient = -energy(config.positions)[1]
        gradient[list(PHI)] += 2000.0 * delta * dihedral_gradient(config.positions, PHI)
        assert np.abs(gradient).max() < 5.0  # kJ/mol/nm (unrelaxed MM forces here are ~10^3)
    # the relaxed energies are far below the start geometry rotated rigidly would give (minimised)
    assert energy(configs[1].positions)[0] < energy(molecule.positions)[0]


def test_torsion_scan_uses_the_energy_callable_given() -> None:
    energy, _ = _mm_energy(ALA)
    calls = []

    def counting(positions: np.ndarray) -> tuple[float, np.ndarray]:
        calls.append(1)
        return energy(positions)

    given = dipeptide_torsion_scan(ALA, "psi", [150.0, -45.0], energy_fn=counting)
    default = dipeptide_torsion_scan(ALA, "psi", [150.0, -45.0])
    assert len(calls) > 10
    for a, b in zip(given, default, strict=True):
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-8)
    # a flat surface: only the restraint acts, so the rest of the molecule moves rigidly
    flat = dipeptide_torsion_scan(ALA, "psi", [100.0], energy_fn=lambda x: (0.0, np.zeros_like(x)))
    assert np.degrees(dihedral(flat[0].positions, PSI)) == pytest.approx(100.0, abs=0.5)


def test_2d_torsion_scan_covers_the_phi_psi_grid() -> None:
    pdb = SYSTEMS_DIR / "dipeptides" / "ala.pdb"
    configs = dipeptide_torsion_scan_2d(pdb, 4, max_iterations=150, trajectory_id=1)
    assert len(configs) == 16 and [c.frame for c in configs] == list(range(16))
    assert {c.source for c in configs} == {"torsion-scan-2d-ala"}
    def cell(c, quad) -> int:
        return round(np.degrees(dihedral(c.positions, quad)) / 90.0) % 4

    achieved = {(cell(c, PHI), cell(c, PSI)) for c in configs}
    assert achieved == {(i, j) for i in range(4) for j in range(4)}  # every grid cell, within 45 deg


def test_torsion_scan_refuses_bad_input() -> None:
    with pytest.raises(InputError, match=r"dihedral 'chi1' is not defined for residue GLY"):
        dipeptide_torsion_scan(SYSTEMS_DIR / "dipeptides" / "gly.pdb", "chi1", [0.0])
    with pytest.raises(InputError, match=r"nma.pdb'.*allowed: ACE-X-NME"):
        dipeptide_torsion_scan(SYSTEMS_DIR / "nma" / "nma.pdb", "phi", [0.0])
    with pytest.raises(InputError, match="does not exist"):
        dipeptide_torsion_scan("missing.pdb", "phi", [0.0])
    with pytest.raises(InputError, match="n_grid = 5; the 2-D grid needs an even number"):
        dipeptide_torsion_scan_2d(ALA, 5)
    with pytest.raises(InputError, match="angles_deg"):
        dipeptide_torsion_scan(ALA, "phi", [])


@pytest.mark.parametrize("name", sorted(HBOND_DIMERS))
def test_hbond_dimer_scan_places_rigid_monomers_on_the_grid(name: str) -> None:
    spec = HBOND_DIMERS[name]
    distances = [0.27, 0.30, 0.36]
    configs = hbond_dimer_scan(name, distances, [-20.0, 0.0], trajectory_offset=5)
    assert len(configs) == 6 and {c.source for c in configs} == {f"hbond-{name}"}
    assert {c.trajectory_id for c in configs} == {5, 6}
    n_donor = {"water": 3, "nma": 12}[spec.donor]
    d_index, h_index, _ = spec.donor_atoms
    a_index = n_donor + spec.acceptor_atom
    first = configs[0].positions
    for c in configs:
        assert c.total_charge == 0 and c.multiplicity == 1
        x = c.positions
        assert np.linalg.norm(x[a_index] - x[d_index]) == pytest.approx(distances[c.frame], abs=1e-9)
        for part in (slice(0, n_donor), slice(n_donor, None)):  # rigid monomers
            internal = np.linalg.norm(x[part][:, None] - x[part][None], axis=-1)
            reference = np.linalg.norm(first[part][:, None] - first[part][None], axis=-1)
            np.testing.assert_allclose(internal, reference, atol=1e-9)
        u, v = x[d_index] - x[h_index], x[a_index] - x[h_index]
        angle = np.degrees(np.arccos(np.clip(u @ v / np.linalg.norm(u) / np.linalg.norm(v), -1.0, 1.0)))
        if c.trajectory_id == 6:  # bend 0: a linear D-H...A hydrogen bond
            assert angle == pytest.approx(180.0, abs=1e-6)
        else:
            assert angle < 175.0


def test_hbond_dimer_scan_refuses_bad_input() -> None:
    with pytest.raises(InputError, match=r"unknown H-bond dimer 'nma-urea'; valid dimers: nma-water, water-nma"):
        hbond_dimer_scan("nma-urea")
    with pytest.raises(InputError, match=r"must be >= 0.2 nm"):
        hbond_dimer_scan("nma-nma", [0.1])


def test_sample_cli_writes_scan_configurations_that_xtb_labels(tmp_path) -> None:
    pytest.importorskip("xtb")
    settings = PipelineSettings()
    sampling = settings.sampling
    sampling.torsion_scan_dihedrals = ["phi", "psi"]
    sampling.torsion_scan_step_deg = 120.0
    sampling.torsion_scan_2d_points = 4
    sampling.torsion_scan_max_iterations = 100
    sampling.hbond_distances_nm = [0.29, 0.34]
    sampling.hbond_angles_deg = [0.0]
    config = settings.to_yaml(tmp_path / "settings.yaml")
    expected = {
        "torsion-scan": (6, {"torsion-scan-ala-phi", "torsion-scan-ala-psi"}),
        "torsion-scan-2d": (16, {"torsion-scan-2d-ala"}),
        "nma-water-scan": (4, {"hbond-nma-water", "hbond-water-nma"}),
        "nma-nma-scan": (2, {"hbond-nma-nma"}),
    }
    picked = []
    for kind, (count, sources) in expected.items():
        path = tmp_path / f"{kind}.h5"
        assert main(["--no-progress", "-q", "sample", "-c", str(config), "-o", str(path), "--kind", kind]) == 0
        configs = read_configurations(path)
        assert len(configs) == count and {c.source for c in configs} == sources
        assert len({(c.source, c.trajectory_id, c.frame) for c in configs}) == count
        picked.append(configs[-1])
    with pytest.raises(SystemExit):
        main(["sample", "--kind", "torsion-scan-3d"])
    # a torsion-scan geometry and an NMA-water dimer are valid xtb inputs
    store = tmp_path / "labels.h5"
    report = label_configurations([picked[0], picked[2]], store, LabelSettings(workers=0))
    assert (report.n_ok, report.n_failed) == (2, 0)
    records = LabelStore(store).load_training_arrays()
    assert [r.atomic_numbers.size for r in records] == [22, 15]
    for record in records:
        assert record.charges.sum() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("pdb", sorted((SYSTEMS_DIR / "dipeptides").glob("*.pdb")), ids=lambda p: p.stem)
def test_every_shipped_dipeptide_scans(pdb) -> None:
    (config,) = dipeptide_torsion_scan(pdb, "psi", [120.0], max_iterations=50)
    assert config.source == f"torsion-scan-{pdb.stem}-psi" and config.total_charge == 0
    assert np.all(np.isfinite(config.positions))
