"""The openmm-ml plugins are registered, refuse bad model files and bad regions with clear errors."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import openmm
import openmm.app as app
import openmmml  # noqa: F401  (openmm-ml first: it loads our entry points)
import pytest
import torch
from openmmml import MLPotential

from biomol_nnp.config import SYSTEMS_DIR
from biomol_nnp.exceptions import InputError, ModelFileError
from biomol_nnp.openmm.backend import NNP_FORCE_NAME, ModelForceCallback, create_force, force_callback
from biomol_nnp.openmm.potential import BiomolNNPPotentialImpl
from tests.toy_models import make_toy_model

VACUUM_PDB = SYSTEMS_DIR / "alanine_dipeptide" / "vacuum.pdb"


@pytest.fixture(scope="module")
def toy_path(tmp_path_factory):
    return make_toy_model(tmp_path_factory.mktemp("toy") / "toy.pt")


@pytest.fixture(scope="module")
def vacuum():
    pdb = app.PDBFile(str(VACUUM_PDB))
    system = app.ForceField("amber14-all.xml").createSystem(pdb.topology, nonbondedMethod=app.NoCutoff)
    return pdb, system


def test_entry_points_registered(toy_path):
    assert "electrostatic" in MLPotential._embeddingFactories
    potential = MLPotential("biomol-nnp", modelPath=str(toy_path))
    assert isinstance(potential._impl, BiomolNNPPotentialImpl)
    assert "electrostatic" in potential.getSupportedEmbeddings()
    assert potential._impl.getMLLongRange() is False


def test_text_file_is_not_a_model(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(ModelFileError, match="not a TorchScript archive"):
        MLPotential("biomol-nnp", modelPath=str(path))


def test_saved_tensor_is_not_a_model(tmp_path):
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(ModelFileError, match="could not be loaded as TorchScript|not a deployed"):
        MLPotential("biomol-nnp", modelPath=str(path))


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        MLPotential("biomol-nnp", modelPath=str(tmp_path / "absent.pt"))


def test_missing_model_path_and_typo():
    with pytest.raises(InputError, match="needs modelPath"):
        MLPotential("biomol-nnp")
    with pytest.raises(InputError, match="unknown arguments \\['modelpath'\\]"):
        MLPotential("biomol-nnp", modelpath="x.pt")


def test_missing_element_is_named(tmp_path, vacuum):
    path = make_toy_model(tmp_path / "no_nitrogen.pt", elements=[1, 6, 8])
    pdb, _ = vacuum
    with pytest.raises(ModelFileError, match=r"atomic numbers \[7\]"):
        MLPotential("biomol-nnp", modelPath=str(path)).createSystem(pdb.topology)


def test_electrostatic_needs_biomol_potential(vacuum):
    pdb, system = vacuum

    class Other(openmmml.mlpotential.MLPotentialImpl):
        pass

    embedding = MLPotential._embeddingFactories["electrostatic"].createEmbedding("electrostatic")
    with pytest.raises(InputError, match="needs a model that predicts charges"):
        embedding.createMixedSystem(Other(), pdb.topology, system, [0, 1, 2], 0, False)


def test_forbidden_cuts_refused(toy_path, vacuum):
    """Only single C-C / C-N bonds may be cut (biomol_nnp.region rules); cap distances are not negotiable."""
    pdb, system = vacuum
    potential = MLPotential("biomol-nnp", modelPath=str(toy_path))
    ala = [a.index for a in pdb.topology.atoms() if a.residue.name == "ALA"]
    no_amide_h = [i for i in ala if list(pdb.topology.atoms())[i].name != "H"]
    with pytest.raises(InputError, match="only single C-C or C-N bonds can be capped"):
        potential.createMixedSystem(pdb.topology, system, no_amide_h, embedding="electrostatic")
    with pytest.raises(InputError, match="LINK_BOND_LENGTH_NM"):
        potential.createMixedSystem(
            pdb.topology, system, ala, embedding="electrostatic", linkAtomDistances=[(6, 4, 0.1)]
        )


def test_unknown_embedding_argument(toy_path, vacuum):
    pdb, system = vacuum
    with pytest.raises(InputError, match="unknown arguments \\['totalcharge'\\]"):
        MLPotential("biomol-nnp", modelPath=str(toy_path)).createMixedSystem(
            pdb.topology, system, list(range(22)), embedding="electrostatic", totalcharge=0
        )


def test_torch_backend_refused_clearly(toy_path):
    with pytest.raises(InputError, match="openmm-torch"):
        create_force(toy_path, [0], [1], 0.0, backend="torch")
    with pytest.raises(InputError, match="choose one of"):
        create_force(toy_path, [0], [1], 0.0, backend="jax")


def test_callback_validates_arguments(toy_path):
    with pytest.raises(InputError, match="one atomic number per ML atom"):
        ModelForceCallback(toy_path, [0, 1], [1], 0.0)
    with pytest.raises(InputError, match="one region only"):
        ModelForceCallback(toy_path, [0, 1], [1, 1], 0.0, mm_atoms=[1], mm_charges=[0.1])


def test_callback_pickles_without_module_and_matches_model(toy_path):
    callback = ModelForceCallback(toy_path, [0, 1, 2], [8, 1, 1], 0.0, mm_atoms=[3], mm_charges=[0.4])
    positions = np.array([[0.0, 0.0, 0.0], [0.096, 0.0, 0.0], [-0.024, 0.093, 0.0], [0.3, 0.1, 0.0]])
    energy, forces = callback.compute(positions, None)
    assert callback._module is not None
    clone = pickle.loads(pickle.dumps(callback))
    assert clone._module is None
    energy2, forces2 = clone.compute(positions, None)
    assert energy2 == pytest.approx(energy, rel=1e-12)
    np.testing.assert_allclose(forces2, forces, rtol=1e-12)
    assert forces.shape == (4, 3)
    assert abs(forces.sum(axis=0)).max() < 1e-9  # translation invariance: forces sum to zero


def test_force_survives_xml_and_deepcopy(toy_path):
    force = create_force(toy_path, [0, 1], [1, 1], 0.0, mm_atoms=[2, 3], mm_charges=[0.0, 0.5], force_group=3)
    assert list(force.getParticles()) == [0, 1, 3]  # zero charges are dropped
    assert force.getForceGroup() == 3
    clone = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(force))
    assert list(clone.getParticles()) == [0, 1, 3]
    copy.deepcopy(force)


def test_force_callback_reads_the_computation_back(toy_path):
    force = create_force(toy_path, [0, 1], [1, 1], 0.0, mm_atoms=[2, 3], mm_charges=[0.0, 0.5], force_group=3)
    callback = force_callback(force)
    assert isinstance(callback, ModelForceCallback)
    assert force.getName() == NNP_FORCE_NAME and force.getForceGroup() == 3
    assert callback.particles() == [0, 1, 3]  # the zero charge is dropped
    with pytest.raises(InputError, match="no pickled computation"):
        force_callback(openmm.HarmonicBondForce())
