"""Parity plots and learning curves as PNG files."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from biomol_nnp.io import atomic_path  # noqa: E402


def parity_plot(path: str | os.PathLike, panels: Sequence[tuple[str, np.ndarray, np.ndarray, str]]) -> Path:
    """One parity panel per (title, reference, predicted, unit); MAE in each title."""
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.0), squeeze=False)
    for axis, (title, reference, predicted, unit) in zip(axes[0], panels, strict=True):
        reference, predicted = np.ravel(reference), np.ravel(predicted)
        low, high = float(min(reference.min(), predicted.min())), float(max(reference.max(), predicted.max()))
        axis.plot([low, high], [low, high], color="0.6", lw=1)
        axis.scatter(reference, predicted, s=6, alpha=0.6)
        mae = float(np.mean(np.abs(predicted - reference)))
        axis.set_title(f"{title}\nMAE {mae:.3g} {unit}", fontsize=10)
        axis.set_xlabel(f"QM ({unit})")
        axis.set_ylabel(f"NNP ({unit})")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    plt.close(figure)
    return Path(path)


def learning_curve(path: str | os.PathLike, history: Sequence[dict[str, float]]) -> Path:
    """Training and held-out loss per epoch on a log scale."""
    figure, axis = plt.subplots(figsize=(5, 3.6))
    epochs = [h["epoch"] for h in history]
    axis.semilogy(epochs, [h["train_loss"] for h in history], label="train")
    axis.semilogy(epochs, [h["test_loss"] for h in history], label="held out")
    axis.set_xlabel("epoch")
    axis.set_ylabel("normalised loss")
    axis.legend()
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    plt.close(figure)
    return Path(path)
