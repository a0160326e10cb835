"""Steps per second of pure MM, NNP/MM (electrostatic, mechanical) and xTB/MM on solvated alanine dipeptide.

System: openmmtools ``AlanineDipeptideExplicit`` (2,269 atoms, TIP3P, PME, HBonds constraints);
region = the dipeptide (ACE-ALA-NME, 22 atoms). OpenMM CPU platform, Langevin 1 fs, torch with one thread
inside the callback. The four Systems are run in rounds, one after the other in each round (so machine
load hits them alike); the reported steps/s is the median over rounds. The NNP is a random-weight
ensemble (see ``nnpmm_common.speed_model``: the cost does not depend on the weights). The time spent inside
the NNP callback is measured too. Target (issue 5): NNP/MM electrostatic >= 0.5 x pure-MM steps/s.
Default run: about 2 minutes on 2 cores. Writes benchmarks/results/nnpmm_speed.json.

Run: .venv/bin/python benchmarks/nnpmm_speed.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
from pathlib import Path

import openmmml  # noqa: F401  (loads the entry points)
from nnpmm_common import (
    RESULTS,
    TimedCallback,
    machine,
    make_context,
    run_steps,
    run_timed,
    speed_model,
    timed,
)
from openmmml import MLPotential
from openmmtools import testsystems

from biomol_nnp.io import write_json_atomic

OUT = RESULTS / "nnpmm_speed.json"
STEPS = {"mm": 200, "nnp_electrostatic": 100, "nnp_mechanical": 100, "xtb_electrostatic": 5}


def build(model: Path) -> tuple[dict, object, int, int]:
    test = testsystems.AlanineDipeptideExplicit()
    region = [a.index for a in test.topology.atoms() if a.residue.name in ("ACE", "ALA", "NME")]
    nnp = MLPotential("biomol-nnp", modelPath=str(model))
    systems = {
        "mm": test.system,
        "nnp_electrostatic": timed(
            nnp.createMixedSystem(test.topology, test.system, region, embedding="electrostatic")
        ),
        "nnp_mechanical": timed(nnp.createMixedSystem(test.topology, test.system, region, embedding="mechanical")),
        "xtb_electrostatic": MLPotential("xtb").createMixedSystem(
            test.topology, test.system, region, embedding="electrostatic"
        ),
    }
    return systems, test.positions, test.system.getNumParticles(), len(region)


def main(rounds: int, model_arg: str | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        model, model_note = speed_model(Path(tmp) / "model.pt", model_arg)
        systems, positions, n_atoms, n_region = build(model)
        contexts = {name: make_context(system, positions) for name, system in systems.items()}
        for name, context in contexts.items():  # warm-up: model load, TorchScript profiling runs
            run_steps(context, 2 if name == "xtb_electrostatic" else 10)
        rates: dict[str, list[float]] = {name: [] for name in contexts}
        cpu_ms: dict[str, list[float]] = {name: [] for name in contexts}
        callback_ms: dict[str, list[float]] = {"nnp_electrostatic": [], "nnp_mechanical": []}
        callback_cpu_ms: dict[str, list[float]] = {"nnp_electrostatic": [], "nnp_mechanical": []}
        for round_ in range(rounds):
            for name, context in contexts.items():
                TimedCallback.clear()
                elapsed, cpu = run_timed(context, STEPS[name])
                rates[name].append(STEPS[name] / elapsed)
                cpu_ms[name].append(1e3 * cpu / STEPS[name])
                if name in callback_ms:
                    callback_ms[name].append(1e3 * statistics.median(TimedCallback.seconds))
                    callback_cpu_ms[name].append(1e3 * statistics.median(TimedCallback.cpu_seconds))
            print(f"round {round_ + 1}: " + ", ".join(f"{n} {r[-1]:.1f} steps/s" for n, r in rates.items()))
    median = {name: statistics.median(values) for name, values in rates.items()}
    result = {
        "system": f"openmmtools AlanineDipeptideExplicit ({n_atoms} atoms), region = dipeptide ({n_region} atoms)",
        "model": model_note,
        "integrator": "LangevinMiddle 1 fs, 300 K, HBonds; OpenMM CPU platform",
        "steps_per_round": STEPS,
        "rounds": rounds,
        "steps_per_s": {name: round(value, 2) for name, value in median.items()},
        "steps_per_s_each_round": {name: [round(v, 2) for v in values] for name, values in rates.items()},
        "ms_per_step": {name: round(1e3 / value, 2) for name, value in median.items()},
        "nnp_callback_ms_per_call": {name: round(statistics.median(v), 2) for name, v in callback_ms.items()},
        "cpu_ms_per_step": {name: round(statistics.median(v), 2) for name, v in cpu_ms.items()},
        "nnp_callback_cpu_ms_per_call": {name: round(statistics.median(v), 2) for name, v in callback_cpu_ms.items()},
        "ratio_to_mm": {name: round(value / median["mm"], 3) for name, value in median.items()},
        "target": "nnp_electrostatic >= 0.5 x mm",
        "target_met": median["nnp_electrostatic"] >= 0.5 * median["mm"],
        "machine": machine(),
    }
    write_json_atomic(OUT, result)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", help="deployed model.pt to time (default: demo model, else random weights)")
    logging.basicConfig(level=logging.WARNING)
    args = parser.parse_args()
    print(main(args.rounds, args.model))
