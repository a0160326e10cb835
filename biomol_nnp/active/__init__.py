"""Active learning: NNP/MM walkers, uncertain and diverse frames, QM labels, warm-started retraining.

>>> from biomol_nnp.active import run_active_learning
>>> run_active_learning(settings, "al_output")  # doctest: +SKIP
"""

from biomol_nnp.active.loop import ActiveLearningResult, check_settings, run_active_learning
from biomol_nnp.active.selection import frame_descriptors, select_frames, uncertain_fraction

__all__ = [
    "ActiveLearningResult",
    "check_settings",
    "frame_descriptors",
    "run_active_learning",
    "select_frames",
    "uncertain_fraction",
]
