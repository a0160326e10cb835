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


def learning_curve(path: str | os.PathLike, histories: Sequence[Sequence[dict[str, float]]]) -> Path:
    """Training (solid) and validation (dashed) loss per epoch of each member, log scale, learning rate below."""
    figure, (axis, rate) = plt.subplots(
        2, 1, figsize=(5.5, 5.0), sharex=True, gridspec_kw={"height_ratios": [3, 1]}, squeeze=True
    )
    for member, history in enumerate(histories):
        epochs = [h["epoch"] for h in history]
        color = f"C{member % 10}"
        axis.semilogy(epochs, [h["train_loss"] for h in history], color=color, label=f"member {member} train")
        axis.semilogy(epochs, [h["validation_loss"] for h in history], color=color, ls="--", label="validation")
        rate.semilogy(epochs, [h["learning_rate"] for h in history], color=color)
    axis.set_ylabel("normalised loss")
    axis.legend(fontsize=7, ncol=2)
    rate.set_xlabel("epoch")
    rate.set_ylabel("learning rate")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    plt.close(figure)
    return Path(path)
