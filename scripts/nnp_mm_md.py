"""NNP/MM molecular dynamics through openmm-ml, as a user would write it: copy and adapt.

    python scripts/nnp_mm_md.py demo_output/model/model.pt --steps 2000 --out nnp_mm.dcd

Builds ff14SB/TIP3P with PME for the shipped solvated alanine dipeptide, puts the dipeptide on the
NNP with electrostatic embedding, and runs Langevin MD with DCD and state-data reporters.
"""

import argparse
import sys

import openmmml  # noqa: F401  (loads the 'biomol-nnp' potential and the 'electrostatic' embedding)
from openmm import LangevinMiddleIntegrator, Platform, app, unit
from openmmml import MLPotential

from biomol_nnp.config import SystemSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="deployed model.pt")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--out", default="nnp_mm.dcd")
    args = parser.parse_args()

    system_settings = SystemSettings()
    pdb = app.PDBFile(str(system_settings.solvated_pdb))
    forcefield = app.ForceField(*system_settings.forcefield)
    mm_system = forcefield.createSystem(pdb.topology, nonbondedMethod=app.PME, nonbondedCutoff=0.9 * unit.nanometer,
                                        constraints=app.HBonds)
    region = [atom.index for atom in pdb.topology.atoms() if atom.residue.name in system_settings.region_residues]
    potential = MLPotential("biomol-nnp", modelPath=args.model)
    system = potential.createMixedSystem(pdb.topology, mm_system, region, embedding="electrostatic")

    integrator = LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 1 * unit.femtosecond)
    simulation = app.Simulation(pdb.topology, system, integrator, Platform.getPlatformByName("CPU"))
    simulation.context.setPositions(pdb.positions)
    simulation.minimizeEnergy(maxIterations=50)
    simulation.reporters.append(app.DCDReporter(args.out, 100))
    simulation.reporters.append(app.StateDataReporter(sys.stdout, 100, step=True, potentialEnergy=True,
                                                      temperature=True, speed=True))
    simulation.step(args.steps)


if __name__ == "__main__":
    main()
