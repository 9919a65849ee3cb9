"""PNG plots of a run (matplotlib, Agg backend): learning curves, confusion matrix, residuals."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from andersonn.fileio import atomic_open

__all__ = ["plot_confusion", "plot_learning_curves", "plot_reliability", "plot_residuals"]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike[str]) -> None:
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)


def plot_learning_curves(history: Sequence[dict[str, Any]], path: str | Path,
                         title: str = "") -> None:
    """Loss and accuracy (train, val) per epoch, plus val accuracy against wall time."""
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    ep = [h["epoch"] for h in history]
    # laid out with the title: the suptitle gets its own room above the panels' titles
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6), layout="constrained")
    ax[0].plot(ep, [h["train_loss"] for h in history], "o-", label="train")
    ax[0].plot(ep, [h["val_loss"] for h in history], "s-", label="val")
    ax[0].set(xlabel="epoch", ylabel="loss", title="loss")
    ax[1].plot(ep, [h["train_acc"] for h in history], "o-", label="train")
    ax[1].plot(ep, [h["val_acc"] for h in history], "s-", label="val")
    ax[1].plot(ep, [h["val_balanced_acc"] for h in history], "^--", label="val balanced")
    ax[1].set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    ax[2].plot([h["wall_time_s"] for h in history], [h["val_acc"] for h in history], "s-")
    ax[2].set(xlabel="wall time (s)", ylabel="val accuracy", title="val accuracy vs time")
    for a in ax[:2]:
        a.legend()
        a.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs: no 1.5
    for a in ax:
        a.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    _save(fig, path)


def plot_confusion(cm: Sequence[Sequence[int]], classes: Sequence[str], path: str | Path,
                   title: str = "confusion matrix (test)") -> None:
    """Confusion matrix heat map with counts."""
    plt = _plt()
    arr = np.asarray(cm)
    k = len(classes)
    fig, ax = plt.subplots(figsize=(1.2 * k + 2.5, 1.2 * k + 2))
    ax.imshow(arr, cmap="Blues")
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    top = arr.max() if arr.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(int(arr[i, j])), ha="center", va="center",
                    color="white" if arr[i, j] > top / 2 else "black")
    _save(fig, path)


def plot_residuals(traces: dict[str, Sequence[float]], path: str | Path,
                   title: str = "fixed-point residual vs iteration") -> None:
    """Mean relative residual per solver iteration, one line per label (log scale)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label, trace in traces.items():
        t = np.asarray(trace, dtype=float)
        if t.size:
            ax.semilogy(np.arange(1, t.size + 1), t, "o-", ms=3, label=label)
    ax.set(xlabel="iteration", ylabel="residual", title=title)
    ax.grid(alpha=0.3, which="both")
    if traces:
        ax.legend()
    _save(fig, path)


def plot_reliability(curves: dict[str, dict[str, Sequence[float]]], path: str | Path,
                     title: str = "reliability") -> None:
    """Accuracy against confidence per confidence bin, one line per label (``confidence``,
    ``accuracy`` and ``count`` lists); the diagonal is perfect calibration."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot([0, 1], [0, 1], ":", color="grey", label="calibrated")
    for label, curve in curves.items():
        if curve["count"]:
            ax.plot(curve["confidence"], curve["accuracy"], "o-", ms=3, label=label)
    ax.set(xlabel="confidence (top-class probability)", ylabel="accuracy", title=title,
           xlim=(0, 1.02), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    _save(fig, path)
