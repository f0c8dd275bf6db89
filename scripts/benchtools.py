"""Measurement primitives shared by the benchmark scripts (`benchmark.py`, `bench_knn.py`, `bench_learned.py`).

Each measurement lives here once: repeated wall-clock timings with warm-up (median and spread),
a training run with the test RMSE after every epoch (evaluation off the clock), per-pair
prediction speed, all-users top-K speed, the reference notebook's per-pair and top-K loops, and
the process's memory high-water mark. The scripts compose them.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch

import notebook_reference as nb
from cfrec import metrics
from cfrec.data import Ratings
from cfrec.evaluate import predict_pairs
from cfrec.models.base import Recommender
from cfrec.models.factor import FactorModel

T = TypeVar("T")
Device = torch.device | str


def synchronize(device: Device) -> None:
    """Wait for queued GPU work, so that a clock read after it counts that work (no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], T], device: Device = "cpu") -> tuple[float, T]:
    """(wall seconds, result) of one call, GPU work included."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return time.perf_counter() - start, result


def summarize(seconds: list[float]) -> dict[str, Any]:
    """Median, min, max, relative spread ((max − min) / median) and every run, in seconds."""
    median = statistics.median(seconds)
    spread = (max(seconds) - min(seconds)) / median if median > 0 else 0.0
    return {"median": median, "min": min(seconds), "max": max(seconds), "spread": spread, "runs": list(seconds)}


def time_repeats(fn: Callable[[], T], repeats: int = 3, warmup: int = 1, device: Device = "cpu") -> tuple[dict[str, Any], T]:
    """``warmup`` untimed calls, then ``repeats`` timed ones: (`summarize` of them, the last result)."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        elapsed, result = timed(fn, device)
        seconds.append(elapsed)
    return summarize(seconds), result


def prime_torch() -> None:
    """Pay torch's one-off lazy imports (the first optimizer loads ``torch._dynamo``) before any clock runs."""
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])


def peak_rss_mb() -> float:
    """This process's resident-memory high-water mark so far, in MiB.

    Linux's ``VmHWM`` (``/proc/self/status``) counts what this program touched since it started.
    ``getrusage``'s ``ru_maxrss`` is the fallback elsewhere; on Linux it is no use for a worker
    process, as exec carries over the parent's resident memory at fork time (a 10 MiB child of a
    1 GiB parent reports 1 GiB).
    """
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)
    line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def fit_trace(
    model: FactorModel, train: Ratings, test: Ratings, train_options: dict[str, Any], device: Device = "cpu",
) -> dict[str, Any]:
    """Fit a learned model, scoring every test pair after each epoch; the scoring is off the clock.

    Returns ``fit_seconds`` (all `fit` does: layout, bias start, epochs) and one row per epoch:
    ``epoch``, ``seconds`` (the epoch's own), ``loss``, ``train_seconds`` (fit time up to the end
    of that epoch) and ``test_rmse``.
    """
    true = torch.as_tensor(test.values)
    clock = {"start": 0.0, "eval": 0.0}
    epochs: list[dict[str, float]] = []

    def on_epoch(epoch: int, epoch_metrics: dict[str, float], fitted: FactorModel) -> None:
        synchronize(device)
        begin = time.perf_counter()
        pred = predict_pairs(fitted, test.users, test.items, device=device)
        epochs.append({
            "epoch": epoch, "seconds": epoch_metrics["seconds"], "loss": epoch_metrics["loss"],
            "train_seconds": begin - clock["start"] - clock["eval"], "test_rmse": metrics.rmse(pred, true),
        })
        clock["eval"] += time.perf_counter() - begin

    synchronize(device)
    clock["start"] = time.perf_counter()
    model.fit(train, {**train_options, "device": str(device)}, callbacks=[on_epoch])
    synchronize(device)
    return {"fit_seconds": time.perf_counter() - clock["start"] - clock["eval"], "epochs": epochs}


def seconds_to_rmse(epochs: list[dict[str, float]], target: float) -> dict[str, float] | None:
    """The first epoch of a `fit_trace` whose test RMSE is at most ``target``: its number and fit seconds."""
    reached = next((row for row in epochs if row["test_rmse"] <= target), None)
    return None if reached is None else {"epoch": reached["epoch"], "seconds": reached["train_seconds"]}


def prediction_speed(
    model: Recommender, test: Ratings, repeats: int = 3, warmup: int = 1, device: Device = "cpu",
) -> dict[str, Any]:
    """Time predicting every test pair (`predict_pairs`): the timing, µs per pair and the predictions."""
    timing, pred = time_repeats(lambda: predict_pairs(model, test.users, test.items, device=device), repeats, warmup, device)
    return {"timing": timing, "us_per_pair": timing["median"] / max(len(test), 1) * 1e6, "predictions": pred}


def top_k_speed(
    model: Recommender, train: Ratings, k: int = 50, repeats: int = 3, warmup: int = 1, device: Device = "cpu",
    batch_size: int = 1024,
) -> dict[str, Any]:
    """Time every user's top-``k`` list (train items excluded), ``batch_size`` users per call."""
    seen = train.to_csr()

    def all_users() -> None:
        for first in range(0, train.n_users, batch_size):
            users = torch.arange(first, min(first + batch_size, train.n_users), device=device)
            model.recommend(users, k, exclude=seen)

    timing, _ = time_repeats(all_users, repeats, warmup, device)
    return {"timing": timing, "users": train.n_users, "ms_per_user": timing["median"] / max(train.n_users, 1) * 1e3}


class NotebookLoops:
    """The reference notebook's state on one split (its CSR matrix, SVD vectors and HNSW index,
    built as `notebook_reference` builds them) and its loops, timed on demand."""

    PAIR_LOOPS = ("user", "item", "hnsw")

    def __init__(self, train: Ratings, test: Ratings):
        self.mat, self.tuples, _, _ = nb.build_train_test(train, test)
        self.user_vectors, self.item_vectors = nb.build_user_vectors(self.mat), nb.build_item_vectors(self.mat)
        self.ann_index = nb.build_ann_index(self.user_vectors)

    def pairs(self, loop: str, n_pairs: int = 1000) -> dict[str, Any]:
        """The ``loop`` per-pair loop (user, item or hnsw) on the first ``n_pairs`` test pairs: accuracy,
        RMSE, seconds, seconds per pair, the number of pairs and the predictions."""
        predictors = {
            "user": lambda u, m, k: nb.predict_rating(self.user_vectors, self.mat, u, m, k),
            "item": lambda u, m, k: nb.predict_rating_byitem(self.item_vectors, self.mat, u, m, k),
            "hnsw": lambda u, m, k: nb.predict_rating_ann(self.ann_index, self.user_vectors, self.mat, u, m, k),
        }
        pairs = self.tuples[:n_pairs]
        return {**nb.timed_evaluate(predictors[loop], pairs, k=100), "pairs": len(pairs)}

    def top_k(self, n_users: int = 100) -> dict[str, Any]:
        """The top-50 loop and its Recall@50 over the first ``n_users`` users with a liked test movie (−1: all)."""
        seconds, (recall, n) = timed(lambda: nb.recall_at_k(
            self.mat, self.user_vectors, self.ann_index, self.tuples, 50, max_users=None if n_users < 0 else n_users))
        return {"users": n, "recall@50": recall, "seconds": seconds, "seconds_per_user": seconds / n}


def notebook_loops(train: Ratings, test: Ratings, n_pairs: int = 1000, n_users: int = 100) -> dict[str, Any]:
    """Every `NotebookLoops` loop once: the three per-pair loops on ``n_pairs`` pairs, the top-50 loop
    on ``n_users`` users (0: skipped)."""
    loops = NotebookLoops(train, test)
    result: dict[str, Any] = {name: loops.pairs(name, n_pairs) for name in loops.PAIR_LOOPS}
    if n_users:
        result["topk"] = loops.top_k(n_users)
    return result
