"""PNG plots for run folders and comparison reports (matplotlib's object API: no global state)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from cfrec.io import atomic_path

_STAR_BINS = np.arange(0.25, 5.76, 0.5)  # one bar per half star, works for whole stars too


def _save(fig: Figure, path: str | Path) -> Path:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return Path(path)


def rating_distribution(train: np.ndarray, test: np.ndarray, path: str | Path) -> Path:
    """Share of each rating value in train and test, side by side."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.hist([train, test], bins=_STAR_BINS, density=True, label=["train", "test"])
    ax.set(xlabel="rating", ylabel="share", title="Rating distribution (train vs test)")
    ax.legend()
    return _save(fig, path)


def error_histograms(errors: Mapping[str, np.ndarray], path: str | Path) -> Path:
    """One histogram of prediction errors (pred − true) per model."""
    n = len(errors)
    fig = Figure(figsize=(4 * min(n, 3), 3.2 * ((n + 2) // 3)))
    axes = np.atleast_1d(fig.subplots((n + 2) // 3, min(n, 3), sharex=True)).ravel()
    for ax, (name, err) in zip(axes, errors.items()):
        ax.hist(err, bins=np.linspace(-4.5, 4.5, 37), color="tab:blue")
        ax.axvline(0, color="black", lw=0.8)
        ax.set(title=name, xlabel="prediction error (pred − true)", ylabel="count")
    for ax in axes[n:]:
        ax.set_visible(False)
    return _save(fig, path)


def true_vs_predicted(true: np.ndarray, pred: np.ndarray, path: str | Path, title: str) -> Path:
    """Hexbin density of predicted against true ratings, with the diagonal."""
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    hb = ax.hexbin(true, pred, gridsize=30, bins="log", cmap="viridis", extent=(0.5, 5.5, 0.5, 5.5))
    fig.colorbar(hb, ax=ax, label="pairs (log)")
    ax.plot([0.5, 5.5], [0.5, 5.5], "r--", lw=1)
    ax.set(xlabel="true rating", ylabel="predicted rating", title=title)
    return _save(fig, path)


def metric_bars(names: Sequence[str], values: Mapping[str, Sequence[float]], path: str | Path) -> Path:
    """One horizontal bar chart per metric (e.g. accuracy, RMSE), a row per model; a NaN value
    (a metric that does not apply to that model) shows as "n/a" instead of a bar."""
    fig = Figure(figsize=(4.2 * len(values), 1.2 + 0.32 * len(names)))
    axes = np.atleast_1d(fig.subplots(1, len(values), sharey=True))
    rows = np.arange(len(names))
    for ax, (metric, numbers) in zip(axes, values.items()):
        numbers = np.asarray(numbers, dtype=float)
        bars = ax.barh(rows, np.nan_to_num(numbers), color="tab:blue")
        ax.bar_label(bars, labels=["n/a" if np.isnan(v) else f"{v:.3f}" for v in numbers], fontsize=8, padding=2)
        ax.set(title=metric, yticks=rows, yticklabels=list(names))
        ax.set_xlim(0, 1.18 * max(np.nanmax(numbers) if np.isfinite(numbers).any() else 1.0, 1e-9))
        ax.invert_yaxis()  # first model on top, as in the table
    return _save(fig, path)


def training_curves(history: Sequence[Mapping[str, float]], path: str | Path) -> Path:
    """Per-epoch curves: the loss terms on the left, validation metrics (``val_…``) on the right."""
    epochs = np.arange(1, len(history) + 1)
    fig = Figure(figsize=(10, 3.6))
    left, right = fig.subplots(1, 2)
    for ax, prefix, title in ((left, "loss", "training loss J"), (right, "val_", "validation")):
        for key in sorted({k for row in history for k in row if k.startswith(prefix)}):
            ax.plot(epochs, [row.get(key, np.nan) for row in history], label=key)
        ax.set(xlabel="epoch", title=title)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return _save(fig, path)


def loglog_panels(
    panels: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]], path: str | Path, xlabel: str,
) -> Path:
    """One log-log panel per title, each holding curves ``label -> (x values, y values)``."""
    n = len(panels)
    cols = min(n, 2)
    fig = Figure(figsize=(6 * cols, 4.2 * ((n + 1) // 2)))
    axes = np.atleast_1d(fig.subplots((n + 1) // 2, cols)).ravel() if n else []
    for ax, (title, curves) in zip(axes, panels.items()):
        for label, (x, y) in curves.items():
            ax.loglog(x, y, marker="o", label=label)
        ax.set(title=title, xlabel=xlabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes[n:]:
        ax.set_visible(False)
    return _save(fig, path)
