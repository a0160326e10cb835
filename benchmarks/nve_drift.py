"""NVE energy drift of NNP/MM with electrostatic embedding at 0.5 fs, solvated alanine dipeptide, next to pure MM.

System: the shipped ``systems/alanine_dipeptide/solvated.pdb`` (1,912 atoms, amber14 + TIP3P, PME 0.9 nm,
HBonds constraints, rigid water); region = the dipeptide (22 atoms). The same System is run twice in one
process with `biomol_nnp.simulate.nve.nve_drift` (what `biomol-nnp check-nve` runs): NNP/MM (electrostatic
embedding) and pure MM, each minimised, velocities at 300 K, velocity Verlet at 0.5 fs, energies every 10 steps.
Drift = slope of a line fitted to the total energy, reported per ns and per ns per degree of freedom.

Model: ``--model PATH``; else ``demo_output/model/model.pt`` (the `biomol-nnp demo` model) when it exists;
else a model trained here through `biomol_nnp.pipeline` with ``quick_settings`` (GFN2-xTB labels of a few MD
frames, 2 epochs: crude, but energy conservation depends on the forces being the gradient, not on accuracy).
The JSON records which. Default run: 2,000 steps (1 ps) per System, a few minutes on 2 cores.
Writes benchmarks/results/nve_drift.json and nve_drift.png.

Run: .venv/bin/python benchmarks/nve_drift.py [--steps 2000] [--model model.pt]
"""

from __future__ import annotations

import argparse
import logging
import platform
import time
from pathlib import Path

from biomol_nnp.config import PipelineSettings, SimulationSettings, SystemSettings
from biomol_nnp.io import write_json_atomic
from biomol_nnp.simulate.nve import NVEResult, nve_drift, plot_nve
from biomol_nnp.simulate.systems import build_run_system

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
DEMO_MODEL = ROOT / "demo_output" / "model" / "model.pt"
QUICK_DIR = Path(__file__).parent / "data" / "nve_drift_model"


def choose_model(given: str | None) -> tuple[Path, str]:
    """The model to test and a description of where it came from."""
    if given:
        return Path(given), f"{given} (given with --model)"
    if DEMO_MODEL.is_file():
        return DEMO_MODEL, "demo_output/model/model.pt (biomol-nnp demo)"
    quick = QUICK_DIR / "model" / "model.pt"
    if not quick.is_file():
        from biomol_nnp.pipeline import quick_settings, sample_and_label, train_and_export

        settings = quick_settings(PipelineSettings())
        sample_and_label(settings, QUICK_DIR / "labels.h5")
        train_and_export(settings, QUICK_DIR / "labels.h5", QUICK_DIR / "model")
    return quick, "benchmarks/data/nve_drift_model (pipeline quick_settings: few xTB frames, 2 epochs)"


def run(simulation: SimulationSettings, steps: int, timestep_fs: float) -> tuple[NVEResult, float]:
    """NVE of the System the settings describe; returns the result and the wall time, s."""
    system = build_run_system(SystemSettings(), simulation)
    start = time.perf_counter()
    result = nve_drift(system.system, system.positions, steps, timestep_fs, report_interval=10, seed=simulation.seed)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="NVE steps per System")
    parser.add_argument("--timestep", type=float, default=0.5, help="time step, fs")
    parser.add_argument("--model", help="deployed model (default: demo model, else a quick one trained here)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    model, origin = choose_model(args.model)
    base = SimulationSettings(model_path=model, minimize_iterations=200, seed=11)
    results, seconds = {}, {}
    for name, settings in (("nnp_mm_electrostatic", base), ("pure_mm", base.model_copy(update={"mm_only": True}))):
        results[name], seconds[name] = run(settings, args.steps, args.timestep)
        logging.info("%s: %.4g kJ/mol/ns/DOF", name, results[name].drift_kj_mol_ns_dof)
    summary = {
        "system": "systems/alanine_dipeptide/solvated.pdb (1912 atoms, PME, HBonds, rigid TIP3P), region ACE-ALA-NME",
        "model": origin,
        "steps": args.steps,
        "timestep_fs": args.timestep,
        "machine": f"{platform.machine()} {platform.processor() or ''} OpenMM CPU 1 thread".strip(),
        "wall_seconds": seconds,
        "results": {
            name: {k: v for k, v in result.to_dict().items() if k not in ("times_ps", "total_kj_mol")}
            for name, result in results.items()
        },
        "nnp_over_mm_drift_ratio": results["nnp_mm_electrostatic"].drift_kj_mol_ns_dof
        / results["pure_mm"].drift_kj_mol_ns_dof,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json_atomic(RESULTS / "nve_drift.json", summary)
    plot_nve(results, RESULTS / "nve_drift.png")


if __name__ == "__main__":
    main()
