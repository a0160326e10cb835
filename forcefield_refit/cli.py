"""Command line.

- ``forcefield-refit torsions|cmap|hbonds SETTINGS.yaml``: the full workflows (scan with a reference
  energy, fit, write every requested format, one plot per profile, a JSON report); settings models in
  :mod:`forcefield_refit.settings`, library entry points in :mod:`forcefield_refit.workflows`.
- ``forcefield-refit fit PROFILE --types C N CX C --periodicities 1 2 3 --frcmod out.frcmod``: fit one
  precomputed 1-D profile.

:func:`main` parses arguments and calls :func:`run` / :func:`run_workflow`, the library entry points tests
call in-process.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from threadpoolctl import threadpool_limits

from forcefield_refit.atom_types import DEFAULT_OPENMM_PREFIX, openmm_type_name
from forcefield_refit.exceptions import RefitInputError
from forcefield_refit.plots import plot_torsion_fit
from forcefield_refit.profile_io import read_profile
from forcefield_refit.torsions import FourierTorsion, fit_fourier
from forcefield_refit.writers.amber_frcmod import write_frcmod
from forcefield_refit.writers.openmm_xml import write_ffxml

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


@dataclass
class FitOutputs:
    """What :func:`run` produced.

    Attributes
    ----------
    torsion : FourierTorsion
        Fitted series (OpenMM type names, k in kJ/mol, phase in degrees).
    frcmod, ffxml, plot : pathlib.Path or None
        Files written (``None`` when not requested).
    """

    torsion: FourierTorsion
    frcmod: Path | None = None
    ffxml: Path | None = None
    plot: Path | None = None


def run(
    profile: PathLike,
    types: Sequence[str],
    periodicities: Sequence[int] = (1, 2, 3),
    frcmod: PathLike | None = None,
    ffxml: PathLike | None = None,
    plot: PathLike | None = None,
    type_prefix: str = DEFAULT_OPENMM_PREFIX,
    title: str = "",
    overwrite: bool = False,
) -> FitOutputs:
    """Fit a Fourier series to a profile file and write the requested outputs.

    Parameters
    ----------
    profile : str or PathLike
        CSV/JSON with ``angle_deg`` and ``target_kj`` (or ``model_kj`` and ``baseline_kj``), degrees, kJ/mol.
    types : sequence of 4 str
        Amber atom types (``C N CX C``) or OpenMM amber14 names (``protein-C ...``).
    periodicities : sequence of int
        Periodicities to fit.
    frcmod, ffxml, plot : str or PathLike, optional
        Output files (Amber frcmod, OpenMM ffxml, PNG).
    type_prefix : str
        Prefix that turns Amber types into OpenMM type names for the ffxml (``protein-`` for ff14SB).
    title : str
        Title for the frcmod and the plot.
    overwrite : bool
        Replace existing output files.

    Returns
    -------
    FitOutputs
    """
    if len(types) != 4:
        raise RefitInputError(
            f"types={list(types)}; allowed: exactly four atom types. Hint: --types C N CX C."
        )
    angles, target = read_profile(profile)
    openmm_types = tuple(openmm_type_name(t, type_prefix) for t in types)
    torsion = fit_fourier(angles, target, periodicities, types=openmm_types)  # type: ignore[arg-type]
    outputs = FitOutputs(torsion=torsion)
    if frcmod is not None:
        outputs.frcmod = write_frcmod(frcmod, [torsion], title=title, overwrite=overwrite)
    if ffxml is not None:
        outputs.ffxml = write_ffxml(ffxml, [torsion], overwrite=overwrite)
    if plot is not None:
        outputs.plot = plot_torsion_fit(plot, angles, target, torsion, title=title)
    logger.info(
        "fit %s: RMSE %.4f kJ/mol; wrote frcmod=%s ffxml=%s plot=%s",
        "-".join(types),
        torsion.fit_rmse_kj,
        outputs.frcmod,
        outputs.ffxml,
        outputs.plot,
    )
    return outputs


def build_parser() -> argparse.ArgumentParser:
    """Argument parser for ``forcefield-refit``."""
    parser = argparse.ArgumentParser(prog="forcefield-refit", description=__doc__)
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="fit a Fourier torsion series to a profile and write parameter files")
    fit.add_argument("profile", help="CSV/JSON: angle_deg + target_kj (or model_kj + baseline_kj)")
    fit.add_argument("--types", nargs=4, required=True, metavar="TYPE", help="atom types, e.g. C N CX C")
    fit.add_argument("--periodicities", nargs="+", type=int, default=[1, 2, 3], help="default: 1 2 3")
    fit.add_argument("--frcmod", help="write an Amber frcmod here")
    fit.add_argument("--ffxml", help="write an OpenMM ffxml here (load it before the base force field)")
    fit.add_argument("--plot", help="write a PNG of the fit here")
    fit.add_argument(
        "--type-prefix", default=DEFAULT_OPENMM_PREFIX, help="OpenMM type prefix (default: protein-)"
    )
    fit.add_argument("--title", default="", help="title for the frcmod and plot")
    fit.add_argument("--overwrite", action="store_true", help="replace existing output files")
    for name, text in WORKFLOW_HELP.items():
        workflow = sub.add_parser(name, help=text)
        workflow.add_argument("settings", help="YAML or JSON settings file (see forcefield_refit/settings.py)")
        if name == "torsions":
            _torsion_flags(workflow)
    return parser


def _torsion_flags(parser: argparse.ArgumentParser) -> None:
    """Flags of ``forcefield-refit torsions`` that override the settings file."""
    parser.add_argument("--ridge", type=float, help="fit.ridge: ridge penalty on the amplitudes (>= 0)")
    parser.add_argument(
        "--prior", choices=["base", "zero"], help="fit.prior: ridge toward the base force field's terms or toward 0"
    )
    parser.add_argument(
        "--only-differing", action=argparse.BooleanOptionalAction, default=None,
        help="only_differing: fit only the classes whose terms differ between base and reference force field",
    )


#: Torsion flags -> settings keys (dotted: nested models).
TORSION_OVERRIDES = {"ridge": "fit.ridge", "prior": "fit.prior", "only_differing": "only_differing"}


WORKFLOW_HELP = {
    "torsions": "scan dihedrals with a reference energy, fit Fourier torsions jointly, write all formats",
    "cmap": "2-D phi/psi scans, fit a CMAP correction on top of the base force field, write prm/itp/ffxml",
    "hbonds": "rigid H-bond dimer scans, fit NBFIX pairs and/or CustomHbond terms, write all formats",
}


def run_workflow(
    command: str, settings_path: PathLike, overrides: dict[str, object] | None = None
) -> dict[str, object]:
    """Load a settings file for ``command`` (torsions, cmap, hbonds) and run the workflow; returns its report.

    ``overrides`` maps dotted settings keys (``"fit.ridge"``, ``"only_differing"``) to values that replace the
    file's (the command-line flags); the result is validated like the file.
    """
    from forcefield_refit import settings as models
    from forcefield_refit import workflows

    table = {
        "torsions": (models.TorsionsSettings, workflows.run_torsions),
        "cmap": (models.CmapSettings, workflows.run_cmap),
        "hbonds": (models.HbondsSettings, workflows.run_hbonds),
    }
    if command not in table:
        raise RefitInputError(f"command={command!r}; allowed: {sorted(table)}. Hint: forcefield-refit torsions x.yaml")
    model, function = table[command]
    loaded = models.load_settings(settings_path, model)  # type: ignore[arg-type]
    if overrides:
        loaded = models.apply_overrides(loaded, overrides)
    with threadpool_limits(1):
        return function(loaded)  # type: ignore[operator, no-any-return]


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(message)s"
    )
    if args.command in WORKFLOW_HELP:
        flags = TORSION_OVERRIDES if args.command == "torsions" else {}
        overrides = {key: getattr(args, flag) for flag, key in flags.items() if getattr(args, flag) is not None}
        report = run_workflow(args.command, args.settings, overrides)
        logger.info("wrote %s", report.get("files"))
        return 0
    if args.frcmod is None and args.ffxml is None and args.plot is None:
        logger.warning("no output requested (--frcmod/--ffxml/--plot); only fitting")
    run(
        args.profile,
        args.types,
        args.periodicities,
        frcmod=args.frcmod,
        ffxml=args.ffxml,
        plot=args.plot,
        type_prefix=args.type_prefix,
        title=args.title,
        overwrite=args.overwrite,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
