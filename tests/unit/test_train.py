"""Training pieces: reference energies, trajectory splits, padding, and a short fit that must improve."""

import copy

import numpy as np
import pytest
import torch

from biomol_nnp.config import ModelSettings, TrainSettings
from biomol_nnp.exceptions import InputError
from biomol_nnp.models.registry import ARCHITECTURES
from biomol_nnp.train.data import TrainingSample, collate, split_by_trajectory
from biomol_nnp.train.initialise import fit_self_energies, initialise
from biomol_nnp.train.trainer import evaluate, member_settings, train_ensemble, train_member

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
    hydrogens = int(np.sum(numbers == 1))
    charges = np.where(numbers == 1, 0.1, -0.1 * hydrogens / (len(numbers) - hydrogens))
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
        frame=len(numbers),
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
    settings = TrainSettings(
        ensemble_size=2, epochs=60, batch_size=4, learning_rate=1e-2, dtype="float64", embedding_weight=0.0
    )
    train, _ = split_by_trajectory(samples, settings.validation_fraction, settings.seed)
    untrained, _ = initialise(train, model_settings, settings)
    before = evaluate(untrained.double(), train, torch.float64)
    result = train_ensemble(samples, model_settings, settings)
    after = result.metrics["train"]
    assert after["force_mae_kcal_per_mol_A"] < 0.7 * before["force_mae_kcal_per_mol_A"]
    assert after["charge_mae_e"] < 0.5 * before["charge_mae_e"]
    for history in result.histories:
        assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]


def test_training_refuses_too_few_samples(samples):
    with pytest.raises(InputError, match="at least 2 labelled configurations"):
        train_ensemble(samples[:1], ModelSettings(), TrainSettings())


def small_settings(**changes):
    base = dict(ensemble_size=2, epochs=6, batch_size=4, learning_rate=1e-2, dtype="float64", embedding_weight=1.0)
    return TrainSettings(**(base | changes))


SMALL_MODEL = ModelSettings(
    elements=[1, 6, 8], hidden_layers=[8], radial_shifts=8, angular_shifts=2, angular_sections=4
)


def test_cosine_schedule_follows_its_formula(samples):
    settings = small_settings(ensemble_size=1, epochs=5)
    history = train_ensemble(samples, SMALL_MODEL, settings).histories[0]
    low = settings.learning_rate / 20
    expected = [low + (settings.learning_rate - low) * (1 + np.cos(np.pi * e / 5)) / 2 for e in range(5)]
    assert [h["learning_rate"] for h in history] == pytest.approx(expected, rel=1e-12)


def test_early_stopping_and_plateau_schedule(samples):
    # a far too large step makes the validation loss stall, so both rules act within the epoch budget
    settings = small_settings(
        ensemble_size=1, epochs=40, learning_rate=0.3, early_stopping_patience=4, lr_schedule="plateau",
        plateau_patience=1, plateau_factor=0.5,
    )  # fmt: skip
    result = train_ensemble(samples, SMALL_MODEL, settings)
    history = result.histories[0]
    losses = [h["validation_loss"] for h in history]
    best = int(np.argmin(losses))
    # stopped exactly `patience` epochs after the best validation loss, and that state was kept
    assert result.metrics["training"]["stopped_early"] == [True]
    assert len(history) == best + 1 + settings.early_stopping_patience < settings.epochs
    assert result.metrics["training"]["best_validation_loss"] == [losses[best]]
    rates = [h["learning_rate"] for h in history]
    assert all(b <= a for a, b in zip(rates, rates[1:], strict=False)) and rates[-1] < rates[0]
    for k in range(1, len(rates)):
        if rates[k] < rates[k - 1]:  # a cut follows two epochs in a row without a new best
            assert min(losses[k - 2 : k]) >= min(losses[: k - 2] or [np.inf])
        assert np.log2(settings.learning_rate / rates[k]) == pytest.approx(
            round(np.log2(settings.learning_rate / rates[k]))
        )


def test_warm_start_keeps_the_start_unless_the_validation_loss_improves(samples):
    settings = small_settings(epochs=3)
    trained = train_ensemble(samples, SMALL_MODEL, settings)
    start = {key: value.clone() for key, value in trained.model.state_dict().items()}
    splits = (trained.train_samples, trained.validation_samples)

    def warm(**changes):
        own = settings.model_copy(update=changes)
        return train_member(*splits, SMALL_MODEL, own, 0, start_model=copy.deepcopy(trained.model))

    # far too large steps only make the validation loss worse: the starting weights come back unchanged
    wild = warm(learning_rate=30.0)
    assert len(wild.history) == 3 and min(h["validation_loss"] for h in wild.history) > wild.best_loss
    assert wild.state.keys() == start.keys() and all(torch.equal(wild.state[k], start[k]) for k in start)
    # small steps continue the descent: a later epoch beats the start and is the one kept
    calm = warm(epochs=6)
    assert calm.best_loss == min(h["validation_loss"] for h in calm.history) < wild.best_loss
    assert not torch.equal(calm.state["members.1.networks.0.0.weight"], start["members.1.networks.0.0.weight"])


def test_dask_members_equal_sequential_members(samples):
    pytest.importorskip("distributed")
    settings = small_settings(epochs=3)
    sequential = train_ensemble(samples, SMALL_MODEL, settings)
    parallel = train_ensemble(samples, SMALL_MODEL, settings.model_copy(update={"workers": 2}))
    a, b = sequential.model.state_dict(), parallel.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert sequential.histories == parallel.histories
    # the members differ (their own seeds), and each is one of the merged members
    assert not torch.equal(a["members.0.networks.0.0.weight"], a["members.1.networks.0.0.weight"])
    assert len(sequential.metrics["test_members"]) == 2


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_merged_member_equals_the_member_trained_alone(samples, architecture):
    model_settings = SMALL_MODEL.model_copy(update={"architecture": architecture})
    settings = small_settings(epochs=2, dtype="float64")
    result = train_ensemble(samples, model_settings, settings)
    alone = train_member(result.train_samples, result.validation_samples, model_settings, settings, member=1)
    single, _ = initialise(result.train_samples, model_settings, member_settings(settings, 1))
    single = single.double()
    single.load_state_dict(alone.state)
    sample = result.test_samples[0]
    inputs = (
        torch.from_numpy(sample.positions),
        torch.from_numpy(sample.atomic_numbers).long(),
        torch.tensor(sample.total_charge, dtype=torch.float64),
        torch.from_numpy(sample.mm_positions),
        torch.from_numpy(sample.mm_charges),
        torch.zeros(0, 3, dtype=torch.float64),
    )
    merged_energies = result.model.ensemble_energies(*inputs).detach()
    assert merged_energies.shape == (2,)
    assert float(merged_energies[1]) == pytest.approx(float(single.ensemble_energies(*inputs).detach()[0]), abs=1e-9)
    assert float(merged_energies[0]) != pytest.approx(float(merged_energies[1]), abs=1e-6)
