"""Umbrella sampling + MBAR: analytic profile of a harmonic pair, periodic torsion windows, resume, all kinds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from biomol_nnp.analysis.free_energy import kt_kj_per_mol, load_fes
from biomol_nnp.config import SYSTEMS_DIR, CVSettings, SamplingSystemSettings, UmbrellaSettings
from biomol_nnp.sampling.umbrella import cv_deviation, mbar_profile, run_umbrella, window_centers
from tests.physics.test_metadynamics import analytic_pair_fes, write_pair_system


def pair_umbrella(tmp_path, **overrides) -> UmbrellaSettings:
    values = dict(
        system=write_pair_system(tmp_path),
        cv=CVSettings(name="r", kind="distance", atoms=[0, 1], min_value=0.35, max_value=0.65),
        windows=7,
        force_constant=3000.0,
        steps=8_000,
        equilibration_steps=500,
        sample_interval=20,
        bins=15,
        timestep_fs=2.0,
        friction_per_ps=5.0,
        platform="Reference",
    )
    values.update(overrides)
    return UmbrellaSettings(**values)


def test_harmonic_pair_profile_matches_analytic(tmp_path):
    """7 windows x 16 ps along r: the MBAR profile equals 0.5 K (r - r0)^2 - 2 kT ln r within its errors.

    Compared where the exact F is below 10 kJ/mol (r0 +- 0.14 nm, edge bins excluded)."""
    result = run_umbrella(pair_umbrella(tmp_path), tmp_path / "run")
    fes = load_fes(result.files["profile_json"])  # the written file, reloaded
    assert np.all(np.isfinite(fes.free_energy))
    exact = analytic_pair_fes(fes.axes[0])
    region = exact < 10.0
    deviation = fes.free_energy[region] - exact[region]
    deviation -= deviation.mean()
    assert region.sum() >= 11
    assert np.max(np.abs(deviation)) < 1.0
    assert np.all(np.abs(deviation) < 4.0 * fes.uncertainty[region] + 0.3)
    assert np.max(fes.uncertainty[region]) < 1.0 and min(result.samples_per_window) > 50
    summary = json.loads(result.files["summary"].read_text())
    assert summary["windows"] == 7 and (tmp_path / "run" / "windows.png").stat().st_size > 1000


def test_finished_windows_are_not_rerun(tmp_path):
    """A rerun reads the finished windows back (same profile); a deleted window is simulated again."""
    settings = pair_umbrella(tmp_path, windows=4, steps=2000, equilibration_steps=0, bins=8)
    first = run_umbrella(settings, tmp_path / "run")
    stamp = (tmp_path / "run" / "windows" / "window_1.npz").stat().st_mtime_ns
    (tmp_path / "run" / "windows" / "window_2.npz").unlink()
    second = run_umbrella(settings, tmp_path / "run")
    assert (tmp_path / "run" / "windows" / "window_1.npz").stat().st_mtime_ns == stamp
    assert (tmp_path / "run" / "windows" / "window_2.npz").is_file()
    assert first.fes.free_energy.shape == second.fes.free_energy.shape


def test_periodic_windows_and_deviation():
    """A full torsion circle gets distinct centres; deviations wrap across +-pi."""
    centers = window_centers(UmbrellaSettings(windows=4))
    assert np.allclose(centers, [-np.pi, -np.pi / 2, 0.0, np.pi / 2])
    assert np.isclose(cv_deviation(np.array([3.0]), -3.0, True)[0], 6.0 - 2 * np.pi)
    assert np.isclose(cv_deviation(np.array([3.0]), -3.0, False)[0], 6.0)


def test_mbar_recovers_a_periodic_profile_from_exact_samples():
    """Windows sampled exactly (rejection sampling) from F(x) = A cos(x) biased: MBAR returns A cos(x)."""
    rng = np.random.default_rng(0)
    temperature, amplitude, k = 300.0, 5.0, 20.0
    kt = kt_kj_per_mol(temperature)
    centers = np.linspace(-np.pi, np.pi, 12, endpoint=False)
    series = []
    for center in centers:
        x = rng.uniform(-np.pi, np.pi, 200_000)
        energy = amplitude * np.cos(x) + 0.5 * k * cv_deviation(x, center, True) ** 2
        keep = rng.uniform(size=x.size) < np.exp(-(energy - energy.min()) / kt)
        series.append(x[keep][:1500])
    edges = np.linspace(-np.pi, np.pi, 25)
    fes, _ = mbar_profile(centers, series, k, temperature, edges, True, "x", "torsion")
    exact = amplitude * np.cos(fes.axes[0])
    deviation = fes.free_energy - exact
    deviation -= deviation.mean()
    assert np.max(np.abs(deviation)) < 0.5


@pytest.mark.parametrize("kind", ["mm", "nnp"])
def test_dipeptide_phi_windows(kind, tmp_path):
    """Umbrella windows along phi of the dipeptide (atoms by MDAnalysis selections), MM and NNP/MM (toy model).

    MM: every window's samples sit near its centre (restraint sd ~0.07 rad). NNP/MM: a smoke run to a profile.
    """
    from tests.toy_models import make_toy_model

    system = SamplingSystemSettings(kind=kind, pdb=SYSTEMS_DIR / "alanine_dipeptide" / "vacuum.pdb")
    if kind == "nnp":
        system.model_path = make_toy_model(tmp_path / "toy.pt")
    names = ["resname ACE and name C", "resname ALA and name N", "resname ALA and name CA", "resname ALA and name C"]
    settings = UmbrellaSettings(
        system=system,
        cv=CVSettings(name="phi", kind="torsion", selections=names),
        windows=4,
        force_constant=500.0,
        steps=200 if kind == "mm" else 100,
        equilibration_steps=50,
        sample_interval=10,
        bins=8,
        timestep_fs=1.0,
        minimize_iterations=200 if kind == "mm" else 20,
        platform="Reference",
    )
    result = run_umbrella(settings, tmp_path / "run")
    assert np.isfinite(result.fes.free_energy).any()
    if kind == "mm":
        for window, center in enumerate(result.centers):
            values = np.load(tmp_path / "run" / "windows" / f"window_{window}.npz")["cv"]
            assert np.max(np.abs(cv_deviation(values, center, True))) < 0.6


def test_cli_umbrella_reads_its_yaml(tmp_path):
    """`biomol-nnp umbrella CONFIG -n N`: the YAML written by the settings runs through the CLI to a profile."""
    from biomol_nnp.cli import main

    pair_umbrella(tmp_path, windows=3, steps=5000, bins=6).to_yaml(tmp_path / "us.yaml")
    assert (
        main(["-q", "--no-progress", "umbrella", str(tmp_path / "us.yaml"), "-o", str(tmp_path / "out"), "-n", "400"])
        == 0
    )
    assert json.loads((tmp_path / "out" / "umbrella.json").read_text())["steps_per_window"] == 400
    assert load_fes(tmp_path / "out" / "profile.json").free_energy.shape == (6,)
