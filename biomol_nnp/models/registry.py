"""One place that maps an architecture name to its model class.

Every architecture is an `EnsembleModel` with the same deployed-model contract and training hooks.

>>> from biomol_nnp.config import ModelSettings
>>> model = build_model(ModelSettings(architecture="ani"), ensemble_size=2)
>>> model.architecture, len(model.members)
('ani', 2)
"""

from __future__ import annotations

from collections.abc import Callable

from biomol_nnp.config import ModelSettings
from biomol_nnp.exceptions import ConfigError
from biomol_nnp.models.ani import NNPEnsemble
from biomol_nnp.models.ensemble import EnsembleModel
from biomol_nnp.models.painn import PaiNNEnsemble

ARCHITECTURES: dict[str, Callable[[ModelSettings, int], EnsembleModel]] = {
    "ani": NNPEnsemble,
    "painn": PaiNNEnsemble,
}
"""Architecture name -> constructor ``(settings, ensemble_size) -> EnsembleModel``."""


def build_model(settings: ModelSettings, ensemble_size: int) -> EnsembleModel:
    """A freshly initialised ensemble of ``settings.architecture`` with ``ensemble_size`` members."""
    if ensemble_size < 1:
        raise ConfigError(f"ensemble_size must be at least 1, got {ensemble_size}")
    name = settings.architecture
    if name not in ARCHITECTURES:
        raise ConfigError(f"unknown model architecture {name!r}; valid architectures are {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name](settings, ensemble_size)


def model_cutoff(settings: ModelSettings) -> float:
    """The short-range cutoff of the architecture, nm (what ``cutoff_nm`` in the model metadata records)."""
    if settings.architecture == "painn":
        return settings.painn.cutoff_nm
    return settings.radial_cutoff_nm
