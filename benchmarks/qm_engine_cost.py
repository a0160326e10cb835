"""Cost of one single point (energy + forces on atoms and point charges) per engine and region size.

Regions: 6 atoms (water dimer), 22 atoms (alanine dipeptide, systems/alanine_dipeptide/vacuum.pdb),
60 atoms (20-water cluster carved from the solvated box); with 0 and 2,000 point charges (random
positions 1.0-2.5 nm from the region centre, +-0.4 e, net zero). One thread per calculation.
DFT (B3LYP-D3BJ/def2-SVP, RI) runs here for the 6- and 22-atom regions (one calculation each, no
warm-up); the 60-atom rows (about 15 minutes each on this 2-core host) were measured once separately
with the same functions and merged into the JSON. tblite takes no point charges. The MM engine runs
on the dipeptide's ff14SB System.
Writes benchmarks/results/qm_engine_cost.json.

Run: .venv/bin/python benchmarks/qm_engine_cost.py
"""

import json
import os
import time
from pathlib import Path

import numpy as np

from biomol_nnp.config import LabelSettings, SystemSettings
from biomol_nnp.qm.clusters import water_clusters
from biomol_nnp.qm.engine import create_engine
from biomol_nnp.qm.scans import water_dimer_scan

OUT = Path(__file__).parent / "results" / "qm_engine_cost.json"


def regions() -> dict[int, tuple[np.ndarray, np.ndarray]]:
    import openmm.app as app
    from openmm import unit

    dimer = water_dimer_scan(distances_nm=[0.291], angles_deg=[0.0])[0]
    pdb = app.PDBFile(str(SystemSettings().vacuum_pdb))
    dipeptide = (
        np.array([a.element.atomic_number for a in pdb.topology.atoms()]),
        np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer)),
    )
    cluster = water_clusters(SystemSettings().solvated_pdb, sizes=[20], seed=0)[0]
    return {6: (dimer.atomic_numbers, dimer.positions), 22: dipeptide, 60: (cluster.atomic_numbers, cluster.positions)}


def dipeptide_system_xml() -> str:
    """Serialized ff14SB System of the vacuum dipeptide (the MM engine's region), in a temporary file."""
    import tempfile

    import openmm
    import openmm.app as app

    pdb = app.PDBFile(str(SystemSettings().vacuum_pdb))
    system = app.ForceField("amber14-all.xml").createSystem(pdb.topology, nonbondedMethod=app.NoCutoff)
    path = Path(tempfile.mkdtemp()) / "dipeptide_system.xml"
    path.write_text(openmm.XmlSerializer.serialize(system))
    return str(path)


def point_charges(centre: np.ndarray, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=(n, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    xyz = centre + direction * rng.uniform(1.0, 2.5, size=(n, 1))
    q = np.where(np.arange(n) % 2 == 0, 0.4, -0.4)
    return xyz, q, np.where(q < 0, 8, 1)


def time_engine(engine, z, xyz, pcs, repeats: int, warm_up: bool = True) -> float:
    kwargs = {} if pcs is None else {"mm_positions": pcs[0], "mm_charges": pcs[1], "mm_numbers": pcs[2]}
    if warm_up:
        engine.compute(z, xyz, **kwargs)  # library loading, first SCF
    start = time.perf_counter()
    for _ in range(repeats):
        engine.compute(z, xyz, **kwargs)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    rows = []
    engines = {
        "GFN2-xTB": (create_engine(LabelSettings(threads=1)), (6, 22, 60), 5),
        "GFN2-xTB-tblite": (create_engine(LabelSettings(method="GFN2-xTB-tblite", threads=1)), (6, 22, 60), 5),
        "DFT": (create_engine(LabelSettings(method="DFT", threads=1)), (6, 22), 1),
        "MM": (create_engine(LabelSettings(method="MM", mm_system_xml=dipeptide_system_xml())), (22,), 20),
    }
    for name, (engine, sizes, repeats) in engines.items():
        for n_atoms, (z, xyz) in regions().items():
            for n_pc in (0, 2000):
                row = {
                    "engine": name,
                    "method": engine.method,
                    "basis": engine.basis,
                    "atoms": n_atoms,
                    "point_charges": n_pc,
                }
                if n_atoms not in sizes:
                    row["skipped"] = (
                        "MM engine timed on the dipeptide System only" if name == "MM"
                        else "too slow for this benchmark on 2 cores (see module docstring)"
                    )
                elif n_pc and not engine.supports_point_charges:
                    row["skipped"] = "engine takes no point charges"
                else:
                    pcs = point_charges(xyz.mean(axis=0), n_pc) if n_pc else None
                    seconds = time_engine(engine, z, xyz, pcs, repeats, warm_up=name != "DFT")
                    row["seconds_per_config"] = round(seconds, 4)
                print(row)
                rows.append(row)
    result = {
        "benchmark": "cost of one single point with forces (atoms + point charges), one thread",
        "rows": rows,
        "host": {"cpus": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2)},
        "note": "DFT for 6 and 22 atoms (60 atoms would take far longer on 2 cores); MM engine on the 22-atom "
        "dipeptide (ff14SB System)",
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
