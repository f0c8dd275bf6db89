"""PNG plots for run folders and comparison reports (matplotlib's object API: no global state)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from cfrec.io import atomic_path

_STAR_BINS = np.arange(0.25, 5.76, 0.5)  # one bar per half star, works for whole stars too


def _save(fig: Figure, path: str | Path) -> Path:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return Path(path)


def rating_distribution(train: np.ndarray, test: np.ndarray | None, path: str | Path) -> Path:
    """Share of each rating value in train and test (bars of each part sum to 1); train alone
    when there is no test set."""
    return _save(rating_distribution_figure(train, test), path)


def rating_distribution_figure(train: np.ndarray, test: np.ndarray | None) -> Figure:
    """The figure of `rating_distribution`: one bar container per part, heights are shares."""
    parts = {"train": np.asarray(train, dtype=float)}
    if test is not None and len(test):
        parts["test"] = np.asarray(test, dtype=float)
    values = list(parts.values())
    weights = [np.full(len(v), 1.0 / max(len(v), 1)) for v in values]
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    labels = [f"{name} ({len(v):,} ratings)" for name, v in parts.items()]
    ax.hist(values, bins=_STAR_BINS, weights=weights, label=labels)
    whole_stars = all(np.allclose(v, np.round(v)) for v in values)
    ax.set_xticks(np.arange(1, 6) if whole_stars else np.arange(0.5, 5.01, 0.5))
    title = "Rating distribution (train vs test)" if len(parts) == 2 else "Rating distribution (all ratings)"
    ax.set(xlabel="rating (stars)", ylabel="share of ratings", title=title)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.legend()
    return fig


def error_histograms(errors: Mapping[str, np.ndarray], path: str | Path) -> Path:
    """One histogram of prediction errors (pred − true) per model."""
    n = len(errors)
    fig = Figure(figsize=(4 * min(n, 3), 3.2 * ((n + 2) // 3)))
    axes = np.atleast_1d(fig.subplots((n + 2) // 3, min(n, 3), sharex=True)).ravel()
    for ax, (name, err) in zip(axes, errors.items()):
        ax.hist(err, bins=np.linspace(-4.5, 4.5, 37), color="tab:blue")
        ax.axvline(0, color="black", lw=0.8)
        ax.set(title=name, xlabel="prediction error (predicted − true rating)", ylabel="test pairs")
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle("Prediction errors on the test pairs")
    return _save(fig, path)


def true_vs_predicted(true: np.ndarray, pred: np.ndarray, path: str | Path, title: str) -> Path:
    """Hexbin density of predicted against true ratings, with the diagonal."""
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    hb = ax.hexbin(true, pred, gridsize=30, bins="log", cmap="viridis", extent=(0.5, 5.5, 0.5, 5.5))
    fig.colorbar(hb, ax=ax, label="test pairs per hexagon (log scale)")
    ax.plot([0.5, 5.5], [0.5, 5.5], "r--", lw=1, label="predicted = true")
    ax.set(xlabel="true rating (stars)", ylabel="predicted rating", title=f"{title}: predicted against true (test pairs)")
    ax.legend(loc="upper left", fontsize=8)
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
        better = "lower" if metric.lower() in ("rmse", "mae") else "higher"
        ax.set(title=f"{metric} ({better} is better)", yticks=rows, yticklabels=list(names))
        ax.set_xlim(0, 1.18 * max(np.nanmax(numbers) if np.isfinite(numbers).any() else 1.0, 1e-9))
        ax.invert_yaxis()  # first model on top, as in the table
    return _save(fig, path)


def training_curves(history: Sequence[Mapping[str, float]], path: str | Path,
                    final: Mapping[str, float] | None = None) -> Path:
    """Per-epoch curves: the loss J and its terms (sums over the training ratings), the mean loss
    per training rating where the trainer reports it, and the validation metrics (``val_…``:
    rating errors and ranking metrics in separate panels). ``final``: validation metrics of the
    returned model where training's last step changed it (the KNN blend), starred after the last epoch."""
    return _save(training_curves_figure(history, final), path)


def training_curves_figure(history: Sequence[Mapping[str, float]], final: Mapping[str, float] | None = None) -> Figure:
    """The figure of `training_curves`: one axis per panel, one line per metric."""
    epochs = np.arange(1, len(history) + 1)
    keys = sorted({k for row in history for k in row})
    panels = [("training loss J (sum)", [k for k in keys if k.startswith("loss") and k != "loss_per_rating"], "J")]
    if "loss_per_rating" in keys:
        panels.append(("training loss per rating", ["loss_per_rating"], "J / training ratings"))
    val_keys = [k for k in keys if k.startswith("val_")]
    ranking = [k for k in val_keys if k.startswith(("val_recall", "val_ndcg"))]
    rating = [k for k in val_keys if k not in ranking]
    if rating:
        panels.append(("validation: ratings (held-out slice of train)", rating, "value"))
    if ranking:
        panels.append(("validation: ranking (held-out slice of train)", ranking, "mean over users"))
    fig = Figure(figsize=(5 * len(panels), 3.6))
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (title, series, ylabel) in zip(axes, panels):
        for key in series:
            (line,) = ax.plot(epochs, [row.get(key, np.nan) for row in history], marker="o", ms=3, label=key)
            if final and key in final:
                ax.plot([len(history)], [final[key]], marker="*", ms=11, ls="none", color=line.get_color(),
                        label=f"{key}, returned model")
        ax.set(xlabel="epoch", ylabel=ylabel, title=title)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=8)
    return fig


def recall_at_k_curve(ks: Sequence[int], curves: Mapping[str, Sequence[float]], path: str | Path,
                      n_users: int) -> Path:
    """Recall@K against K (log axis), one line per metric (e.g. recall, ndcg)."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for label, values in curves.items():
        ax.plot(ks, values, marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xticks(list(ks), [str(k) for k in ks])
    ax.set(xlabel="K (length of the recommended list)", ylabel="mean over test users", ylim=(0, None),
           title=f"Ranking quality against K ({n_users:,} test users with a liked movie)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return _save(fig, path)


def score_distribution(liked: np.ndarray, other: np.ndarray, path: str | Path, title: str) -> Path:
    """Histogram (shares) of the model's scores for held-out liked movies against every other unseen movie."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    parts = [(np.asarray(other, float), f"other unseen movies ({len(other):,})"),
             (np.asarray(liked, float), f"held-out liked movies ({len(liked):,})")]
    ends = np.array([np.percentile(v, [0.5, 99.5]) for v, _ in parts if len(v)]).reshape(-1, 2)
    low, high = (ends[:, 0].min(), ends[:, 1].max()) if len(ends) else (0.0, 1.0)
    bins = np.linspace(low, high if high > low else low + 1, 41)
    for values, label in parts:  # shares of all values of a part; the few beyond the range are not drawn
        ax.hist(values, bins=bins, weights=np.full(len(values), 1 / max(len(values), 1)), alpha=0.6, label=label)
    ax.set(xlabel="model score (higher = recommended first)", ylabel="share of movies", title=title)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.legend(fontsize=8)
    return _save(fig, path)


CURVE_KS = (1, 2, 5, 10, 20, 50, 100, 200)


def ranking_curves(model, train, test, *, like_threshold: float = 4.0, device="cpu",
                   ks: Sequence[int] = CURVE_KS) -> tuple[list[int], dict[str, list[float]], int]:
    """(Ks, {"recall@K": [...], "ndcg@K": [...]}, number of test users with a liked movie) from
    the evaluator's `ranking_metrics`, for the Ks up to the number of movies."""
    from cfrec.evaluate import ranking_metrics

    ks = [k for k in ks if k <= train.n_items]
    ranking = ranking_metrics(model, train, test, ks=ks, like_threshold=like_threshold, device=device)
    curves = {f"{name}@K": [ranking[f"{name}@{k}"] for k in ks] for name in ("recall", "ndcg")}
    return ks, curves, int(ranking["n_ranking_users"])


def ranking_plots(model, train, test, run_dir: str | Path, label: str, *, like_threshold: float = 4.0,
                  device="cpu", max_users: int = 500, seed: int = 0) -> list[Path]:
    """``recall_at_k.png`` (Recall@K and NDCG@K for K = 1…200) and ``score_distribution.png``
    (scores of held-out liked movies against the other unseen ones, for up to ``max_users`` users)
    of a fitted model: the plots of a model whose scores rank movies but are not ratings."""
    import torch

    from cfrec.models.base import mask_seen

    run_dir = Path(run_dir)
    ks, curves, n_users = ranking_curves(model, train, test, like_threshold=like_threshold, device=device)
    paths = [recall_at_k_curve(ks, curves, run_dir / "recall_at_k.png", n_users)]
    liked = test.values >= like_threshold
    users = np.unique(test.users[liked])
    if len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    if len(users):
        codes = torch.as_tensor(users, device=device)
        scores = mask_seen(model.score(codes).float(), codes, train.to_csr()).cpu().numpy()
        row_of = np.full(train.n_users, -1)
        row_of[users] = np.arange(len(users))
        rows = row_of[test.users[liked]]
        keep = rows >= 0
        is_liked = np.zeros(scores.shape, dtype=bool)
        is_liked[rows[keep], test.items[liked][keep]] = True
        finite = np.isfinite(scores)
        paths.append(score_distribution(scores[is_liked & finite], scores[~is_liked & finite],
                                        run_dir / "score_distribution.png", f"{label}: scores of unseen movies"))
    return paths


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
