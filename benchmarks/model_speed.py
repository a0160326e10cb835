"""Speed of the deployed model: energy + forces for a ~50-atom region with 2000 MM charges, one thread.

Side by side in one run: our ANI-style and PaiNN ensembles (TorchScript files written by `save_model`
and reloaded with ``torch.jit.load``, embedding in the field of 2000 MM point charges) and torchani's
ANI-2x architecture (random weights, nothing downloaded; same atoms, no MM charges since it has no
embedding), each at the same ensemble sizes.

Region: alanine dipeptide plus its 9 nearest waters (49 atoms, H C N O) from
``systems/alanine_dipeptide/solvated.pdb``; MM charges: the 2000 other water atoms (and periodic images)
nearest to the region, TIP3P charges. One call = forward + autograd forces on region and MM atoms
(torchani: region atoms). Timing: median and fastest wall time of ``--repeats`` calls after ``--warmup``
calls, and the fastest thread CPU time (what a call costs when it has a core to itself), the models called
round-robin (in a shuffled order) so that load on a shared machine affects them alike.

The timed calls run in one process, so torchani shares the allocator setting ``load_model`` makes
(`biomol_nnp.models.export.keep_freed_memory`).

Run: ``python benchmarks/model_speed.py`` (about 1 minute on 2 cores);
writes ``benchmarks/results/model_speed.json``.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import openmm.app as app
import openmm.unit as unit
import torch

from biomol_nnp.config import ModelSettings
from biomol_nnp.io import write_json_atomic
from biomol_nnp.models.export import build_metadata, load_model, save_model
from biomol_nnp.models.registry import build_model, model_cutoff

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "model_speed.json"
TIP3P = {8: -0.834, 1: 0.417}


def region_and_environment(waters: int = 9, charges: int = 2000) -> dict[str, np.ndarray]:
    """Dipeptide + nearest waters (region) and the nearest other water atoms with TIP3P charges (MM)."""
    pdb = app.PDBFile(str(ROOT / "systems" / "alanine_dipeptide" / "solvated.pdb"))
    xyz = np.array(pdb.positions.value_in_unit(unit.nanometer))
    atoms = list(pdb.topology.atoms())
    numbers = np.array([atom.element.atomic_number for atom in atoms])
    solute = np.array([atom.residue.name not in ("HOH", "WAT") for atom in atoms])
    box = np.diag(pdb.topology.getPeriodicBoxVectors().value_in_unit(unit.nanometer))
    centre = xyz[solute].mean(0)
    residues = [[atom.index for atom in residue.atoms()] for residue in pdb.topology.residues()]
    water_residues = [r for r in residues if not solute[r[0]]]
    # nearest waters by minimum-image distance of their first atom (the oxygen) to the solute
    offsets = xyz[[r[0] for r in water_residues]] - centre
    offsets -= box * np.round(offsets / box)
    order = np.argsort(np.linalg.norm(offsets, axis=1))
    chosen = [index for r in order[:waters] for index in water_residues[r]]
    region = np.concatenate([np.flatnonzero(solute), chosen])
    rest = np.setdiff1d(np.flatnonzero(~solute), chosen)
    images = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)]) * box
    mm_xyz = (xyz[rest][None] + images[:, None]).reshape(-1, 3)
    mm_numbers = np.tile(numbers[rest], len(images))
    nearest = np.argsort(np.linalg.norm(mm_xyz - centre, axis=1))[:charges]
    return {
        "positions": xyz[region],
        "atomic_numbers": numbers[region],
        "mm_positions": mm_xyz[nearest],
        "mm_charges": np.array([TIP3P[int(z)] for z in mm_numbers[nearest]]),
    }


def interleaved_medians(
    calls: dict[str, Callable[[], None]], warmup: int, repeats: int
) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """Median and fastest wall time and fastest thread CPU time (ms) of each call, timed round-robin so that load
    changes hit every model alike. The order is shuffled every round (fixed seed), so no model always follows the
    same one (a call runs 5-10% slower right after a model that fills the caches). CPU time leaves out the time
    the thread waits for a core on a shared machine."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    cpu: dict[str, list[float]] = {name: [] for name in calls}
    names, shuffle = list(calls), random.Random(0).shuffle
    for _ in range(repeats):
        shuffle(names)
        for name in names:
            call = calls[name]
            start, cpu_start = time.perf_counter(), time.thread_time()
            call()
            cpu[name].append(time.thread_time() - cpu_start)
            times[name].append(time.perf_counter() - start)
    medians = {name: 1000.0 * statistics.median(values) for name, values in times.items()}
    fastest = {name: 1000.0 * min(values) for name, values in times.items()}
    return medians, fastest, {name: 1000.0 * min(values) for name, values in cpu.items()}


def ours(
    architecture: str, members: int, geometry: dict[str, np.ndarray], folder: Path, with_mm: bool = True
) -> Callable[[], None]:
    """Energy + forces of our deployed model (TorchScript file reloaded from disk), with or without MM charges."""
    settings = ModelSettings(architecture=architecture)
    model = build_model(settings, members).double()
    metadata = build_metadata(
        settings.elements,
        model_cutoff(settings),
        settings.embedding_cutoff_nm,
        members,
        "none",
        "benchmark",
        architecture=architecture,
        settings=settings.model_dump(mode="json"),
    )
    path = save_model(model, folder / f"{architecture}_{members}_{count_label(with_mm)}.pt", metadata)
    module, _ = load_model(path)
    count = len(geometry["mm_charges"]) if with_mm else 0
    x = torch.tensor(geometry["positions"]).requires_grad_(True)
    y = torch.tensor(geometry["mm_positions"][:count]).requires_grad_(True)
    z = torch.tensor(geometry["atomic_numbers"])
    q = torch.tensor(geometry["mm_charges"][:count])
    charge, box = torch.tensor(0.0, dtype=torch.float64), torch.zeros(0, 3, dtype=torch.float64)

    inputs = (x, y) if with_mm else (x,)

    def call() -> None:
        energy = module(x, z, charge, y, q, box)
        torch.autograd.grad(energy, inputs)

    return call


def count_label(with_mm: bool) -> str:
    return "mm" if with_mm else "vacuum"


def torchani_ani2x(members: int, geometry: dict[str, np.ndarray]) -> Callable[[], None]:
    """Energy + forces of torchani's ANI-2x architecture with random weights (no download)."""
    os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")
    from torchani.arch import Assembler
    from torchani.models import SYMBOLS_2X

    assembler = Assembler(periodic_table_index=True)
    assembler.set_symbols(SYMBOLS_2X)
    assembler.set_global_cutoff_fn("cosine")
    assembler.set_aev_computer(radial="ani2x", angular="ani2x", strategy="pyaev")
    assembler.set_atomic_networks(ctor="ani2x")
    assembler.set_neighborlist("all_pairs")
    assembler.set_gsaes_as_self_energies("wb97x-631gd")
    model = assembler.assemble(members).double()
    model = torch.jit.script(model)
    species = torch.tensor(geometry["atomic_numbers"]).unsqueeze(0)
    x = torch.tensor(geometry["positions"] * 10.0).unsqueeze(0).requires_grad_(True)  # torchani: Angstrom

    def call() -> None:
        energy = model((species, x)).energies
        torch.autograd.grad(energy.sum(), x)

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, nargs="+", default=[1, 3, 8], help="ensemble sizes to time")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    geometry = region_and_environment()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for members in args.members:
            calls = {
                "biomol_nnp_ani": ours("ani", members, geometry, Path(tmp)),
                "biomol_nnp_painn": ours("painn", members, geometry, Path(tmp)),
                "biomol_nnp_ani_vacuum": ours("ani", members, geometry, Path(tmp), with_mm=False),
                "biomol_nnp_painn_vacuum": ours("painn", members, geometry, Path(tmp), with_mm=False),
                "torchani_ani2x": torchani_ani2x(members, geometry),
            }
            row, fastest, cpu = interleaved_medians(calls, args.warmup, args.repeats)
            for name in ("ani", "painn", "ani_vacuum", "painn_vacuum"):
                row[f"{name}_over_torchani"] = row[f"biomol_nnp_{name}"] / row["torchani_ani2x"]
                row[f"{name}_over_torchani_fastest"] = fastest[f"biomol_nnp_{name}"] / fastest["torchani_ani2x"]
                row[f"{name}_over_torchani_cpu_fastest"] = cpu[f"biomol_nnp_{name}"] / cpu["torchani_ani2x"]
            results[f"members_{members}"] = row
            logging.getLogger(__name__).info("%d members: %s", members, row)
    write_json_atomic(
        args.output,
        {
            "description": "median ms per energy+forces call, 1 thread, float64; *_vacuum: our model without MM "
            "charges (the work torchani does); the others with 2000 MM charges (forces on MM atoms too); "
            "*_over_torchani: ratio of medians, *_fastest: ratio of the fastest calls (less sensitive to load), "
            "*_cpu_fastest: ratio of the smallest thread CPU times (leaves out waiting for a core)",
            "load_average_1min": os.getloadavg()[0],
            "settings": {"warmup": args.warmup, "repeats": args.repeats, "painn": ModelSettings().painn.model_dump()},
            "region_atoms": int(len(geometry["atomic_numbers"])),
            "mm_charges": int(len(geometry["mm_charges"])),
            "torch_version": torch.__version__,
            "threads": torch.get_num_threads(),
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
