"""Training pieces: reference energies, trajectory splits, padding, and a short fit that must improve."""

import numpy as np
import pytest
import torch

from biomol_nnp.config import ModelSettings, TrainSettings
from biomol_nnp.exceptions import InputError
from biomol_nnp.train.data import TrainingSample, collate, fit_self_energies, split_by_trajectory
from biomol_nnp.train.trainer import evaluate, initialise, train_ensemble

WATER = np.array([8, 1, 1])
METHANE = np.array([6, 1, 1, 1, 1])
METHANOL = np.array([6, 8, 1, 1, 1, 1])
DIRECTIONS = (
    np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1], [0, 0, 1.0]]) / np.sqrt([3, 3, 3, 3, 1])[:, None]
)  # tetrahedral directions plus one more, so no two atoms start on top of each other
SELF = {1: -1300.0, 6: -9900.0, 8: -19800.0}


def harmonic_sample(numbers, rng, trajectory, source="md", mm=True):
    """A molecule near a reference shape with an analytic energy: springs to the first atom."""
    reference = np.zeros((len(numbers), 3))
    reference[1:] = 0.1 * DIRECTIONS[: len(numbers) - 1]
    positions = reference + rng.normal(0, 0.003, reference.shape)
    bonds = positions[1:] - positions[0]
    length = np.linalg.norm(bonds, axis=1)
    k = 3e5
    energy = sum(SELF[int(z)] for z in numbers) + 0.5 * k * np.sum((length - 0.1) ** 2)
    forces = np.zeros_like(positions)
    pull = -k * ((length - 0.1) / length)[:, None] * bonds
    forces[1:] = pull
    forces[0] = -pull.sum(0)
    charges = np.where(numbers == 1, 0.1, -0.1 * (len(numbers) - 1))
    mm_positions = rng.uniform(0.4, 0.8, (3, 3)) if mm else np.zeros((0, 3))
    mm_charges = np.array([-0.8, 0.4, 0.4]) if mm else np.zeros(0)
    return TrainingSample(
        numbers,
        positions,
        0.0,
        float(energy),
        forces,
        charges,
        mm_positions,
        mm_charges,
        -5.0 if mm else float("nan"),
        trajectory,
        source,
    )


@pytest.fixture
def samples():
    rng = np.random.default_rng(0)
    out = []
    for trajectory in range(4):
        for frame in range(6):
            numbers = (WATER, METHANE, METHANOL)[frame % 3]
            out.append(harmonic_sample(numbers, rng, trajectory, mm=trajectory % 2 == 0))
    return out


def test_self_energies_recover_per_element_references(samples):
    fitted = fit_self_energies(samples, [1, 6, 8])
    # energies are references plus small strain energies, so the fit lands close to the references
    assert fitted == pytest.approx([SELF[1], SELF[6], SELF[8]], abs=8.0)


def test_self_energies_refuse_unknown_elements(samples):
    with pytest.raises(InputError, match="atomic number 8 .* not among the model elements"):
        fit_self_energies(samples, [1, 6])


def test_split_holds_out_whole_trajectories(samples):
    train, test = split_by_trajectory(samples, 0.25, seed=1)
    held = {s.trajectory_id for s in test}
    assert held and not held & {s.trajectory_id for s in train}
    assert len(train) + len(test) == len(samples)


def test_split_falls_back_to_time_split_with_one_trajectory(samples):
    single = [s for s in samples if s.trajectory_id == 0]
    train, test = split_by_trajectory(single, 0.34)
    assert train == single[:4] and test == single[4:]


def test_collate_pads_with_nothing(samples):
    batch = collate(samples[:2], torch.float64)  # water (3 atoms) and methane (5 atoms)
    assert batch.atomic_numbers.shape == (2, 5)
    assert batch.atomic_numbers[0, 3:].tolist() == [0, 0]
    assert torch.all(batch.forces[0, 3:] == 0)
    assert batch.has_embedding.tolist() == [True, True]


def test_training_reduces_errors():
    rng = np.random.default_rng(1)
    samples = [
        harmonic_sample((WATER, METHANE, METHANOL)[frame % 3], rng, trajectory, mm=False)
        for trajectory in range(4)
        for frame in range(6)
    ]
    model_settings = ModelSettings(elements=[1, 6, 8], hidden_layers=[16])
    settings = TrainSettings(ensemble_size=2, epochs=60, batch_size=4, learning_rate=1e-2, dtype="float64")
    train, _ = split_by_trajectory(samples, settings.validation_fraction, settings.seed)
    untrained, _ = initialise(train, model_settings, settings)
    before = evaluate(untrained.double(), train, torch.float64)
    result = train_ensemble(samples, model_settings, settings)
    after = result.metrics["train"]
    assert after["force_mae_kcal_per_mol_A"] < 0.7 * before["force_mae_kcal_per_mol_A"]
    assert after["charge_mae_e"] < 0.5 * before["charge_mae_e"]
    assert result.history[-1]["train_loss"] < 0.5 * result.history[0]["train_loss"]


def test_training_refuses_too_few_samples(samples):
    with pytest.raises(InputError, match="at least 2 labelled configurations"):
        train_ensemble(samples[:1], ModelSettings(), TrainSettings())
