"""The embedding-force label: forces on the region from the MM charges, learned by the trainer."""

import dataclasses

import numpy as np
import torch

from biomol_nnp.config import ModelSettings, TrainSettings
from biomol_nnp.train.data import collate, epoch_batches
from biomol_nnp.train.initialise import initialise
from biomol_nnp.train.trainer import evaluate, predict, train_ensemble
from biomol_nnp.units import ELECTROSTATIC_CONSTANT
from tests.unit.test_train import METHANE, METHANOL, WATER, harmonic_sample


def with_coulomb_embedding(sample):
    """The sample with embedding energy and forces of its fixed atomic charges in the field of its MM charges."""
    vectors = sample.positions[:, None, :] - sample.mm_positions[None, :, :]
    distances = np.linalg.norm(vectors, axis=-1)
    pair = ELECTROSTATIC_CONSTANT * sample.charges[:, None] * sample.mm_charges[None, :]
    energy = float(np.sum(pair / distances))
    forces = np.einsum("nm,nmk->nk", pair / distances**3, vectors)
    return dataclasses.replace(sample, embedding_energy=energy, embedding_forces=forces)


def embedded_samples(count_per_trajectory=6, trajectories=4, seed=3):
    rng = np.random.default_rng(seed)
    return [
        with_coulomb_embedding(harmonic_sample((WATER, METHANE, METHANOL)[frame % 3], rng, trajectory))
        for trajectory in range(trajectories)
        for frame in range(count_per_trajectory)
    ]


def test_coulomb_labels_are_minus_the_gradient_of_the_energy():
    sample = embedded_samples(1, 1)[0]
    step = 1e-6
    moved = sample.positions.copy()
    moved[1, 2] += step
    shifted = with_coulomb_embedding(dataclasses.replace(sample, positions=moved))
    numeric = -(shifted.embedding_energy - sample.embedding_energy) / step
    assert abs(numeric - sample.embedding_forces[1, 2]) < 1e-3 * max(1.0, abs(numeric))


def test_predicted_embedding_forces_match_finite_differences():
    samples = embedded_samples(2, 1)
    model, _ = initialise(samples, ModelSettings(elements=[1, 6, 8], hidden_layers=[8]), TrainSettings())
    model = model.double()
    batch = collate(samples, torch.float64)
    analytic = predict(model, batch, create_graph=False, embedding_forces=True).member_embedding_forces
    assert analytic is not None
    step = 1e-5
    for frame, atom, axis in ((0, 0, 0), (1, 2, 1)):
        energies = []
        for sign in (1, -1):
            moved = collate(samples, torch.float64)
            moved.positions[frame, atom, axis] += sign * step
            energies.append(predict(model, moved, create_graph=False).member_embedding[0, frame])
        numeric = -(energies[0] - energies[1]) / (2 * step)
        assert torch.isclose(analytic[0, frame, atom, axis], numeric, rtol=1e-5, atol=1e-6)


def test_epoch_batches_keep_vacuum_and_embedded_frames_apart():
    rng = np.random.default_rng(0)
    samples = [harmonic_sample(WATER, rng, 0, mm=i % 3 == 0) for i in range(23)]
    batches = epoch_batches(samples, 4, np.random.default_rng(1))
    assert sorted(np.concatenate(batches).tolist()) == list(range(23))
    for batch in batches:
        assert len({len(samples[i].mm_charges) > 0 for i in batch}) == 1
        assert len(batch) <= 4


def embedding_force_mae(model, samples):
    """Mean absolute error (kJ/mol/nm) of the predicted embedding forces of the first member."""
    batch = collate(samples, torch.float64)
    out = predict(model.double(), batch, create_graph=False, embedding_forces=True)
    assert out.member_embedding_forces is not None
    return float((out.member_embedding_forces[0] - batch.embedding_forces).abs().mean())


def test_training_learns_the_embedding_forces():
    samples = embedded_samples()
    model_settings = ModelSettings(elements=[1, 6, 8], hidden_layers=[16])
    settings = TrainSettings(ensemble_size=1, epochs=40, batch_size=4, learning_rate=1e-2, dtype="float64")
    untrained, _ = initialise(samples, model_settings, settings)
    before = embedding_force_mae(untrained, samples)
    learned = embedding_force_mae(train_ensemble(samples, model_settings, settings).model, samples)
    without = settings.model_copy(update={"embedding_force_weight": 0.0})
    unlearned = embedding_force_mae(train_ensemble(samples, model_settings, without).model, samples)
    assert learned < 0.5 * before
    assert learned < 0.5 * unlearned


def test_evaluation_reports_the_forces_in_the_field():
    samples = embedded_samples(2, 1)
    model, _ = initialise(samples, ModelSettings(elements=[1, 6, 8], hidden_layers=[8]), TrainSettings())
    metrics = evaluate(model.double(), samples, torch.float64)
    vacuum_only = [dataclasses.replace(s, embedding_forces=None) for s in samples]
    assert np.isfinite(metrics["embedded_force_mae_kcal_per_mol_A"])
    assert np.isnan(evaluate(model.double(), vacuum_only, torch.float64)["embedded_force_mae_kcal_per_mol_A"])
