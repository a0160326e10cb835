"""A region whose total charge the model never saw in training is refused at System creation."""

import openmmml  # noqa: F401  (registers the plugins)
import pytest
from openmm import app
from openmmml import MLPotential

from biomol_nnp.config import SystemSettings
from biomol_nnp.exceptions import ModelFileError
from biomol_nnp.models.export import build_metadata, check_total_charge, load_model, save_model
from tests.toy_models import ToyModel


@pytest.fixture
def neutral_only_model(tmp_path):
    metadata = build_metadata([1, 6, 7, 8], 0.5, 1.0, 3, "GFN2-xTB", "test", training_total_charges=[0])
    return save_model(ToyModel([1, 6, 7, 8]), tmp_path / "model.pt", metadata)


def test_check_total_charge(neutral_only_model):
    _, metadata = load_model(neutral_only_model)
    check_total_charge(metadata, 0.0)
    with pytest.raises(ModelFileError, match=r"total charge 1 e but the model was trained only on .*\[0\]"):
        check_total_charge(metadata, 1.0)
    check_total_charge({}, 5.0)  # files without the record are not checked


def test_charged_region_refused_at_system_creation(neutral_only_model):
    pdb = app.PDBFile(str(SystemSettings().vacuum_pdb))
    system = app.ForceField("amber14-all.xml").createSystem(pdb.topology, nonbondedMethod=app.NoCutoff)
    atoms = [a.index for a in pdb.topology.atoms()]
    potential = MLPotential("biomol-nnp", modelPath=str(neutral_only_model))
    potential.createMixedSystem(pdb.topology, system, atoms, embedding="electrostatic")
    with pytest.raises(ModelFileError, match="total charge 1 e"):
        potential.createMixedSystem(pdb.topology, system, atoms, embedding="electrostatic", totalCharge=1)
