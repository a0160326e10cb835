"""Alanine dipeptide in vacuum (amber14): C7ax minus C7eq free energy from metadynamics and from umbrella + MBAR.

Both estimates come from one run of this script, on the same System (``systems/alanine_dipeptide/vacuum.pdb``,
amber14-all, no cutoff, HBonds constraints, 300 K, Langevin 2 fs, 1/ps, Reference platform: fastest for 22 atoms):

- well-tempered metadynamics on phi and psi (2-D bias), free energy from the final bias;
- umbrella sampling along phi (harmonic windows over the circle), profile from MBAR (pymbar 4).

The basins are defined on phi alone, so the two methods integrate the same regions:
C7eq basin = -180 deg <= phi < 0, C7ax basin = 0 <= phi < 120 deg;
``dF = -kT ln( sum_C7ax exp(-F/kT) / sum_C7eq exp(-F/kT) )``. The target: the two agree within 0.5 kcal/mol.

Default run: metadynamics 1.5 ns (750k steps) + umbrella 24 windows x (4 ps equilibration + 60 ps) = 1.5 ns;
measured 5.5 min wall (10-15 min when busier) on 2 cores shared with ~7 other jobs.
Scale with ``--metad-steps``, ``--walkers`` (+ ``--workers`` for Dask),
``--windows`` and ``--window-steps``.

Writes ``benchmarks/results/ala2_free_energy.json`` and the FES plots under ``benchmarks/results/ala2_free_energy/``.

    python benchmarks/ala2_free_energy.py            # default run
    python benchmarks/ala2_free_energy.py --quick    # 2-minute smoke run (numbers not converged)
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import time
from pathlib import Path

from biomol_nnp.config import CVSettings, MetadynamicsSettings, SamplingSystemSettings, UmbrellaSettings
from biomol_nnp.io import write_json_atomic
from biomol_nnp.units import DEG_TO_RAD, KJ_TO_KCAL

RESULTS = Path(__file__).resolve().parent / "results"
PHI = CVSettings(name="phi", kind="torsion", atoms=[4, 6, 8, 14], width=0.35)
PSI = CVSettings(name="psi", kind="torsion", atoms=[6, 8, 14, 16], width=0.35)
C7EQ = (-math.pi, 0.0)
C7AX = (0.0, 120.0 * DEG_TO_RAD)
TOLERANCE_KCAL = 0.5


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metad-steps", type=int, default=750_000, help="metadynamics steps per walker (2 fs)")
    parser.add_argument("--walkers", type=int, default=1, help="metadynamics walkers sharing the bias")
    parser.add_argument("--workers", type=int, default=0, help="Dask worker processes (0: in this process)")
    parser.add_argument("--windows", type=int, default=24, help="umbrella windows along phi")
    parser.add_argument("--window-steps", type=int, default=30_000, help="sampling steps per window (2 fs)")
    parser.add_argument("--quick", action="store_true", help="short smoke run (numbers not converged)")
    parser.add_argument("--work", default="ala2_free_energy_work", help="scratch folder (resumable runs)")
    return parser.parse_args()


def umbrella_basins(settings: UmbrellaSettings, folder: Path) -> tuple[float, float]:
    """C7ax - C7eq straight from MBAR with the basins as its only bins (uncertainty of the difference), kJ/mol."""
    import numpy as np

    from biomol_nnp.sampling.umbrella import load_windows, mbar_profile

    centers, series = load_windows(settings, folder)
    edges = np.array([-math.pi, C7EQ[1], C7AX[1], math.pi])
    fes, _ = mbar_profile(centers, series, settings.force_constant, settings.temperature_k, edges, True)
    assert fes.uncertainty is not None and fes.free_energy[0] == 0.0, "C7eq is expected to be the lowest basin"
    return float(fes.free_energy[1]), float(fes.uncertainty[1])


def main() -> None:
    from biomol_nnp.sampling.metadynamics import run_metadynamics
    from biomol_nnp.sampling.umbrella import run_umbrella

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args()
    if args.quick:
        args.metad_steps, args.windows, args.window_steps = 100_000, 12, 5_000
    system = SamplingSystemSettings(kind="mm")
    common = dict(system=system, temperature_k=300.0, timestep_fs=2.0, friction_per_ps=1.0, platform="Reference")
    metad = MetadynamicsSettings(
        **common,
        cvs=[PHI, PSI],
        steps=args.metad_steps,
        bias_factor=10.0,
        height_kj_mol=2.0,
        frequency=250,
        save_frequency=25_000 if args.metad_steps % 25_000 == 0 else args.metad_steps,
        report_interval=250,
        walkers=args.walkers,
        workers=args.workers,
        fes_bins=36,
    )
    umbrella = UmbrellaSettings(
        **common,
        cv=PHI,
        windows=args.windows,
        force_constant=250.0,
        equilibration_steps=2_000,
        steps=args.window_steps,
        sample_interval=50,
        bins=36,
        workers=args.workers,
    )
    work = Path(args.work)
    start = time.perf_counter()
    metad_result = run_metadynamics(metad, work / "metad", progress=True)
    metad_seconds = time.perf_counter() - start
    start = time.perf_counter()
    umbrella_result = run_umbrella(umbrella, work / "umbrella", progress=True)
    umbrella_seconds = time.perf_counter() - start

    any_psi = (-math.pi, math.pi)
    surfaces = {
        "metadynamics_bias": (metad_result.fes, [C7EQ, any_psi], [C7AX, any_psi]),
        "metadynamics_reweighted": (metad_result.fes_reweighted, [C7EQ, any_psi], [C7AX, any_psi]),
        "umbrella_mbar": (umbrella_result.fes, [C7EQ], [C7AX]),
    }
    estimates: dict[str, tuple[float, float | None]] = {}
    for key, (fes, basin_a, basin_b) in surfaces.items():
        value, error = fes.basin_difference(basin_a, basin_b)
        estimates[key] = (value, error if fes.uncertainty is not None else None)
    estimates["umbrella_mbar_two_bins"] = umbrella_basins(umbrella, work / "umbrella")
    difference = estimates["metadynamics_bias"][0] - estimates["umbrella_mbar"][0]
    figures = RESULTS / "ala2_free_energy"
    figures.mkdir(parents=True, exist_ok=True)
    for source, name in (
        (work / "metad" / "fes.png", "metad_phi_psi.png"),
        (work / "metad" / "fes_reweighted.png", "metad_phi_psi_reweighted.png"),
        (work / "umbrella" / "profile.png", "umbrella_phi_mbar.png"),
        (work / "umbrella" / "windows.png", "umbrella_windows.png"),
        (work / "metad" / "fes.json", "metad_phi_psi.json"),
        (work / "umbrella" / "profile.json", "umbrella_phi_mbar.json"),
    ):
        shutil.copyfile(source, figures / name)
    result = {
        "system": "alanine dipeptide, vacuum, amber14-all, no cutoff, HBonds, 300 K, Langevin 1/ps, 2 fs, Reference",
        "basins": "C7eq: -180 <= phi < 0 deg; C7ax: 0 <= phi < 120 deg (psi integrated out)",
        "dF_C7ax_minus_C7eq_kj_mol": {key: {"value": v, "stderr": e} for key, (v, e) in estimates.items()},
        "dF_C7ax_minus_C7eq_kcal_mol": {
            key: {"value": v * KJ_TO_KCAL, "stderr": None if e is None else e * KJ_TO_KCAL}
            for key, (v, e) in estimates.items()
        },
        "stderr_note": "umbrella_mbar: MBAR analytical errors of the 36 bins propagated to the basins as if "
        "independent; umbrella_mbar_two_bins: MBAR with the two basins as bins, analytical error of the difference; "
        "metadynamics "
        "reweighted: standard error over 5 contiguous blocks of the basin difference; metadynamics bias: none "
        "estimated (compare the two metadynamics estimators)",
        "metad_minus_umbrella_kcal_mol": difference * KJ_TO_KCAL,
        "agree_within_0_5_kcal_mol": abs(difference * KJ_TO_KCAL) <= TOLERANCE_KCAL,
        "metadynamics": {
            "steps_per_walker": metad.steps,
            "walkers": metad.walkers,
            "simulated_ns": metad.steps * metad.walkers * metad.timestep_fs * 1e-6,
            "bias_factor": metad.bias_factor,
            "height_kj_mol": metad.height_kj_mol,
            "frequency_steps": metad.frequency,
            "width_rad": PHI.width,
            "md_wall_seconds": json.loads(metad_result.files["summary"].read_text())["md_wall_seconds_total"],
            "wall_seconds_this_invocation": metad_seconds,
        },
        "umbrella": {
            "windows": umbrella.windows,
            "force_constant_kj_mol_rad2": umbrella.force_constant,
            "steps_per_window": umbrella.steps,
            "equilibration_steps_per_window": umbrella.equilibration_steps,
            "simulated_ns": umbrella.windows * (umbrella.steps + umbrella.equilibration_steps) * 2e-6,
            "uncorrelated_samples_per_window": umbrella_result.samples_per_window,
            "md_wall_seconds": json.loads(umbrella_result.files["summary"].read_text())["md_wall_seconds_total"],
            "wall_seconds_this_invocation": umbrella_seconds,
        },
        "quick": args.quick,
    }
    path = write_json_atomic(RESULTS / "ala2_free_energy.json", result)
    print(f"wrote {path}")
    for key, (value, error) in estimates.items():
        spread = "" if error is None else f" +- {error * KJ_TO_KCAL:.2f}"
        print(f"{key:26s} dF(C7ax - C7eq) = {value * KJ_TO_KCAL:6.2f}{spread} kcal/mol")
    print(f"metadynamics - umbrella = {difference * KJ_TO_KCAL:+.2f} kcal/mol (target |.| <= {TOLERANCE_KCAL})")


if __name__ == "__main__":
    main()
