"""REST2 of the TrpZip2 beta-hairpin in TIP3P water, with an NNP region when a model is given: copy and adapt.

    python scripts/rest2_trpzip2.py -o rest2_trpzip2        # pure MM (Amber prmtop), REST2 of the peptide
    python scripts/rest2_trpzip2.py -o rest2_nnp --model model.pt --region "resid 2"   # NNP/MM, REST2 of that region

TrpZip2 (SWTWENGKWTWK-NH2, first NMR model of PDB 1LE1) comes solvated and parameterized with
openmmtools (``openmmtools/data/trpzip2-explicit``, old-format Amber prmtop + inpcrd read with ParmEd;
11034 atoms, Cl- counter-ions). The MM System uses PME
(0.9 nm), bonds to hydrogen constrained and rigid water. With ``--model`` the atoms of ``--region`` (an
MDAnalysis selection, whole residues; cut C-C/C-N bonds get link hydrogens) are moved onto the NNP with
electrostatic embedding, and REST2 scales that region (NNP energy by s, embedding by sqrt(s)); without a
model REST2 scales ``--region`` (default: the whole peptide) in the force field.
The model must cover the region's elements (H, C, N, O for TrpZip2).

Default run: 4 replicas with effective temperatures 300-450 K, 10 iterations of 250 steps (2 fs), i.e.
5 ps per replica: measured 7 min of CPU time on 2 cores (32 min wall on the shared, heavily loaded
development machine), neighbour acceptance 0.07-0.12 with the whole peptide as the region. That shows
the machinery, not converged sampling. To sample the hairpin's folding, scale to ~8-16 replicas up to
500-600 K (aim for neighbour acceptance 0.2-0.4 in ``summary.json``) and thousands of iterations
(tens of ns per replica) on a node with more cores (``--threads``); the run checkpoints every
iteration and resumes when started again with the same ``-o`` (raise ``--iterations`` to extend it).

Outputs in the folder: ``replicas/`` (log, reduced energies, one DCD per state, checkpoints),
``summary.json`` (states, acceptance, round trips), ``ramachandran.*`` and ``hbonds.*`` of the 300 K state.
"""

import argparse
import logging
from pathlib import Path

import openmmml  # noqa: F401  (loads the 'biomol-nnp' potential and the 'electrostatic' embedding)
from openmm import app, unit

from biomol_nnp.analysis.structure import hbond_occupancy, load_universe, ramachandran, write_hbonds, write_ramachandran
from biomol_nnp.config import ReplicaExchangeSettings
from biomol_nnp.io import write_text_atomic
from biomol_nnp.sampling.repex import replica_states, run_replica_exchange_system
from biomol_nnp.sampling.rest2 import rest2_system


def trpzip2_files() -> tuple[Path, Path]:
    """prmtop and inpcrd of TrpZip2 shipped with openmmtools."""
    from openmmtools.testsystems import get_data_filename

    folder = Path(get_data_filename("data/trpzip2-explicit/trpzip2.prmtop")).parent
    return folder / "trpzip2.prmtop", folder / "trpzip2.crd"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default="rest2_trpzip2", help="output folder (resumes if it has checkpoints)")
    parser.add_argument("--model", help="deployed model.pt: put --region on the NNP (default: pure MM)")
    parser.add_argument("--region", default="protein", help="MDAnalysis selection of the REST2 (and NNP) region")
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--max-temperature", type=float, default=450.0, help="highest effective temperature, K")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--steps-per-iteration", type=int, default=250)
    parser.add_argument("--platform", default="CPU", choices=["CPU", "Reference"], help="OpenMM platform")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    import parmed  # the shipped prmtop is in the old (pre-%FLAG) format that only ParmEd reads

    structure = parmed.load_file(*map(str, trpzip2_files()))
    system = structure.createSystem(
        nonbondedMethod=app.PME, nonbondedCutoff=0.9 * unit.nanometer, constraints=app.HBonds, rigidWater=True
    )
    topology, positions = structure.topology, structure.positions
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    pdb_path = output / "trpzip2.pdb"  # topology for MDAnalysis selections and the analyses
    with open(pdb_path, "w") as handle:
        app.PDBFile.writeFile(topology, positions, handle)
    from biomol_nnp.prepare import select_region

    region = select_region(pdb_path, args.region)
    if args.model:
        from openmmml import MLPotential

        potential = MLPotential("biomol-nnp", modelPath=args.model)
        system = potential.createMixedSystem(topology, system, region, embedding="electrostatic")
    system = rest2_system(system, region)
    logging.info("REST2 region: %d atoms (%s)%s", len(region), args.region, " on the NNP" if args.model else "")

    settings = ReplicaExchangeSettings(
        kind="rest2",
        n_replicas=args.replicas,
        max_temperature_k=args.max_temperature,
        iterations=args.iterations,
        steps_per_iteration=args.steps_per_iteration,
        equilibration_steps=args.steps_per_iteration,
        platform=args.platform,
        threads=args.threads,
        timestep_fs=1.0 if args.model else 2.0,
    )
    write_text_atomic(
        output / "command.txt", " ".join(["rest2_trpzip2.py", *[f"{k}={v}" for k, v in vars(args).items()]])
    )
    result = run_replica_exchange_system(topology, system, positions, replica_states(settings), settings, output)

    universe = load_universe(output / "replicas" / "state_0.dcd", pdb_path)
    write_ramachandran(ramachandran(universe, "protein"), output)
    write_hbonds(hbond_occupancy(universe, "protein"), output)
    logging.info("acceptance %s, %d round trips; outputs in %s", result.acceptance, result.round_trips, output)


if __name__ == "__main__":
    main()
