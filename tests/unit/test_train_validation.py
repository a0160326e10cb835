"""Bad training input fails before training, with messages that name the record or the setting."""

import dataclasses

import numpy as np
import pytest

from biomol_nnp.config import ModelSettings, TrainSettings
from biomol_nnp.exceptions import ConfigError, InputError
from biomol_nnp.train.data import split_validation
from biomol_nnp.train.trainer import split_samples, train_ensemble
from biomol_nnp.train.validation import validate_samples
from tests.unit.test_train import METHANE, METHANOL, WATER, harmonic_sample

ELEMENTS = [1, 6, 8]


@pytest.fixture
def samples():
    rng = np.random.default_rng(3)
    return [
        harmonic_sample((WATER, METHANE, METHANOL)[frame % 3], rng, trajectory, mm=trajectory % 2 == 0)
        for trajectory in range(4)
        for frame in range(5)
    ]


def replace(samples, index, **changes):
    out = list(samples)
    out[index] = dataclasses.replace(out[index], **changes)
    return out


def test_clean_samples_pass(samples):
    validate_samples(samples, ELEMENTS, TrainSettings())


def test_empty_dataset_is_refused():
    with pytest.raises(InputError, match="training set is empty"):
        validate_samples([], ELEMENTS, TrainSettings())


def test_element_outside_the_model_names_the_record(samples):
    sulfur = samples[4].atomic_numbers.copy()
    sulfur[0] = 16
    bad = replace(samples, 4, atomic_numbers=sulfur)
    with pytest.raises(InputError, match=r"record 4 \(source 'md', trajectory 0, frame 5\): atomic number\(s\) \[16\]"):
        validate_samples(bad, ELEMENTS, TrainSettings())
    # the same check runs inside train_ensemble before any training
    with pytest.raises(InputError, match=r"record 4 .* not among the model's elements \[1, 6, 8\]"):
        train_ensemble(bad, ModelSettings(elements=ELEMENTS), TrainSettings())


@pytest.mark.parametrize("field", ["forces", "positions", "charges", "mm_charges"])
def test_nan_labels_name_the_record_and_field(samples, field):
    array = np.array(getattr(samples[11], field), dtype=float)
    array.reshape(-1)[0] = np.nan
    with pytest.raises(InputError, match=rf"record 11 \(source 'md', trajectory 2, .*\): {field} contains NaN"):
        validate_samples(replace(samples, 11, **{field: array}), ELEMENTS, TrainSettings())


def test_infinite_energy_is_refused(samples):
    with pytest.raises(InputError, match=r"record 2 .*: energy contains NaN or infinite"):
        validate_samples(replace(samples, 2, energy=float("inf")), ELEMENTS, TrainSettings())


def test_absurd_force_is_refused_at_the_settable_bound(samples):
    forces = samples[3].forces.copy()
    forces[1, 2] = -3.0e4
    bad = replace(samples, 3, forces=forces)
    with pytest.raises(InputError, match=r"record 3 .*force on atom 1 \(Z=1\).*-?3e\+04 kJ/mol/nm.*max_force"):
        validate_samples(bad, ELEMENTS, TrainSettings())
    validate_samples(bad, ELEMENTS, TrainSettings(max_force_kj_per_mol_nm=5e4))


def test_charges_that_miss_the_total_charge_are_refused(samples):
    with pytest.raises(InputError, match=r"record 5 .*charges sum to 0\.0000 e but the total charge is 1 e"):
        validate_samples(replace(samples, 5, total_charge=1.0), ELEMENTS, TrainSettings())


def test_shape_mismatch_is_refused(samples):
    with pytest.raises(InputError, match=r"record 0 .*forces has shape \(2, 3\), expected \(3, 3\)"):
        validate_samples(replace(samples, 0, forces=np.zeros((2, 3))), ELEMENTS, TrainSettings())


def test_charge_loss_without_charge_labels_names_the_setting(samples):
    bad = replace(samples, 6, charges=np.zeros(0))
    with pytest.raises(ConfigError, match=r"charge_weight = 0.2 but record 6 .*has no atomic-charge labels"):
        validate_samples(bad, ELEMENTS, TrainSettings())
    validate_samples(bad, ELEMENTS, TrainSettings(charge_weight=0.0))


def test_embedding_loss_without_embedding_labels_names_the_setting(samples):
    vacuum = [s for s in samples if len(s.mm_charges) == 0]
    with pytest.raises(ConfigError, match=r"embedding_weight = 1 but none of the 10 records"):
        validate_samples(vacuum, ELEMENTS, TrainSettings())
    validate_samples(vacuum, ELEMENTS, TrainSettings(embedding_weight=0.0))


def test_no_trained_energy_is_refused(samples):
    with pytest.raises(ConfigError, match="energy_weight and force_weight are both 0"):
        validate_samples(samples, ELEMENTS, TrainSettings(energy_weight=0.0, force_weight=0.0))


def test_empty_test_split_names_the_setting(samples):
    one_trajectory = [s for s in samples if s.trajectory_id == 0][:2]
    with pytest.raises(InputError, match=r"the test split is empty.*TrainSettings.validation_fraction"):
        split_samples(one_trajectory, TrainSettings(validation_fraction=0.2))


def test_validation_frames_come_from_training_frames_only(samples):
    train, validation, test = split_samples(samples, TrainSettings(validation_fraction=0.25))
    ids = {id(s) for s in train}
    assert validation and not ids & {id(s) for s in validation} and not ids & {id(s) for s in test}
    assert len(train) + len(validation) + len(test) == len(samples)
    assert {s.trajectory_id for s in test}.isdisjoint({s.trajectory_id for s in train + validation})
    with pytest.raises(InputError, match="training split holds 1 configuration"):
        split_validation(samples[:1], 0.1)
