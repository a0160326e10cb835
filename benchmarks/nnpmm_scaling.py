"""Per-step cost the NNP/MM force adds over pure MM at 2.3k atoms and at 23.6k atoms (same region definition).

Systems: openmmtools ``AlanineDipeptideExplicit`` (2,269 atoms) and ``DHFRExplicit`` (23,558 atoms).
Region definition, the same in both (``nnpmm_common.nearest_residues``): whole residues (protein or water)
in order of distance from a centre atom (the ALA CA; the DHFR CA nearest the protein centroid) until 50
atoms are reached; cut peptide bonds get link hydrogens. Electrostatic embedding, random-weight model
(cost does not depend on the weights). For each system the pure-MM and the NNP/MM System run in
alternation on OpenMM's CPU platform (Langevin 1 fs); reported:

- ``added_ms``: median NNP/MM step time minus median MM step time (everything the NNP adds: the callback,
  OpenMM handing positions to Python, the extra exceptions);
- ``callback_ms``: the median time spent inside the NNP callback per call (neighbour search, model, autograd).

Target (issue 5): added cost at 23.6k atoms <= 2 x added cost at 2.3k atoms. MM step times at 23.6k atoms
are ~10x longer and noisier, so ``callback_ms`` is the sharper measure of the scaling.
Default run: about 4 minutes on 2 cores. Writes benchmarks/results/nnpmm_scaling.json.

Run: .venv/bin/python benchmarks/nnpmm_scaling.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
from pathlib import Path

import numpy as np
import openmm.unit as u
import openmmml  # noqa: F401  (loads the entry points)
from nnpmm_common import (
    RESULTS,
    TimedCallback,
    central_alpha_carbon,
    machine,
    make_context,
    nearest_residues,
    run_steps,
    run_timed,
    speed_model,
    timed,
)
from openmmml import MLPotential
from openmmtools import testsystems

from biomol_nnp.io import write_json_atomic

OUT = RESULTS / "nnpmm_scaling.json"
REGION_ATOMS = 50
STEPS = {"small": (60, 60), "large": (12, 12)}  # (MM, NNP/MM) steps per round


def region_of(test, name: str) -> list[int]:
    positions = np.asarray(test.positions.value_in_unit(u.nanometer))
    box = np.array([v.value_in_unit(u.nanometer) for v in test.system.getDefaultPeriodicBoxVectors()])
    if name == "small":
        centre = next(a.index for a in test.topology.atoms() if a.residue.name == "ALA" and a.name == "CA")
    else:
        centre = central_alpha_carbon(test.topology, positions)
    return nearest_residues(test.topology, test.system, positions, centre, REGION_ATOMS, box)


def setup(name: str, test, model: Path) -> dict:
    """Pure-MM and NNP/MM Contexts of one system, warmed up."""
    region = region_of(test, name)
    nnp = MLPotential("biomol-nnp", modelPath=str(model))
    mixed = timed(nnp.createMixedSystem(test.topology, test.system, region, embedding="electrostatic"))
    contexts = {"mm": make_context(test.system, test.positions), "nnp": make_context(mixed, test.positions)}
    run_steps(contexts["mm"], 3)
    run_steps(contexts["nnp"], 5)  # model load and TorchScript profiling runs
    residues = sorted({a.residue.name for a in test.topology.atoms() if a.index in set(region)})
    return {"contexts": contexts, "atoms": test.system.getNumParticles(), "region": region, "residues": residues}


def one_round(name: str, case: dict, times: dict) -> None:
    """One MM run and one NNP/MM run of ``case``; appends ms/step and callback ms to ``times``."""
    steps = dict(zip(("mm", "nnp"), STEPS[name], strict=True))
    for kind, context in case["contexts"].items():
        TimedCallback.clear()
        wall, cpu = run_timed(context, steps[kind])
        times[kind].append(1e3 * wall / steps[kind])
        times[f"{kind}_cpu"].append(1e3 * cpu / steps[kind])
        if kind == "nnp":
            times["callback"].append(1e3 * statistics.median(TimedCallback.seconds))
            times["callback_cpu"].append(1e3 * statistics.median(TimedCallback.cpu_seconds))
    print(name, {k: round(v[-1], 2) for k, v in times.items()})


def summary(case: dict, times: dict) -> dict:
    mm, nnp_ms = statistics.median(times["mm"]), statistics.median(times["nnp"])
    return {
        "atoms": case["atoms"],
        "region_atoms": len(case["region"]),
        "region_residue_names": case["residues"],
        "mm_ms_per_step": round(mm, 2),
        "nnp_ms_per_step": round(nnp_ms, 2),
        "added_ms": round(nnp_ms - mm, 2),
        "callback_ms": round(statistics.median(times["callback"]), 2),
        "mm_cpu_ms_per_step": round(statistics.median(times["mm_cpu"]), 2),
        "nnp_cpu_ms_per_step": round(statistics.median(times["nnp_cpu"]), 2),
        "added_cpu_ms": round(statistics.median(times["nnp_cpu"]) - statistics.median(times["mm_cpu"]), 2),
        "callback_cpu_ms": round(statistics.median(times["callback_cpu"]), 2),
        **{f"{kind}_ms_each_round": [round(v, 2) for v in values] for kind, values in times.items()},
    }


def main(rounds: int, model_arg: str | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        model, model_note = speed_model(Path(tmp) / "model.pt", model_arg)
        cases = {
            "small": setup("small", testsystems.AlanineDipeptideExplicit(), model),
            "large": setup("large", testsystems.DHFRExplicit(), model),
        }
        kinds = ("mm", "nnp", "callback", "mm_cpu", "nnp_cpu", "callback_cpu")
        times: dict[str, dict[str, list[float]]] = {name: {kind: [] for kind in kinds} for name in cases}
        for _ in range(rounds):  # the two systems alternate, so drifting machine load hits both alike
            for name, case in cases.items():
                one_round(name, case, times[name])
    small, large = (summary(cases[name], times[name]) for name in ("small", "large"))
    result = {
        "region_definition": f"whole neutral residues nearest a centre CA until {REGION_ATOMS} atoms (H, C, N, O)",
        "model": model_note,
        "integrator": "LangevinMiddle 1 fs, 300 K, HBonds; OpenMM CPU platform; torch 1 thread in the callback",
        "rounds": rounds,
        "small_alanine_dipeptide_explicit": small,
        "large_dhfr_explicit": large,
        "added_cost_ratio_large_over_small": round(large["added_ms"] / small["added_ms"], 3),
        "callback_ratio_large_over_small": round(large["callback_ms"] / small["callback_ms"], 3),
        "added_cpu_ratio_large_over_small": round(large["added_cpu_ms"] / small["added_cpu_ms"], 3),
        "callback_cpu_ratio_large_over_small": round(large["callback_cpu_ms"] / small["callback_cpu_ms"], 3),
        "target": "added cost ratio <= 2",
        "machine": machine(),
    }
    write_json_atomic(OUT, result)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--model", help="deployed model.pt to time (default: demo model, else random weights)")
    logging.basicConfig(level=logging.WARNING)
    args = parser.parse_args()
    print(main(args.rounds, args.model))
