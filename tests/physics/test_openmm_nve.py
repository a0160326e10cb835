"""NVE energy conservation of NNP/MM with the electrostatic embedding (analytic toy model, Reference).

System: the alanine dipeptide (the ML region) and its 6 nearest TIP3P waters, no cutoff, flexible
waters, no constraints. The toy model's embedding cutoff (0.4 nm, switch 0.1 nm) puts two of the
six waters in the switching shell (d_min 0.31 and 0.34 nm), so the smooth molecule switch is exercised.

Drift bound: the slope of a linear fit of the total energy over 200 steps of 0.5 fs (0.1 ps) must be
below ``DRIFT_BOUND`` = 2.0 kJ/mol/ns per degree of freedom (120 dof), and the RMS fluctuation of the
total energy below ``FLUCTUATION_BOUND`` = 2 % of the RMS fluctuation of the kinetic energy.
Measured (deterministic: Reference platform, seeded velocities): slope -0.79 kJ/mol/ns/dof, fluctuation
1.2 %. Over 0.5 ps the slope is -0.054 at 0.5 fs and -0.009 at 0.25 fs (integration error ~dt^2, so the
forces are conservative); with an embedding cutoff of 1.0 nm (no water in the switch) -0.084 and -0.018.
"""

from __future__ import annotations

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u
import openmmml  # noqa: F401  (openmm-ml first: it loads our entry points)
import pytest
from openmmml import MLPotential

from biomol_nnp.config import SYSTEMS_DIR
from tests.toy_models import make_toy_model

SOLVATED_PDB = SYSTEMS_DIR / "alanine_dipeptide" / "solvated.pdb"
PEPTIDE = ("ACE", "ALA", "NME")
STEPS, TIME_STEP_FS = 200, 0.5
DRIFT_BOUND = 2.0  # kJ/mol per ns per degree of freedom
FLUCTUATION_BOUND = 0.02  # RMS(total) / RMS(kinetic)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    pdb = app.PDBFile(str(SOLVATED_PDB))
    positions = pdb.getPositions(asNumpy=True).value_in_unit(u.nanometer)
    peptide = [a.index for a in pdb.topology.atoms() if a.residue.name in PEPTIDE]
    waters = [r for r in pdb.topology.residues() if r.name == "HOH"]

    def distance(residue):
        oxygen = next(a.index for a in residue.atoms() if a.element.symbol == "O")
        return np.min(np.linalg.norm(positions[peptide] - positions[oxygen], axis=1))

    keep = sorted(waters, key=distance)[:6]
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.delete([r for r in waters if r not in keep])
    modeller.topology.setPeriodicBoxVectors(None)
    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
    system = forcefield.createSystem(
        modeller.topology, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False
    )
    ml = [a.index for a in modeller.topology.atoms() if a.residue.name in PEPTIDE]
    toy = make_toy_model(tmp_path_factory.mktemp("toy") / "toy.pt", embedding_cutoff_nm=0.4)
    mixed = MLPotential("biomol-nnp", modelPath=str(toy)).createMixedSystem(
        modeller.topology, system, ml, embedding="electrostatic"
    )
    return mixed, modeller.positions


def test_nve_energy_conservation(cluster):
    system, positions = cluster
    platform = openmm.Platform.getPlatformByName("Reference")
    minimizer = openmm.Context(system, openmm.VerletIntegrator(0.001), platform)
    minimizer.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(minimizer, 10.0, 200)
    start = minimizer.getState(getPositions=True).getPositions()

    integrator = openmm.VerletIntegrator(TIME_STEP_FS * u.femtosecond)
    context = openmm.Context(system, integrator, platform)
    context.setPositions(start)
    context.setVelocitiesToTemperature(300 * u.kelvin, 7)
    totals, kinetics = [], []
    for _ in range(STEPS // 5):
        integrator.step(5)
        state = context.getState(getEnergy=True)
        kinetic = state.getKineticEnergy().value_in_unit(u.kilojoule_per_mole)
        totals.append(kinetic + state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole))
        kinetics.append(kinetic)
    totals_a, kinetics_a = np.asarray(totals), np.asarray(kinetics)
    times_ns = np.arange(1, len(totals) + 1) * 5 * TIME_STEP_FS * 1e-6
    dof = 3 * system.getNumParticles() - sum(system.isVirtualSite(i) for i in range(system.getNumParticles())) * 3
    slope = np.polyfit(times_ns, totals_a, 1)[0] / dof
    fluctuation = np.std(totals_a) / np.std(kinetics_a)
    print(f"drift {slope:.3g} kJ/mol/ns/dof over {dof} dof; total-energy fluctuation {fluctuation:.3g} of kinetic")
    assert np.all(np.isfinite(totals_a))
    assert abs(slope) < DRIFT_BOUND
    assert fluctuation < FLUCTUATION_BOUND
