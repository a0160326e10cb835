"""Frame selection of the active-learning loop: threshold, diversity, budget; settings errors; held-out errors."""

import numpy as np
import pytest
import torch

from biomol_nnp.active.retrain import held_out_errors
from biomol_nnp.active.selection import (
    frame_descriptors,
    inverse_distance_descriptor,
    select_frames,
    uncertain_fraction,
)
from biomol_nnp.config import ActiveLearningSettings, PipelineSettings
from biomol_nnp.exceptions import ConfigError, InputError
from biomol_nnp.qm.labels import LabeledConfiguration
from tests.toy_models import make_toy_model


def test_only_frames_above_the_threshold_are_picked():
    force_std = np.array([10.0, 80.0, 50.0, 51.0, np.nan])
    descriptors = np.arange(5.0)[:, None]
    assert sorted(select_frames(force_std, descriptors, threshold=50.0, budget=10)) == [1, 3]
    assert select_frames(force_std, descriptors, threshold=100.0, budget=10) == []


def test_frames_above_the_ceiling_are_not_picked():
    force_std = np.array([10.0, 80.0, 500.0, 51.0, 5000.0])
    descriptors = np.arange(5.0)[:, None]
    assert select_frames(force_std, descriptors, 50.0, budget=10, ceiling=400.0) == [1, 3]
    assert sorted(select_frames(force_std, descriptors, 50.0, budget=10)) == [1, 2, 3, 4]


def test_budget_caps_the_selection_and_zero_budget_picks_nothing():
    force_std = np.full(6, 100.0)
    descriptors = np.random.default_rng(0).normal(size=(6, 4))
    assert len(select_frames(force_std, descriptors, 50.0, budget=3)) == 3
    assert select_frames(force_std, descriptors, 50.0, budget=0) == []
    with pytest.raises(InputError, match="budget=-1 is not allowed"):
        select_frames(force_std, descriptors, 50.0, budget=-1)


def test_farthest_point_selection_takes_one_frame_per_cluster():
    """Three tight clusters of frames, most uncertain in cluster A: a budget of 3 takes one from each."""
    rng = np.random.default_rng(1)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    cluster = np.repeat(np.arange(3), 5)
    descriptors = centres[cluster] + rng.normal(scale=0.1, size=(15, 2))
    force_std = np.where(cluster == 0, 200.0, 100.0) + rng.uniform(size=15)
    chosen = select_frames(force_std, descriptors, threshold=50.0, budget=3)
    assert chosen[0] == int(np.argmax(force_std))  # the most uncertain frame first
    assert sorted(cluster[chosen]) == [0, 1, 2]
    # taking the most uncertain frames instead would have picked three frames of cluster A
    assert set(cluster[np.argsort(-force_std)[:3]]) == {0}


def test_equally_distant_frames_go_to_the_more_uncertain():
    descriptors = np.array([[0.0], [1.0], [-1.0]])
    assert select_frames(np.array([100.0, 60.0, 70.0]), descriptors, 50.0, 2) == [0, 2]


def test_descriptor_is_invariant_to_rotation_and_translation_and_sees_distances():
    rng = np.random.default_rng(2)
    xyz = rng.normal(scale=0.2, size=(5, 3))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    moved = xyz @ q.T + np.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(inverse_distance_descriptor(moved), inverse_distance_descriptor(xyz), rtol=1e-10)
    assert inverse_distance_descriptor(xyz).shape == (10,)
    stretched = xyz.copy()
    stretched[0] *= 1.5
    assert not np.allclose(inverse_distance_descriptor(stretched), inverse_distance_descriptor(xyz))
    with pytest.raises(InputError, match="different atom counts"):
        frame_descriptors([xyz, xyz[:4]])


def test_uncertain_fraction_ignores_unusable_frames():
    assert uncertain_fraction(np.array([1.0, 60.0, np.nan, 70.0]), 50.0) == pytest.approx(2 / 3)
    assert np.isnan(uncertain_fraction(np.array([np.nan]), 50.0))


def test_threshold_is_calibrated_on_the_first_walkers_and_then_kept():
    from biomol_nnp.active.loop import calibrated_threshold

    fixed = ActiveLearningSettings(force_std_threshold_kj_per_mol_nm=50.0)
    state: dict = {}
    assert calibrated_threshold(fixed, state, np.array([10.0, 900.0])) == 50.0 and "threshold" not in state
    active = fixed.model_copy(update={"threshold_quantile": 0.5})
    first = np.array([100.0, 200.0, np.nan, 300.0, 400.0])  # the NaN frame (a walker that blew up) is not counted
    threshold = calibrated_threshold(active, state, first)
    assert threshold == pytest.approx(250.0) and state["threshold"] == threshold
    assert uncertain_fraction(first, threshold) == 0.5  # half the first round is uncertain by construction
    assert calibrated_threshold(active, state, np.array([1.0, 2.0])) == threshold  # later rounds: fixed
    assert calibrated_threshold(active, {}, np.array([np.nan])) == 50.0  # nothing usable: the fixed one for now
    capped = active.model_copy(update={"selection_ceiling_kj_per_mol_nm": 200.0})
    with pytest.raises(ConfigError, match=r"selection_ceiling_kj_per_mol_nm=200 is not above the threshold calibrated"):
        calibrated_threshold(capped, {}, first)


def test_bad_budgets_and_missing_inputs_are_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("active:\n  max_labels: 0\n")
    with pytest.raises(ConfigError, match="max_labels"):
        PipelineSettings.from_yaml(bad)
    bad.write_text("active:\n  labels_per_iteration: 0\n")
    with pytest.raises(ConfigError, match="labels_per_iteration"):
        PipelineSettings.from_yaml(bad)
    bad.write_text("active:\n  threshold_quantile: 1.0\n")
    with pytest.raises(ConfigError, match="threshold_quantile"):
        PipelineSettings.from_yaml(bad)

    from biomol_nnp.active import check_settings

    with pytest.raises(ConfigError, match=r"active.initial_model=None is not a file"):
        check_settings(ActiveLearningSettings())
    model = make_toy_model(tmp_path / "toy.pt")
    low = ActiveLearningSettings(
        initial_model=model, force_std_threshold_kj_per_mol_nm=50.0, selection_ceiling_kj_per_mol_nm=40.0
    )
    with pytest.raises(ConfigError, match=r"selection_ceiling_kj_per_mol_nm=40 is not above"):
        check_settings(low)
    with pytest.raises(ConfigError, match=r"active.labels_path=None"):  # calibrated threshold: checked at iteration 1
        check_settings(low.model_copy(update={"threshold_quantile": 0.5}))
    with pytest.raises(ConfigError, match=r"active.labels_path=.*missing.h5.* is not a label store"):
        check_settings(ActiveLearningSettings(initial_model=model, labels_path=tmp_path / "missing.h5"))


def _toy_record(module, rng):
    """A record whose 'QM/MM' labels are the toy model's own energy and finite-difference forces."""
    numbers = np.array([8, 1, 1, 6])
    xyz = rng.normal(scale=0.1, size=(4, 3))
    mm_xyz = rng.normal(scale=0.1, size=(3, 3)) + np.array([0.5, 0.0, 0.0])
    mm_q = np.array([-0.8, 0.4, 0.4])

    def energy(x):
        t = torch.float64
        return float(
            module(
                torch.tensor(x, dtype=t),
                torch.tensor(numbers),
                torch.tensor(0.0, dtype=t),
                torch.tensor(mm_xyz, dtype=t),
                torch.tensor(mm_q, dtype=t),
                torch.zeros(0, 3, dtype=t),
            )
        )

    forces = np.zeros_like(xyz)
    h = 1e-6
    for i in range(4):
        for k in range(3):
            up, down = xyz.copy(), xyz.copy()
            up[i, k] += h
            down[i, k] -= h
            forces[i, k] = -(energy(up) - energy(down)) / (2 * h)
    e = energy(xyz)
    zeros = np.zeros(4)
    return LabeledConfiguration(
        index=0,
        atomic_numbers=numbers,
        positions=xyz,
        total_charge=0,
        mm_positions=mm_xyz,
        mm_charges=mm_q,
        mm_numbers=np.array([8, 1, 1]),
        energy=e - 5.0,
        forces=np.zeros((4, 3)),
        charges=zeros,
        dipole=np.zeros(3),
        embedded_energy=e,
        embedded_forces=forces,
        embedded_mm_forces=np.zeros((3, 3)),
        embedded_charges=zeros,
        embedding_energy=5.0,
        source="test",
        trajectory_id=0,
        frame=0,
    )


def test_held_out_errors_compare_model_with_embedded_labels(tmp_path):
    """Against its own energy and finite-difference forces (with point charges) the toy model scores zero."""
    module = torch.jit.load(str(make_toy_model(tmp_path / "toy.pt")))
    record = _toy_record(module, np.random.default_rng(3))
    errors = held_out_errors(module, [record])
    assert errors["force_mae_kj_per_mol_nm"] < 1e-5
    assert errors["energy_mae_kcal_per_mol"] < 1e-9
    assert errors["configurations"] == 1.0
    shifted = LabeledConfiguration(**{**record.__dict__, "embedded_forces": record.embedded_forces + 4.184 * 10})
    assert held_out_errors(module, [shifted])["force_mae_kcal_per_mol_A"] == pytest.approx(1.0, rel=1e-5)


def test_every_active_label_is_trained_on_and_the_test_split_holds_starting_labels_only():
    from biomol_nnp.active.retrain import split_active
    from biomol_nnp.active.walkers import ACTIVE_SOURCE
    from biomol_nnp.config import TrainSettings
    from biomol_nnp.train.data import TrainingSample

    def sample(trajectory, source):
        z = np.array([8, 1, 1])
        return TrainingSample(
            z,
            np.zeros((3, 3)),
            0.0,
            0.0,
            np.zeros((3, 3)),
            np.zeros(3),
            np.zeros((0, 3)),
            np.zeros(0),
            float("nan"),
            trajectory,
            source,
            frame=trajectory,
        )

    base = [sample(t, "solvated") for t in range(10)]
    added = [sample(1000 + t, ACTIVE_SOURCE) for t in range(8)]
    train, validation, test = split_active(base + added, TrainSettings())
    assert test and all(s.source != ACTIVE_SOURCE for s in test)
    assert {id(s) for s in added} <= {id(s) for s in train + validation}
    assert sorted(id(s) for s in train + validation + test) == sorted(id(s) for s in base + added)
    assert any(s.source == ACTIVE_SOURCE for s in train)
    # without active labels it is the trainer's split
    from biomol_nnp.train.trainer import split_samples

    assert [len(x) for x in split_active(base, TrainSettings())] == [
        len(x) for x in split_samples(base, TrainSettings())
    ]
