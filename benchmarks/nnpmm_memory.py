"""Peak resident memory of building and running NNP/MM on Src kinase explicit (56.6k atoms, 60-atom region).

System: openmmtools ``SrcExplicit`` (solvated Src kinase). Region: whole residues nearest the CA closest
to the protein centroid until 60 atoms (``nnpmm_common.nearest_residues``), electrostatic embedding,
random-weight model (memory and cost do not depend on the weights). Builds the mixed System, a CPU-platform
Context, runs 100 Langevin steps (1 fs) and records the process's peak RSS (``resource.getrusage``) after
each stage. Target (issue 5): < 4 GB. Default run: about 2 minutes on 2 cores.
Writes benchmarks/results/nnpmm_memory.json.

Run: .venv/bin/python benchmarks/nnpmm_memory.py
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
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
    peak_rss_gb,
    run_steps,
    speed_model,
    timed,
)
from openmmml import MLPotential
from openmmtools import testsystems

from biomol_nnp.io import write_json_atomic

OUT = RESULTS / "nnpmm_memory.json"
REGION_ATOMS = 60
STEPS = 100
LIMIT_GB = 4.0


def main(model_arg: str | None = None) -> dict:
    peaks = {"start": peak_rss_gb()}
    with tempfile.TemporaryDirectory() as tmp:
        model, model_note = speed_model(Path(tmp) / "model.pt", model_arg)
        test = testsystems.SrcExplicit()
        peaks["mm_system_loaded"] = peak_rss_gb()
        positions = np.asarray(test.positions.value_in_unit(u.nanometer))
        box = np.array([v.value_in_unit(u.nanometer) for v in test.system.getDefaultPeriodicBoxVectors()])
        region = nearest_residues(
            test.topology, test.system, positions, central_alpha_carbon(test.topology, positions), REGION_ATOMS, box
        )
        nnp = MLPotential("biomol-nnp", modelPath=str(model))
        start = time.perf_counter()
        mixed = timed(nnp.createMixedSystem(test.topology, test.system, region, embedding="electrostatic"))
        build_s = time.perf_counter() - start
        peaks["mixed_system_built"] = peak_rss_gb()
        context = make_context(mixed, test.positions)
        peaks["context_created"] = peak_rss_gb()
        TimedCallback.clear()
        run_s = run_steps(context, STEPS)
        peaks["after_steps"] = peak_rss_gb()
        energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    result = {
        "system": f"openmmtools SrcExplicit ({test.system.getNumParticles()} atoms)",
        "region_atoms": len(region),
        "region_residue_names": sorted({a.residue.name for a in test.topology.atoms() if a.index in set(region)}),
        "model": model_note,
        "steps": STEPS,
        "build_mixed_system_s": round(build_s, 2),
        "run_s": round(run_s, 2),
        "nnp_callback_ms_median": round(1e3 * float(np.median(TimedCallback.seconds)), 2),
        "nnp_callback_cpu_ms_median": round(1e3 * float(np.median(TimedCallback.cpu_seconds)), 2),
        "final_potential_energy_kj_mol": round(energy, 1),
        "peak_rss_gb_after": {stage: round(value, 3) for stage, value in peaks.items()},
        "peak_rss_gb": round(max(peaks.values()), 3),
        "limit_gb": LIMIT_GB,
        "target_met": max(peaks.values()) < LIMIT_GB,
        "machine": machine(),
    }
    write_json_atomic(OUT, result)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="deployed model.pt (default: demo model, else random weights)")
    logging.basicConfig(level=logging.WARNING)
    print(main(parser.parse_args().model))
