"""The deployed model file: round trip of both architectures, metadata that must match the weights, sulfur."""

import json

import numpy as np
import pytest
import torch

from biomol_nnp.config import ModelSettings, PaiNNSettings, TrainSettings
from biomol_nnp.exceptions import ModelFileError
from biomol_nnp.models.calculator import ModelCalculator
from biomol_nnp.models.export import load_model, model_metadata, save_model
from biomol_nnp.models.registry import build_model
from biomol_nnp.train.data import TrainingSample
from biomol_nnp.train.initialise import initialise

METHANETHIOL = np.array([6, 16, 1, 1, 1, 1])
GEOMETRY = np.array(
    [[0.0, 0.0, 0.0], [0.182, 0.0, 0.0], [-0.036, 0.103, 0.0], [-0.036, -0.051, 0.089], [-0.036, -0.051, -0.089],
     [0.215, 0.13, 0.0]]
)  # fmt: skip


def save(tmp_path, model_settings, members=2, **changes):
    model = build_model(model_settings, members).double()
    metadata = model_metadata(model_settings, members, "GFN2-xTB", "test")
    metadata.update(changes)
    return model, save_model(model, tmp_path / "model.pt", metadata)


def call(module, positions, numbers):
    none = torch.zeros(0, 3, dtype=torch.float64)
    return module(torch.tensor(positions), torch.tensor(numbers), torch.tensor(0.0), none, none[:, 0], none).detach()


@pytest.mark.parametrize("architecture", ["ani", "painn"])
def test_round_trip_records_architecture_and_hyperparameters(tmp_path, architecture):
    settings = ModelSettings(architecture=architecture, elements=[1, 6, 8, 16])
    model, path = save(tmp_path, settings)
    module, metadata = load_model(path)
    assert metadata["architecture"] == architecture
    assert ModelSettings.model_validate(metadata["settings"]) == settings
    assert metadata["cutoff_nm"] == (0.5 if architecture == "painn" else 0.52)
    plain = torch.jit.load(str(path))  # loadable without our package's loader
    expected = float(call(model, GEOMETRY, METHANETHIOL))
    assert float(call(module, GEOMETRY, METHANETHIOL)) == pytest.approx(expected, abs=1e-10)
    assert float(call(plain, GEOMETRY, METHANETHIOL)) == pytest.approx(expected, abs=1e-10)


def test_refuses_elements_that_contradict_the_weights(tmp_path):
    _, path = save(tmp_path, ModelSettings(), elements=[1, 6, 7, 8, 16])
    with pytest.raises(
        ModelFileError, match=r"metadata elements \[1, 6, 7, 8, 16\] but the weights cover .*\[1, 6, 7, 8\]"
    ):
        load_model(path)


def test_refuses_wrong_ensemble_size(tmp_path):
    _, path = save(tmp_path, ModelSettings(architecture="painn"), ensemble_size=3)
    with pytest.raises(ModelFileError, match="metadata ensemble_size 3 but the file holds 2 members"):
        load_model(path)


def test_refuses_wrong_architecture(tmp_path):
    _, path = save(tmp_path, ModelSettings(), architecture="painn")
    with pytest.raises(ModelFileError, match="metadata architecture 'painn' but the weights are a 'ani' model"):
        load_model(path)


def test_refuses_hyperparameters_that_do_not_describe_the_weights(tmp_path):
    settings = ModelSettings(architecture="painn")
    wider = settings.model_copy(update={"painn": PaiNNSettings(features=48)}).model_dump(mode="json")
    _, path = save(tmp_path, settings, settings=wider)
    with pytest.raises(ModelFileError, match=r"parameter '.*' has shape \(.*32.*\) but the metadata settings give"):
        load_model(path)
    deeper = settings.model_copy(update={"painn": PaiNNSettings(interactions=3)}).model_dump(mode="json")
    _, path = save(tmp_path, settings, settings=deeper)
    with pytest.raises(ModelFileError, match=r"do not match the 'painn' architecture .*missing \['members.0.blocks.2"):
        load_model(path)


def test_refuses_invalid_settings_in_metadata(tmp_path):
    _, path = save(tmp_path, ModelSettings(), settings={"hidden_layer": [3]})
    with pytest.raises(ModelFileError, match="metadata settings are not valid ModelSettings"):
        load_model(path)


def sulfur_samples():
    rng = np.random.default_rng(0)
    samples = []
    for frame in range(6):
        positions = GEOMETRY + rng.normal(0, 0.004, GEOMETRY.shape)
        samples.append(
            TrainingSample(
                METHANETHIOL, positions, 0.0, -1.2e6 + rng.normal(0, 5.0), rng.normal(0, 50, (6, 3)),
                np.array([-0.2, -0.1, 0.1, 0.1, 0.0, 0.1]), np.zeros((0, 3)), np.zeros(0), float("nan"),
                frame // 3, "md",
            )
        )  # fmt: skip
    return samples


@pytest.mark.parametrize("architecture", ["ani", "painn"])
def test_sulfur_end_to_end(tmp_path, architecture):
    """H C N O S: initialise on methanethiol labels, export, reload, evaluate energy and forces with S."""
    settings = ModelSettings(architecture=architecture, elements=[1, 6, 7, 8, 16])
    samples = sulfur_samples()
    model, self_energies = initialise(samples, settings, TrainSettings(ensemble_size=2))
    assert np.all(np.isfinite(self_energies)) and len(self_energies) == 5
    path = save_model(model.double(), tmp_path / "model.pt", model_metadata(settings, 2, "GFN2-xTB", "test"))
    calculator = ModelCalculator(path, atomic_numbers=METHANETHIOL.tolist())
    energy, forces = calculator(samples[0].positions)
    assert energy == pytest.approx(samples[0].energy, abs=200.0)  # self energies carry the bulk of it
    assert forces.shape == (6, 3) and np.all(np.isfinite(forces)) and np.abs(forces).max() > 0
    assert json.loads(json.dumps(calculator.metadata))["elements"] == [1, 6, 7, 8, 16]
