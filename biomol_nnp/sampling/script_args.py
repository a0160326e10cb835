"""Command-line arguments shared by the alanine-dipeptide sampling scripts.

``scripts/metad_alanine_dipeptide.py`` and ``scripts/umbrella_hbond.py`` choose the simulated System
(amber14, a refitted force field, or NNP/MM with a deployed model; vacuum or solvated) and the Dask
workers the same way:

>>> parser = argparse.ArgumentParser()
>>> add_dipeptide_arguments(parser)
>>> args = parser.parse_args(["--solvated"])
>>> dipeptide_system(args).kind, dipeptide_system(args).pdb.name
('mm', 'solvated.pdb')
"""

from __future__ import annotations

import argparse
from pathlib import Path

from biomol_nnp.config import SYSTEMS_DIR, SamplingSystemSettings


def add_dipeptide_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--model``, ``--refit``, ``--solvated`` (the System) and ``--workers``, ``--scheduler`` (Dask)."""
    parser.add_argument("--model", type=Path, help="deployed model.pt (NNP/MM); default: amber14 only")
    parser.add_argument("--refit", type=Path, help="refitted ffxml loaded ahead of amber14")
    parser.add_argument("--solvated", action="store_true", help="solvated dipeptide (PME) instead of vacuum")
    parser.add_argument("--workers", type=int, default=0, help="Dask worker processes (0: in this process)")
    parser.add_argument("--scheduler", help="Dask scheduler address (tcp://host:8786)")


def dipeptide_system(args: argparse.Namespace) -> SamplingSystemSettings:
    """The System of :func:`add_dipeptide_arguments`.

    Its kind is ``nnp`` with ``--model``, else ``refit`` with ``--refit`` (ignored with ``--model``),
    else ``mm``. The dipeptide is ``systems/alanine_dipeptide/solvated.pdb`` with ``--solvated``, else
    ``vacuum.pdb``.
    """
    pdb = SYSTEMS_DIR / "alanine_dipeptide" / ("solvated.pdb" if args.solvated else "vacuum.pdb")
    kind = "nnp" if args.model else "refit" if args.refit else "mm"
    return SamplingSystemSettings(
        kind=kind, pdb=pdb, model_path=args.model, refit_xml=[args.refit] if args.refit and not args.model else []
    )


def dipeptide_platform(args: argparse.Namespace) -> str:
    """OpenMM platform of the run: ``CPU`` for solvated or NNP/MM runs, ``Reference`` for small vacuum MM."""
    return "CPU" if args.solvated or args.model else "Reference"
