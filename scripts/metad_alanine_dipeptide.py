"""Phi/psi well-tempered metadynamics of alanine dipeptide: NNP/MM with a deployed model, or amber14 without one.

    python scripts/metad_alanine_dipeptide.py                        # amber14, vacuum, 400 ps (5 min on busy 2 cores)
    python scripts/metad_alanine_dipeptide.py --model model.pt       # NNP/MM: the dipeptide is the ML region
    python scripts/metad_alanine_dipeptide.py --model model.pt --solvated --steps 20000   # in TIP3P (PME)

Arguments
---------
--model PATH     deployed model.pt (`biomol-nnp train`); the ACE-ALA-NME residues become the ML region
                 (electrostatic embedding). Without it: pure amber14.
--refit PATH     refitted ffxml (`biomol-nnp refit`) loaded ahead of amber14 (ignored with --model).
--solvated       systems/alanine_dipeptide/solvated.pdb (PME, TIP3P) instead of the vacuum structure.
--steps N        MD steps per walker (default 200000 = 400 ps at 2 fs; NNP/MM uses 1 fs).
--walkers W      walkers sharing one bias; --workers K runs them as Dask tasks on K processes
                 (--scheduler ADDRESS for a cluster).
--output DIR     output folder (default metad_ala2); running again resumes from its bias and states.

Scaling: the C7ax/C7eq free-energy difference needs ~1.5 ns of amber14 metadynamics to settle within
~0.5 kcal/mol (benchmarks/ala2_free_energy.py); spread that over walkers (--walkers 4 --workers 4). NNP/MM runs
at the model's speed (ms per step), so start with --steps 20000 and add walkers on more cores.
Outputs: fes.png (phi/psi free energy from the bias), fes_reweighted.png (with block errors), fes.json/.csv.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from biomol_nnp.config import CVSettings, MetadynamicsSettings
from biomol_nnp.logging_setup import configure_logging
from biomol_nnp.sampling.metadynamics import run_metadynamics
from biomol_nnp.sampling.script_args import add_dipeptide_arguments, dipeptide_platform, dipeptide_system
from biomol_nnp.units import DEG_TO_RAD, KJ_TO_KCAL

PHI = CVSettings(name="phi", kind="torsion", atoms=[4, 6, 8, 14], width=0.35)
PSI = CVSettings(name="psi", kind="torsion", atoms=[6, 8, 14, 16], width=0.35)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dipeptide_arguments(parser)
    parser.add_argument("--steps", type=int, default=200_000, help="MD steps per walker")
    parser.add_argument("--walkers", type=int, default=1, help="walkers sharing the bias")
    parser.add_argument("--output", type=Path, default=Path("metad_ala2"), help="output folder")
    args = parser.parse_args()
    configure_logging()

    system = dipeptide_system(args)
    kind = system.kind
    nnp = kind == "nnp"
    save = 2_000 if nnp else 20_000
    settings = MetadynamicsSettings(
        system=system,
        cvs=[PHI, PSI],
        steps=max(args.steps // save, 1) * save,
        timestep_fs=1.0 if nnp else 2.0,
        bias_factor=10.0,
        height_kj_mol=2.0,
        frequency=250,
        save_frequency=save,
        report_interval=250,
        walkers=args.walkers,
        workers=args.workers,
        scheduler_address=args.scheduler,
        platform=dipeptide_platform(args),
        fes_bins=36,
    )
    result = run_metadynamics(settings, args.output, progress=True)
    any_psi = (-math.pi, math.pi)
    value, _ = result.fes.basin_difference([(-math.pi, 0.0), any_psi], [(0.0, 120 * DEG_TO_RAD), any_psi])
    print(f"{kind}: {settings.walkers} walker(s) x {settings.steps} steps; FES in {args.output}/fes.png")
    print(f"F(C7ax basin, 0<phi<120) - F(C7eq basin, phi<0) = {value * KJ_TO_KCAL:.2f} kcal/mol (from the bias)")


if __name__ == "__main__":
    main()
