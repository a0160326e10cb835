"""The arguments shared by the alanine-dipeptide sampling scripts give the System each script documents."""

import argparse
from pathlib import Path

import pytest

from biomol_nnp.sampling.script_args import add_dipeptide_arguments, dipeptide_platform, dipeptide_system


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_dipeptide_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize(
    ("argv", "kind", "pdb", "refit", "platform"),
    [
        ((), "mm", "vacuum.pdb", [], "Reference"),
        (("--solvated",), "mm", "solvated.pdb", [], "CPU"),
        (("--refit", "refit.xml"), "refit", "vacuum.pdb", [Path("refit.xml")], "Reference"),
        (("--model", "model.pt", "--refit", "refit.xml"), "nnp", "vacuum.pdb", [], "CPU"),
    ],
)
def test_dipeptide_system(argv: tuple[str, ...], kind: str, pdb: str, refit: list[Path], platform: str) -> None:
    args = parse(*argv)
    system = dipeptide_system(args)
    assert (system.kind, system.pdb.name, system.refit_xml, dipeptide_platform(args)) == (kind, pdb, refit, platform)
    assert system.pdb.is_file()
    assert system.model_path == (Path("model.pt") if kind == "nnp" else None)
    assert (args.workers, args.scheduler) == (0, None)
