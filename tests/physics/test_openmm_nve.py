"""NVE energy conservation of NNP/MM with the electrostatic embedding (analytic toy model, Reference).

System: the alanine dipeptide (the ML region) and its 6 nearest TIP3P waters, no cutoff, flexible
waters, no constraints. The toy model's embedding cutoff (0.4 nm, switch 0.1 nm) puts two of the
six waters in the switching shell (d_min 0.31 and 0.34 nm), so the smooth molecule switch is exercised.

Drift bound (computed by `biomol_nnp.simulate.nve.nve_drift`, the function behind `biomol-nnp check-nve`):
the slope of a linear fit of the total energy over 200 steps of 0.5 fs (0.1 ps) must be below
``DRIFT_BOUND`` = 2.0 kJ/mol/ns per degree of freedom (117 dof: 3 N minus the centre of mass), and the RMS
fluctuation of the total energy about that line below ``FLUCTUATION_BOUND`` = 2 % of the RMS fluctuation of
the kinetic energy. Measured (deterministic: Reference platform, seeded velocities): slope -0.78
kJ/mol/ns/dof, fluctuation 1.2 %. Over 0.5 ps the slope is -0.054 at 0.5 fs and -0.009 at 0.25 fs
(integration error ~dt^2, so the forces are conservative); with an embedding cutoff of 1.0 nm (no water in
the switch) -0.084 and -0.018.

The check itself is tested against a force that is not the gradient of the energy (it must drift), and
the command line on a prepared system.
"""

from __future__ import annotations

import json

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u
import openmmml  # noqa: F401  (openmm-ml first: it loads our entry points)
import pytest
from openmmml import MLPotential

from biomol_nnp.cli import main
from biomol_nnp.config import SYSTEMS_DIR
from biomol_nnp.exceptions import InputError
from biomol_nnp.simulate.nve import nve_drift
from tests.run_helpers import dipeptide_water_cluster, prepared_dipeptide, write_run_config
from tests.toy_models import make_toy_model

STEPS, TIME_STEP_FS = 200, 0.5
DRIFT_BOUND = 2.0  # kJ/mol per ns per degree of freedom
FLUCTUATION_BOUND = 0.02  # RMS(total) / RMS(kinetic)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    topology, system, positions, ml = dipeptide_water_cluster()
    toy = make_toy_model(tmp_path_factory.mktemp("toy") / "toy.pt", embedding_cutoff_nm=0.4)
    mixed = MLPotential("biomol-nnp", modelPath=str(toy)).createMixedSystem(
        topology, system, ml, embedding="electrostatic"
    )
    return mixed, positions


def test_nve_energy_conservation(cluster):
    system, positions = cluster
    result = nve_drift(
        system, positions, STEPS, TIME_STEP_FS, report_interval=5, platform="Reference", seed=7, minimize_iterations=200
    )
    assert np.all(np.isfinite(result.total_kj_mol))
    assert abs(result.drift_kj_mol_ns_dof) < DRIFT_BOUND
    assert result.fluctuation_ratio < FLUCTUATION_BOUND


class _Swirl:
    """Non-conservative force field F = k (-y, x, 0) with zero energy: does work along any circulation."""

    def __init__(self, k: float) -> None:
        self.k = k

    def __call__(self, state):
        xyz = state.getPositions(asNumpy=True).value_in_unit(u.nanometer)
        centred = xyz - xyz.mean(axis=0)
        return 0.0, self.k * np.stack([-centred[:, 1], centred[:, 0], np.zeros(len(xyz))], axis=1)


def test_nve_drift_detects_forces_that_are_not_the_energy_gradient():
    """The same MM System with and without a force that is not -dE/dx: the check must tell them apart."""
    pdb = app.PDBFile(str(SYSTEMS_DIR / "alanine_dipeptide" / "vacuum.pdb"))
    system = app.ForceField("amber14-all.xml").createSystem(pdb.topology, nonbondedMethod=app.NoCutoff)
    good = nve_drift(system, pdb.positions, 400, 0.5, report_interval=10, platform="Reference", seed=3)
    swirl = openmm.PythonForce(_Swirl(500.0))
    swirl.setParticles(list(range(system.getNumParticles())))
    system.addForce(swirl)
    bad = nve_drift(system, pdb.positions, 400, 0.5, report_interval=10, platform="Reference", seed=3)
    assert good.dof == 3 * 22 - 3
    assert abs(good.drift_kj_mol_ns_dof) < 20.0
    assert abs(bad.drift_kj_mol_ns_dof) > 20 * max(abs(good.drift_kj_mol_ns_dof), 1.0)


def test_check_nve_command_writes_json(tmp_path):
    """`biomol-nnp check-nve CONFIG --mm-only --prepared DIR` on the prepared dipeptide; JSON and plot written."""
    prepared = prepared_dipeptide(tmp_path / "prepared", solvated=False)
    config = write_run_config(tmp_path / "run.yaml", nve_steps=200, nve_report_interval=10, minimize_iterations=50)
    output = tmp_path / "nve"
    assert main(["-q", "check-nve", str(config), "--mm-only", "--prepared", str(prepared), "-o", str(output)]) == 0
    data = json.loads((output / "nve.json").read_text())
    assert data["steps"] == 200 and data["timestep_fs"] == 0.5 and data["mm_only"] is True
    assert data["dof"] == 3 * 22 - 12 - 3  # HBonds constraints from prepare, CMMotionRemover
    assert len(data["total_kj_mol"]) == 20
    assert data["drift_kj_mol_ns_dof"] == pytest.approx(data["drift_kj_mol_ns"] / data["dof"])
    assert abs(data["drift_kj_mol_ns_dof"]) < 20.0
    assert (output / "nve.png").stat().st_size > 0
    with pytest.raises(InputError, match="energy samples"):
        nve_drift(openmm.System(), [], steps=20, report_interval=10)
