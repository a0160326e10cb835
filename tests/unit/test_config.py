"""Settings: YAML round trip, unknown keys refused with the key named, CLI writes the defaults."""

import pytest

from biomol_nnp.cli import main
from biomol_nnp.config import PipelineSettings, TrainSettings
from biomol_nnp.exceptions import ConfigError


def test_yaml_round_trip(tmp_path):
    settings = PipelineSettings()
    settings.train.epochs = 7
    path = settings.to_yaml(tmp_path / "s.yaml")
    assert PipelineSettings.from_yaml(path) == settings


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  learnig_rate: 0.1\n")
    with pytest.raises(ConfigError, match="learnig_rate"):
        PipelineSettings.from_yaml(path)


def test_out_of_range_value_is_refused():
    with pytest.raises(ValueError, match="ensemble_size"):
        TrainSettings(ensemble_size=0)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        PipelineSettings.from_yaml(tmp_path / "nope.yaml")


def test_cli_config_writes_loadable_defaults(tmp_path):
    out = tmp_path / "defaults.yaml"
    assert main(["config", "-o", str(out)]) == 0
    assert PipelineSettings.from_yaml(out) == PipelineSettings()
