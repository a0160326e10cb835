"""Bad input to metadynamics/umbrella is refused before any simulation; free-energy files round-trip."""

from __future__ import annotations

import math

import numpy as np
import openmm
import pytest

from biomol_nnp.analysis.free_energy import FreeEnergySurface, histogram_fes, kt_kj_per_mol, load_fes, write_fes
from biomol_nnp.cli import main
from biomol_nnp.config import CVSettings, MetadynamicsSettings, SamplingSystemSettings, UmbrellaSettings
from biomol_nnp.exceptions import ConfigError, InputError
from biomol_nnp.sampling.cvs import check_atoms, cv_range, resolve_atoms
from biomol_nnp.sampling.metadynamics import grid_points, run_metadynamics
from biomol_nnp.sampling.systems import build_sampling_system, check_system_settings
from biomol_nnp.sampling.umbrella import run_umbrella

ALA2 = SamplingSystemSettings().pdb


def metad(**overrides) -> MetadynamicsSettings:
    values = dict(steps=1000, frequency=100, save_frequency=500, report_interval=50)
    values.update(overrides)
    return MetadynamicsSettings(**values)


def test_cv_atoms_that_do_not_exist(tmp_path):
    bad = metad(cvs=[CVSettings(name="phi", atoms=[4, 6, 8, 40])])
    with pytest.raises(InputError, match=r"cv 'phi': atoms \[40\] do not exist; the system has 22 atoms"):
        run_metadynamics(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before anything ran or was written


@pytest.mark.parametrize(
    ("kind", "atoms", "message"),
    [
        ("torsion", [4, 6, 8], r"a torsion needs 4 atoms, got 3"),
        ("torsion", [4, 6, 6, 8], r"a torsion needs 4 distinct atoms"),
        ("distance", [1, 2, 3], r"a distance needs 2 atoms"),
        ("distance", [-1, 2], r"atoms \[-1\] do not exist"),
    ],
)
def test_cv_atom_checks(kind, atoms, message):
    with pytest.raises(InputError, match=message):
        check_atoms("cv", kind, atoms, 22)


def test_cv_selections_must_pick_one_atom_each():
    names = ["resname ACE and name C", "resname ALA and name N", "resname ALA and name CA", "resname ALA and name C"]
    assert resolve_atoms(CVSettings(selections=names), ALA2, 22) == [4, 6, 8, 14]
    with pytest.raises(InputError, match=r"selection 'resname ALA' selects 10 atoms .* exactly one atom"):
        resolve_atoms(CVSettings(selections=["resname ALA", *names[1:]]), ALA2, 22)
    with pytest.raises(InputError, match=r"selects no atoms"):
        resolve_atoms(CVSettings(selections=["resname XYZ", *names[1:]]), ALA2, 22)
    with pytest.raises(ConfigError, match=r"give exactly one of `atoms`"):
        resolve_atoms(CVSettings(atoms=[4, 6, 8, 14], selections=names), ALA2, 22)


def test_grid_too_coarse_for_the_width(tmp_path):
    coarse = CVSettings(name="phi", atoms=[4, 6, 8, 14], width=0.35, grid_points=20)
    with pytest.raises(ConfigError, match=r"cv 'phi': bias grid of 20 points .* 1.06 points per Gaussian width"):
        run_metadynamics(metad(cvs=[coarse]), tmp_path / "out")
    assert grid_points(CVSettings(width=0.35), -math.pi, math.pi) == 91  # default: 5 per width
    assert grid_points(CVSettings(width=0.35, grid_points=37), -math.pi, math.pi) == 37


def test_settings_refused_before_running(tmp_path):
    distance = CVSettings(name="d", kind="distance", atoms=[5, 17], min_value=0.1, max_value=0.6, width=0.02)
    with pytest.raises(ConfigError, match=r"cvs mix torsions and distances, or full and partial torsion ranges"):
        run_metadynamics(metad(cvs=[CVSettings(atoms=[4, 6, 8, 14]), distance]), tmp_path / "a")
    with pytest.raises(ConfigError, match=r"save_frequency=550 is not a multiple of frequency=100"):
        run_metadynamics(metad(save_frequency=550, steps=1100), tmp_path / "b")
    with pytest.raises(ConfigError, match=r"steps=1200 is not a multiple of save_frequency=500; use steps=1000"):
        run_metadynamics(metad(steps=1200), tmp_path / "c")
    with pytest.raises(ConfigError, match=r"a distance needs min_value and max_value"):
        cv_range(CVSettings(kind="distance", atoms=[1, 2]))
    with pytest.raises(ConfigError, match=r"a torsion range must lie in \[-pi, pi\]"):
        cv_range(CVSettings(atoms=[4, 6, 8, 14], max_value=4.0))
    with pytest.raises(ConfigError, match=r"fewer than 10 samples per window"):
        run_umbrella(UmbrellaSettings(steps=100, sample_interval=50), tmp_path / "d")
    assert not any((tmp_path / name).exists() for name in "abcd")


def test_unknown_system_kind_and_missing_inputs(tmp_path):
    (tmp_path / "metad.yaml").write_text("system:\n  kind: quantum\n")
    with pytest.raises(ConfigError, match=r"system.kind\n.*Input should be 'mm', 'nnp' or 'refit'"):
        MetadynamicsSettings.from_yaml(tmp_path / "metad.yaml")
    assert main(["-q", "metad", str(tmp_path / "metad.yaml"), "-o", str(tmp_path / "out")]) == 2
    with pytest.raises(ConfigError, match=r"system.kind='nnp' needs system.model_path"):
        check_system_settings(SamplingSystemSettings(kind="nnp"))
    with pytest.raises(ConfigError, match=r"system.kind='refit' needs system.refit_xml"):
        check_system_settings(SamplingSystemSettings(kind="refit"))
    with pytest.raises(ConfigError, match=r"system.pdb '.*nothing.pdb' does not exist"):
        check_system_settings(SamplingSystemSettings(pdb=tmp_path / "nothing.pdb"))


def test_system_xml_of_another_size(tmp_path):
    system = openmm.System()
    system.addParticle(1.0)
    (tmp_path / "one.xml").write_text(openmm.XmlSerializer.serialize(system))
    with pytest.raises(InputError, match=r"has 1 particles but system.pdb .* has 22 atoms"):
        build_sampling_system(SamplingSystemSettings(system_xml=tmp_path / "one.xml"))


def test_fes_files_round_trip_and_basin_difference(tmp_path):
    """Two-level surface: F_B - F_A = -kT ln(n_B e^{-f/kT} / n_A) exactly; JSON/CSV keep NaN and shape."""
    kt = kt_kj_per_mol(300.0)
    x, y = np.linspace(-3.0, 3.0, 6), np.linspace(-3.0, 3.0, 4)
    energy = np.where(x[:, None] < 0, 0.0, 4.0) + 0.0 * y[None, :]
    energy[5, 3] = np.nan
    fes = FreeEnergySurface.from_values(["phi", "psi"], ["torsion", "torsion"], [x, y], energy, None, 300.0, "t")
    value, _ = fes.basin_difference([(-4.0, 0.0), (-4.0, 4.0)], [(0.0, 4.0), (-4.0, 4.0)])
    assert value == pytest.approx(-kt * math.log(11 * math.exp(-4.0 / kt) / 12))
    files = write_fes(fes, tmp_path, "fes")
    back = load_fes(files["fes_json"])
    assert back.free_energy.shape == (6, 4) and np.isnan(back.free_energy[5, 3])
    assert np.allclose(back.free_energy[:5], energy[:5])
    assert len((tmp_path / "fes.csv").read_text().splitlines()) == 1 + 24
    with pytest.raises(InputError, match=r"contains no sampled grid point"):
        fes.basin_difference([(5.0, 6.0), (-4.0, 4.0)], [(0.0, 4.0), (-4.0, 4.0)])


def test_histogram_fes_of_gaussian_samples():
    """Normal samples of sd s: F = x^2 kT / (2 s^2) within the block errors."""
    rng = np.random.default_rng(1)
    samples = rng.normal(0.0, 0.1, size=(200_000, 1))
    edges = [np.linspace(-0.2, 0.2, 21)]
    fes = histogram_fes(samples, None, edges, 300.0, ["x"], ["distance"])
    exact = kt_kj_per_mol(300.0) * fes.axes[0] ** 2 / (2 * 0.01)
    deviation = fes.free_energy - exact
    deviation -= deviation.mean()
    assert np.max(np.abs(deviation)) < 0.1
    assert np.all(np.abs(deviation) < 5 * fes.uncertainty + 0.02)


def test_basin_difference_block_error_of_a_two_state_histogram():
    """iid samples, 30 % in B: dF = -kT ln(0.3/0.7) within 4 block errors; the error matches the binomial one."""
    rng = np.random.default_rng(2)
    n, p = 100_000, 0.3
    samples = np.where(rng.uniform(size=n) < p, rng.uniform(0.5, 1.0, n), rng.uniform(-1.0, -0.5, n))[:, None]
    fes = histogram_fes(samples, None, [np.linspace(-1.0, 1.0, 9)], 300.0, ["x"], ["distance"], n_blocks=10)
    kt = kt_kj_per_mol(300.0)
    value, error = fes.basin_difference([(-1.0, 0.0)], [(0.0, 1.0)])
    assert abs(value + kt * math.log(p / (1 - p))) < 4 * error
    binomial = kt / math.sqrt(n * p * (1 - p))
    assert 0.5 * binomial < error < 2.0 * binomial


def test_partial_torsion_range_is_not_periodic():
    from biomol_nnp.sampling.cvs import spans_circle

    assert spans_circle(CVSettings(atoms=[4, 6, 8, 14]))
    assert not spans_circle(CVSettings(atoms=[4, 6, 8, 14], min_value=-math.pi, max_value=0.0))
    assert not spans_circle(CVSettings(kind="distance", atoms=[1, 2], min_value=0.1, max_value=0.5))
