"""Command-line interface: `biomol-nnp COMMAND`.

Each command parses its arguments and calls a library function that tests call in-process.
Settings come from a YAML file (`biomol-nnp config` writes the defaults) and flags override a few.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from biomol_nnp import __version__
from biomol_nnp.config import PipelineSettings
from biomol_nnp.exceptions import BiomolNNPError
from biomol_nnp.logging_setup import configure_logging

logger = logging.getLogger(__name__)

SAMPLE_KINDS = (
    "md",
    "water-dimer-scan",
    "water-clusters",
    "torsion-scan",
    "torsion-scan-2d",
    "nma-water-scan",
    "nma-nma-scan",
)
"""Choices of `biomol-nnp sample --kind` (the same as biomol_nnp.qm.jobs.SAMPLERS, without importing it)."""


def load_settings(path: str | None) -> PipelineSettings:
    """Settings from a YAML file, or the defaults."""
    return PipelineSettings.from_yaml(path) if path else PipelineSettings()


def command_config(args: argparse.Namespace) -> None:
    path = PipelineSettings().to_yaml(args.output)
    logger.info("wrote default settings to %s", path)


def command_demo(args: argparse.Namespace) -> None:
    from biomol_nnp.pipeline import quick_settings, run_pipeline

    settings = load_settings(args.config)
    if args.quick:
        settings = quick_settings(settings)
    run_pipeline(settings, Path(args.output), progress=not args.no_progress, resume=not args.restart)


def command_sample(args: argparse.Namespace) -> None:
    from biomol_nnp.qm.jobs import sample_job

    settings = load_settings(args.config)
    sample_job(settings, Path(args.output), kind=args.kind, progress=not args.no_progress)


def command_label(args: argparse.Namespace) -> None:
    from biomol_nnp.qm.jobs import label_job

    settings = load_settings(args.config)
    if args.method:
        settings.labels.method = args.method
    if args.workers is not None:
        settings.labels.workers = args.workers
    if args.scheduler:
        settings.labels.scheduler_address = args.scheduler
    if args.chunk_size:
        settings.labels.chunk_size = args.chunk_size
    if args.no_retry:
        settings.labels.retry_failed = False
    report = label_job(settings, Path(args.output), args.configs, progress=not args.no_progress, extxyz=args.extxyz)
    if report.n_failed:
        logger.warning(
            "%d configurations failed; see the reasons above (they are retried on the next run)", report.n_failed
        )


def command_train(args: argparse.Namespace) -> None:
    from biomol_nnp.pipeline import train_and_export

    settings = load_settings(args.config)
    if args.workers is not None:
        settings.train.workers = args.workers
    if args.scheduler:
        settings.train.scheduler_address = args.scheduler
    train_and_export(
        settings, Path(args.labels), Path(args.output), progress=not args.no_progress, resume=args.resume
    )


def _simulation_settings(args: argparse.Namespace) -> PipelineSettings:
    """Settings of `run` / `check-nve`: CONFIG (positional or -c) with the flag overrides."""
    settings = load_settings(args.config_file or args.config)
    if args.model:
        settings.simulation.model_path = Path(args.model)
    if args.steps:
        setattr(settings.simulation, "nve_steps" if args.command == "check-nve" else "steps", args.steps)
    if args.mm_only:
        settings.simulation.mm_only = True
    if args.prepared:
        settings.simulation.prepared_dir = Path(args.prepared)
    return settings


def command_run(args: argparse.Namespace) -> None:
    from biomol_nnp.simulate.runner import run_md

    settings = _simulation_settings(args)
    result = run_md(
        settings.system,
        settings.simulation,
        Path(args.output),
        progress=not args.no_progress,
        threads=args.threads,
        resume=args.resume,
    )
    logger.info("run finished at step %d (%.3g ns/day) in %s", result.final_step, result.ns_per_day, args.output)


def command_check_nve(args: argparse.Namespace) -> None:
    from biomol_nnp.simulate.nve import check_nve

    settings = _simulation_settings(args)
    result = check_nve(settings.system, settings.simulation, Path(args.output), threads=args.threads)
    logger.info(
        "NVE drift %.4g kJ/mol/ns/DOF (%.4g kJ/mol/ns), fluctuation %.3g kJ/mol; wrote %s/nve.json",
        result.drift_kj_mol_ns_dof,
        result.drift_kj_mol_ns,
        result.fluctuation_kj_mol,
        args.output,
    )


def command_refit(args: argparse.Namespace) -> None:
    from biomol_nnp.pipeline import refit

    settings = load_settings(args.config)
    refit(settings, Path(args.model), Path(args.output), progress=not args.no_progress)


def command_prepare(args: argparse.Namespace) -> None:
    from biomol_nnp.config import PrepareSettings
    from biomol_nnp.exceptions import InputError
    from biomol_nnp.prepare import build_peptide, prepare

    settings = PrepareSettings.from_yaml(args.config) if args.config else PrepareSettings()
    overrides = {
        "forcefield": args.forcefield,
        "ph": args.ph,
        "padding_nm": args.padding,
        "ionic_strength_molar": args.salt,
        "positive_ion": args.positive_ion,
        "negative_ion": args.negative_ion,
        "nonbonded_cutoff_nm": args.cutoff,
        "region_selection": args.region,
    }
    for key, value in overrides.items():
        if value is not None:
            setattr(settings, key, value)
    if args.no_solvent:
        settings.solvate = False
    if args.remove_water:
        settings.keep_water = False
    if args.atoms_only:
        settings.whole_residues = False
    if (args.pdb is None) == (args.sequence is None):
        raise InputError("give either a PDB file or --sequence (a peptide built with tleap), not both or neither")
    pdb = Path(args.pdb) if args.pdb else build_peptide(args.sequence, Path(args.output) / "sequence.pdb")
    prepared = prepare(pdb, Path(args.output), settings)
    logger.info("wrote %s", ", ".join(str(path) for path in prepared.files.values()))


def command_active_learn(args: argparse.Namespace) -> None:
    from biomol_nnp.active import run_active_learning

    settings = load_settings(args.config)
    result = run_active_learning(settings, Path(args.output), restart=args.restart, progress=not args.no_progress)
    logger.info(
        "active learning: %d iterations, stopped (%s); model %s", len(result.rows) - 1, result.stopped, result.model
    )


def command_repex(args: argparse.Namespace) -> None:
    from biomol_nnp.config import ReplicaExchangeSettings
    from biomol_nnp.sampling.repex import run_replica_exchange

    settings = ReplicaExchangeSettings.from_yaml(args.config) if args.config else ReplicaExchangeSettings()
    if args.iterations:
        settings.iterations = args.iterations
    result = run_replica_exchange(settings, Path(args.output), progress=not args.no_progress)
    logger.info(
        "replica exchange (%s): %d iterations, neighbour acceptance %s, %d round trips; see %s/summary.json",
        settings.kind,
        result.iterations,
        ", ".join(f"{a:.2f}" for a in result.acceptance),
        result.round_trips,
        args.output,
    )


def command_opes(args: argparse.Namespace) -> None:
    from biomol_nnp.config import OpesSettings
    from biomol_nnp.sampling.opes import run_opes

    settings = OpesSettings.from_yaml(args.config) if args.config else OpesSettings()
    if args.steps:
        settings.steps = args.steps
    result = run_opes(settings, Path(args.output), progress=not args.no_progress)
    logger.info("OPES: %d steps, %d kernels; free energy in %s/fes.json", result.steps, result.kernels, args.output)


def command_metad(args: argparse.Namespace) -> None:
    from biomol_nnp.config import MetadynamicsSettings
    from biomol_nnp.sampling.metadynamics import run_metadynamics

    settings = MetadynamicsSettings.from_yaml(args.config) if args.config else MetadynamicsSettings()
    if args.steps:
        settings.steps = args.steps
    if args.walkers:
        settings.walkers = args.walkers
    if args.workers is not None:
        settings.workers = args.workers
    result = run_metadynamics(settings, Path(args.output), progress=not args.no_progress)
    logger.info("metadynamics: %d walkers x %d steps; wrote %s", result.walkers, result.steps, result.files["fes_png"])


def command_umbrella(args: argparse.Namespace) -> None:
    from biomol_nnp.config import UmbrellaSettings
    from biomol_nnp.sampling.umbrella import run_umbrella

    settings = UmbrellaSettings.from_yaml(args.config) if args.config else UmbrellaSettings()
    if args.steps:
        settings.steps = args.steps
    if args.workers is not None:
        settings.workers = args.workers
    result = run_umbrella(settings, Path(args.output), progress=not args.no_progress)
    logger.info("umbrella sampling: %d windows; wrote %s", len(result.centers), result.files["profile_png"])


def add_settings_parser(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    name: str,
    settings_class: str,
    outputs: str,
    help: str,
    description: str,
) -> argparse.ArgumentParser:
    """Subcommand ``name`` taking an optional ``settings_class`` YAML and ``-o/--output`` (default ``NAME_output``)."""
    p: argparse.ArgumentParser = sub.add_parser(name, help=help, description=description)
    p.add_argument("config", nargs="?", help=f"{settings_class} YAML (default: built-in defaults)")
    p.add_argument("-o", "--output", default=f"{name}_output", help=f"output folder ({outputs})")
    return p


def add_free_energy_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Subcommands `metad` and `umbrella`."""
    p = add_settings_parser(
        sub,
        "metad",
        "MetadynamicsSettings",
        "bias/, walker_K/, fes.*",
        help="well-tempered metadynamics on torsion/distance CVs (walkers sharing the bias, on Dask)",
        description="Metadynamics of the System in CONFIG (MetadynamicsSettings YAML; default: phi/psi of the "
        "vacuum alanine dipeptide, amber14). Running again with the same OUTPUT resumes from the saved bias and "
        "states.",
    )
    p.add_argument("-n", "--steps", type=int, help="MD steps per walker (overrides steps)")
    p.add_argument("--walkers", type=int, help="walkers sharing the bias (overrides walkers)")
    p.add_argument("--workers", type=int, help="Dask LocalCluster workers (0: in this process)")
    p.set_defaults(func=command_metad)

    p = add_settings_parser(
        sub,
        "umbrella",
        "UmbrellaSettings",
        "windows/, profile.*",
        help="umbrella sampling along a torsion or distance, profile and error from MBAR (pymbar)",
        description="Umbrella sampling of the System in CONFIG (UmbrellaSettings YAML; default: phi of the vacuum "
        "alanine dipeptide). Running again with the same OUTPUT skips the finished windows.",
    )
    p.add_argument("-n", "--steps", type=int, help="sampling steps per window (overrides steps)")
    p.add_argument("--workers", type=int, help="Dask LocalCluster workers (0: in this process)")
    p.set_defaults(func=command_umbrella)


ANALYSIS_KINDS = ("ramachandran", "hbonds", "rdf", "dielectric")
"""Choices of `biomol-nnp analyze --kind` (biomol_nnp.analysis.structure.KINDS, without importing it)."""


def command_analyze(args: argparse.Namespace) -> None:
    from biomol_nnp.analysis.structure import analyze

    files = analyze(
        args.trajectory,
        args.topology,
        args.kind,
        Path(args.output),
        selection=args.selection,
        start=args.start,
        temperature_k=args.temperature,
        system_xml=args.system,
        n_blocks=args.blocks,
    )
    logger.info("%s: wrote %s", args.kind, ", ".join(str(path) for path in files.values()))


def add_sampling_analysis_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Subcommands `repex`, `opes` and `analyze`."""
    p = add_settings_parser(
        sub,
        "repex",
        "ReplicaExchangeSettings",
        "replicas/, summary.json",
        help="temperature replica exchange or REST2 of a region (openmm.app.ReplicaExchangeSampler)",
        description="Replica exchange of the System in CONFIG (ReplicaExchangeSettings YAML; default: REST2 of the "
        "vacuum alanine dipeptide). Running again with the same OUTPUT resumes from the replica checkpoints.",
    )
    p.add_argument("-n", "--iterations", type=int, help="exchange iterations (overrides iterations)")
    p.set_defaults(func=command_repex)

    p = add_settings_parser(
        sub,
        "opes",
        "OpesSettings",
        "fes.*, colvar.npy, summary.json",
        help="OPES (openmm-opes) on torsion or distance CVs",
        description="OPES of the System in CONFIG (OpesSettings YAML; default: phi/psi of the vacuum alanine "
        "dipeptide). Running again with the same OUTPUT resumes from its checkpoint.",
    )
    p.add_argument("-n", "--steps", type=int, help="MD steps (overrides steps)")
    p.set_defaults(func=command_opes)

    p = sub.add_parser(
        "analyze",
        help="Ramachandran, hydrogen-bond occupancy, water RDF or dielectric constant of a trajectory",
        description="Analyse TRAJ (DCD, XTC, ...) with TOPOLOGY (PDB, PSF, PRMTOP, ...) with MDAnalysis; JSON, CSV "
        "and PNG go into OUTPUT.",
    )
    p.add_argument("trajectory", help="trajectory file")
    p.add_argument("topology", help="topology file")
    p.add_argument("--kind", required=True, choices=ANALYSIS_KINDS, help="the analysis")
    p.add_argument("-o", "--output", default="analysis_output", help="output folder")
    p.add_argument("--selection", help="MDAnalysis selection replacing the default atoms of the analysis")
    p.add_argument("--start", type=int, default=0, help="first frame (skip equilibration)")
    p.add_argument("--temperature", type=float, default=300.0, help="temperature of the run, K (dielectric)")
    p.add_argument("--system", help="system.xml giving the charges when TOPOLOGY has none (dielectric)")
    p.add_argument("--blocks", type=int, default=5, help="blocks of the jackknife error (dielectric)")
    p.set_defaults(func=command_analyze)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="biomol-nnp", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"biomol-nnp {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("config", help="write the default settings as YAML")
    p.add_argument("-o", "--output", default="biomol-nnp.yaml", help="YAML file to write")
    p.set_defaults(func=command_config)

    p = sub.add_parser(
        "demo", help="the whole path on the shipped alanine dipeptide: sample, label, train, NNP/MM MD, refit"
    )
    p.add_argument("-c", "--config", help="settings YAML (default: built-in defaults)")
    p.add_argument("-o", "--output", default="demo_output", help="output folder")
    p.add_argument("--quick", action="store_true", help="tiny settings for a smoke test (minutes)")
    p.add_argument("--restart", action="store_true", help="redo every stage instead of reusing finished outputs")
    p.set_defaults(func=command_demo)

    p = sub.add_parser("sample", help="sample configurations to label and write them to an HDF5 file")
    p.add_argument("-c", "--config", help="settings YAML")
    p.add_argument("-o", "--output", default="configs.h5", help="configurations file to write")
    p.add_argument(
        "--kind",
        default="md",
        choices=SAMPLE_KINDS,
        help="sampler (default md): MM MD frames; water-dimer, NMA-water or NMA-NMA H-bond scans; water clusters; "
        "relaxed 1-D (phi, psi) or 2-D (phi x psi) torsion scans of sampling.torsion_scan_pdbs",
    )
    p.set_defaults(func=command_sample)

    p = sub.add_parser(
        "label",
        help="label configurations with QM (only missing or failed ones), in process or on Dask",
        description="Label CONFIGS (from `biomol-nnp sample`; MM MD sampling when omitted) into LABELS.",
    )
    p.add_argument("configs", nargs="?", help="configurations file (HDF5); omitted: sample by MM MD")
    p.add_argument("-c", "--config", help="settings YAML")
    p.add_argument("-o", "--output", default="labels.h5", help="HDF5 labels file (appended to)")
    p.add_argument("--method", help="QM method: GFN2-xTB, GFN2-xTB-tblite, DFT, MM (overrides labels.method)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, help="Dask LocalCluster worker processes (0: in this process)")
    where.add_argument("--scheduler", help="address of a running Dask scheduler, e.g. tcp://host:8786")
    p.add_argument("--chunk-size", type=int, help="configurations per Dask task (default labels.chunk_size)")
    p.add_argument("--no-retry", action="store_true", help="do not label again configurations that failed")
    p.add_argument("--extxyz", help="also export the ok labels to this extended XYZ file (eV, Angstrom)")
    p.set_defaults(func=command_label)

    p = sub.add_parser("train", help="train an ensemble on a labels file and export model.pt")
    p.add_argument("labels", help="HDF5 labels file")
    p.add_argument("-c", "--config", help="settings YAML")
    p.add_argument("-o", "--output", default="model_output", help="folder for model.pt, metrics and plots")
    p.add_argument(
        "--resume", action="store_true", help="continue from the checkpoints in OUTPUT/checkpoints (same settings)"
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, help="Dask LocalCluster processes training members (1: in process)")
    where.add_argument("--scheduler", help="address of a running Dask scheduler, e.g. tcp://host:8786")
    p.set_defaults(func=command_train)

    for name, helptext, output in (
        ("run", "NNP/MM (or pure MM) NVT/NPT molecular dynamics with checkpoints", "md_output"),
        ("check-nve", "short NVE run: total-energy drift per ns and per degree of freedom", "nve_output"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("config_file", nargs="?", metavar="CONFIG", help="settings YAML (`simulation:` section)")
        p.add_argument("-c", "--config", help="settings YAML (same as CONFIG)")
        p.add_argument("-m", "--model", help="deployed model (overrides simulation.model_path)")
        p.add_argument("-n", "--steps", type=int, help="steps (overrides simulation.steps / nve_steps)")
        p.add_argument("-o", "--output", default=output, help="output folder")
        p.add_argument("--mm-only", action="store_true", help="pure MM System, no model")
        p.add_argument("--prepared", help="folder written by `biomol-nnp prepare` (overrides simulation.prepared_dir)")
        p.add_argument("--threads", type=int, default=1, help="OpenMM CPU threads")
        if name == "run":
            p.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoint.json")
        p.set_defaults(func=command_run if name == "run" else command_check_nve)

    p = sub.add_parser("refit", help="fit backbone phi/psi torsions to the model and write frcmod + ffxml")
    p.add_argument("model", help="deployed model.pt")
    p.add_argument("-c", "--config", help="settings YAML")
    p.add_argument("-o", "--output", default="refit_output", help="output folder")
    p.set_defaults(func=command_refit)

    p = sub.add_parser(
        "prepare",
        help="fix a protein PDB, protonate, solvate, parameterize and choose the ML region",
        description="PDBFixer + Modeller + amber14/charmm36: writes system.xml, topology.pdb, region.json "
        "(with --region) and prepare.yaml into OUTPUT. Flags override the settings file.",
    )
    p.add_argument("pdb", nargs="?", help="input structure (PDB or PDBx/mmCIF); omit with --sequence")
    p.add_argument(
        "--sequence",
        help="build a peptide with tleap instead of reading a PDB: one-letter codes (ACE/NME caps added) or "
        "three-letter names, e.g. 'ACE ALA GLY NME' (needs the 'build' extra)",
    )
    p.add_argument("-c", "--config", help="PrepareSettings YAML (default: built-in defaults)")
    p.add_argument("-o", "--output", default="prepared", help="output folder")
    p.add_argument("--forcefield", choices=["amber14", "charmm36"], help="force field (default amber14)")
    p.add_argument("--ph", type=float, help="pH of the protonation states (default 7.0)")
    p.add_argument("--padding", type=float, help="water padding around the solute, nm (default 1.0)")
    p.add_argument("--salt", type=float, help="salt concentration on top of neutralization, M (default 0.15)")
    p.add_argument("--positive-ion", choices=["Na+", "K+", "Li+", "Rb+", "Cs+"], help="cation (default Na+)")
    p.add_argument("--negative-ion", choices=["Cl-", "Br-", "F-", "I-"], help="anion (default Cl-)")
    p.add_argument("--cutoff", type=float, help="PME direct-space cutoff, nm (default 1.0)")
    p.add_argument("--no-solvent", action="store_true", help="do not solvate (vacuum, no cutoff)")
    p.add_argument("--remove-water", action="store_true", help="also remove crystal waters")
    p.add_argument("--region", help="MDAnalysis selection of the ML region, e.g. 'protein and resid 45-50'")
    p.add_argument("--atoms-only", action="store_true", help="do not extend the region to whole residues")
    p.set_defaults(func=command_prepare)

    p = sub.add_parser(
        "active-learn",
        help="active learning: NNP/MM walkers, uncertain diverse frames, QM labels, warm-started retraining",
        description="Iterate from active.initial_model until the uncertain fraction is below the target or the "
        "budget is spent; resumes from OUTPUT/state.json after an interruption.",
    )
    p.add_argument("config", help="settings YAML with an `active` section (initial_model, labels_path, ...)")
    p.add_argument("-o", "--output", default="active_learning", help="output folder (state, iterations, table, plot)")
    p.add_argument("--restart", action="store_true", help="ignore OUTPUT/state.json and start from the initial model")
    p.set_defaults(func=command_active_learn)
    add_sampling_analysis_parsers(sub)
    add_free_energy_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `biomol-nnp` console script."""
    args = build_parser().parse_args(argv)
    configure_logging(-1 if args.quiet else args.verbose)
    try:
        args.func(args)
    except BiomolNNPError as err:
        logger.error("%s", err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
