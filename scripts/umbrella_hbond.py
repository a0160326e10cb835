"""Umbrella sampling of the C7eq backbone hydrogen bond of alanine dipeptide (ACE O ... NME H-N), MBAR profile.

    python scripts/umbrella_hbond.py                       # amber14, vacuum, 12 windows x 20 ps (4.5 min, busy 2 cores)
    python scripts/umbrella_hbond.py --model model.pt      # NNP/MM (the dipeptide is the ML region)
    python scripts/umbrella_hbond.py --workers 2           # windows as Dask tasks on 2 processes

Arguments
---------
--model PATH      deployed model.pt; without it amber14 (--refit PATH: a refitted ffxml ahead of amber14).
--solvated        the dipeptide in TIP3P (PME) instead of vacuum: water competes for the H-bond.
--windows N       windows between --min and --max (nm, default 0.17-0.50 nm O...H).
--steps N         sampling steps per window (default 10000 = 20 ps at 2 fs; NNP/MM uses 1 fs).
--force-constant  restraint constant, kJ/mol/nm^2 (default 2000: sd 0.035 nm at 300 K).
--workers K       run windows as Dask tasks (--scheduler ADDRESS for a cluster).
--output DIR      output folder (default umbrella_hbond); a rerun skips finished windows.

Scaling: errors shrink as 1/sqrt(steps); the printed MBAR uncertainty says when it is enough. Double
--windows when windows.png shows gaps between neighbouring histograms. NNP/MM: start with --steps 2000.
Outputs: profile.png (free energy with its MBAR error band), windows.png (overlap), profile.json/.csv.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from biomol_nnp.config import CVSettings, UmbrellaSettings
from biomol_nnp.logging_setup import configure_logging
from biomol_nnp.sampling.script_args import add_dipeptide_arguments, dipeptide_platform, dipeptide_system
from biomol_nnp.sampling.umbrella import run_umbrella
from biomol_nnp.units import KJ_TO_KCAL

HBOND = ["resname ACE and name O", "resname NME and name H"]
"""Acceptor O of the acetyl cap and the amide H of the N-methyl cap: the C7 ring hydrogen bond."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dipeptide_arguments(parser)
    parser.add_argument("--windows", type=int, default=12, help="umbrella windows")
    parser.add_argument("--min", type=float, default=0.17, help="first window centre, nm")
    parser.add_argument("--max", type=float, default=0.50, help="last window centre, nm")
    parser.add_argument("--steps", type=int, default=10_000, help="sampling steps per window")
    parser.add_argument("--force-constant", type=float, default=2000.0, help="kJ/mol/nm^2")
    parser.add_argument("--output", type=Path, default=Path("umbrella_hbond"), help="output folder")
    args = parser.parse_args()
    configure_logging()

    system = dipeptide_system(args)
    kind = system.kind
    nnp = kind == "nnp"
    settings = UmbrellaSettings(
        system=system,
        cv=CVSettings(name="O_H", kind="distance", selections=HBOND, min_value=args.min, max_value=args.max),
        windows=args.windows,
        force_constant=args.force_constant,
        steps=args.steps,
        equilibration_steps=1_000,
        sample_interval=20,
        bins=33,
        timestep_fs=1.0 if nnp else 2.0,
        workers=args.workers,
        scheduler_address=args.scheduler,
        platform=dipeptide_platform(args),
    )
    result = run_umbrella(settings, args.output, progress=True)
    value, error = result.fes.basin_difference([(0.0, 0.25)], [(0.35, args.max + 1.0)])
    print(f"{kind}: {settings.windows} windows x {settings.steps} steps; profile in {args.output}/profile.png")
    print(
        f"F(open, O...H > 0.35 nm) - F(H-bonded, < 0.25 nm) = {value * KJ_TO_KCAL:.2f} +- "
        f"{error * KJ_TO_KCAL:.2f} kcal/mol"
    )


if __name__ == "__main__":
    main()
