"""The measurements, one function per section, each run inside one job (`runner.Job`):

- ``models``: one cfrec model (a preset name): fit, whole-test-set prediction and all-users
  Recall@K timings (median of the repeats after the warm-up), and the shared evaluator's quality.
- ``notebook``: cfrec's KNN variants against the reference notebook's loops, in one process.
- ``surprise``: Surprise's SVD / KNNBaseline against cfrec's CF / KNN, runs alternated.
- ``peers``: other libraries' models and a reference EASE (`peers`), interleaved with cfrec's.
- ``load``: the default ``cf`` fit with CPU-bound helper processes running and without, alternated.
- ``scaling``: one synthetic size, one model: fit, seconds per epoch, prediction speed, RMSE.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any, Callable

import numpy as np
import torch

import benchtools as bt
from cfrec import metrics
from cfrec.data import Ratings
from cfrec.errors import ConfigError
from cfrec.evaluate import evaluate, ranking_metrics
from cfrec.threads import DEFAULT_THREADS, apply_threads

from .data import fit_fresh, new_model
from .peers import measure_peers, surprise_trainset

# cfrec KNN variant: (preset entry, the notebook loop it is timed against)
KNN_VARIANTS: dict[str, tuple[dict[str, Any], str]] = {
    "user_knn_reference": ({"model": "user_knn", "mode": "reference"}, "user"),
    "item_knn_reference": ({"model": "item_knn", "mode": "reference"}, "item"),
    "user_knn_reference_hnsw": ({"model": "user_knn", "mode": "reference", "neighbors": "hnsw", "hnsw": "notebook"}, "hnsw"),
    "user_knn": ({"model": "user_knn"}, "user"),
    "item_knn": ({"model": "item_knn"}, "item"),
}
# scaling curve: (preset entry, training overrides)
SCALING_MODELS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "cf_dense": ({"model": "cf"}, {"layout": "dense"}),
    "cf_index": ({"model": "cf"}, {"layout": "index"}),
    "cf_sparse": ({"model": "cf"}, {"optimizer": "sparse_adam"}),  # row-sparse steps (index layout)
    "content": ({"model": "content"}, {}),
    "user_knn": ({"model": "user_knn"}, {}),
    "item_knn": ({"model": "item_knn"}, {}),
}


def measure_model(train: Ratings, test: Ratings, *, name: str, device: str, repeats: int, warmup: int, k: int) -> dict[str, Any]:
    """Fit, whole-test-set prediction and all-users Recall@``k`` timings of one preset, and its quality."""
    model, _ = new_model({"model": name}, device)
    try:
        model.validate(train)
    except ConfigError as err:
        return {"skipped": f"{name}: {err}"}
    fit, model = bt.time_repeats(lambda: fit_fresh({"model": name}, train, device), repeats, warmup, device)
    rates = bool(model.predicts_ratings)  # ranking-only models have no rating predictions to time
    speed = bt.prediction_speed(model, test, repeats, warmup, device) if rates else {"timing": None, "us_per_pair": None}
    rank, ranked = bt.time_repeats(lambda: ranking_metrics(model, train, test, ks=(k,), device=device), repeats, warmup, device)
    quality = evaluate(model, train, test, ks=sorted({10, k}), device=device)
    keys = ("rmse", "mae", "accuracy", "recall@10", f"recall@{k}", "ndcg@10", "n_test", "n_ranking_users")
    return {
        "config": model.config(), "predicts_ratings": rates, "fit": fit,
        "predict": speed["timing"], "us_per_pair": speed["us_per_pair"], "rank": rank,
        "rank_users": ranked["n_ranking_users"], "quality": {key: quality[key] for key in keys if key in quality},
    }


def measure_notebook(
    train: Ratings, test: Ratings, *, device: str, repeats: int, warmup: int, k: int, loop_pairs: int, loop_users: int,
) -> dict[str, Any]:
    """Each of `KNN_VARIANTS` against the notebook loop it mirrors: the loop is timed right before the
    vectorized prediction and top-K lists, in this process, so that a load change hits both sides."""
    loops = bt.NotebookLoops(train, test)
    variants, quality = {}, {}
    for name, (entry, loop) in KNN_VARIANTS.items():
        fit_seconds, model = bt.timed(lambda: fit_fresh(entry, train, device), device)
        loop_pairs_row = loops.pairs(loop, loop_pairs)
        speed = bt.prediction_speed(model, test, repeats, warmup, device)
        row = {
            "config": model.config(), "loop": loop, "fit_seconds": fit_seconds, "predict": speed["timing"],
            "us_per_pair": speed["us_per_pair"], "loop_ms_per_pair": loop_pairs_row["seconds_per_pair"] * 1e3,
            "per_pair_ratio": loop_pairs_row["seconds_per_pair"] * 1e6 / speed["us_per_pair"],
        }
        if entry.get("mode") == "reference":  # the same formula: the predictions must agree
            loop_pred = np.asarray(loop_pairs_row["predictions"])
            row["max_abs_diff_vs_loop"] = float(np.abs(speed["predictions"][: len(loop_pred)].numpy() - loop_pred).max())
        if loop_users:
            loop_top = loops.top_k(loop_users)
            top = bt.top_k_speed(model, train, k, repeats, warmup, device)
            row.update(top_k=top["timing"], top_k_ms_per_user=top["ms_per_user"], loop_top_k=loop_top,
                       top_k_ratio=loop_top["seconds_per_user"] * 1e3 / top["ms_per_user"])
        quality[loop] = {key: loop_pairs_row[key] for key in ("accuracy", "rmse", "pairs")}
        variants[name] = row
    return {"loops": quality, "variants": variants}


def measure_surprise(train: Ratings, test: Ratings, *, device: str, repeats: int, warmup: int) -> dict[str, Any]:
    """Surprise SVD / KNNBaseline against cfrec CF / KNN on this split; SVD and CF fits alternate.
    Also the fit time cfrec's CF needs to reach SVD's RMSE (test RMSE after every epoch, off the clock)."""
    try:
        import surprise
    except ImportError:
        return {"skipped": "scikit-surprise is not installed (pip install scikit-surprise)"}
    build_seconds, trainset = bt.timed(lambda: surprise_trainset(surprise, train))
    svd_runs, cf_traces = [], []
    for repeat in range(warmup + repeats):  # alternate, so that a load change hits both sides
        svd = surprise_run(surprise.SVD(), trainset, test)
        model, options = new_model({"model": "cf"}, device)
        trace = bt.fit_trace(model, train, test, options, device)
        if repeat >= warmup:
            svd_runs.append(svd)
            cf_traces.append(trace)
    target = min(run["rmse"] for run in svd_runs)  # the best SVD of the repeats: the strictest target
    reached = [bt.seconds_to_rmse(trace["epochs"], target) for trace in cf_traces]
    knn_baseline = surprise_run(surprise.KNNBaseline(verbose=False), trainset, test)  # minutes: once
    svd_fit = bt.summarize([run["fit_seconds"] for run in svd_runs])
    cf_fit = bt.summarize([trace["fit_seconds"] for trace in cf_traces])
    result = {
        "surprise_version": surprise.__version__, "trainset_seconds": build_seconds,
        "svd": {"fit": svd_fit, "rmse": [run["rmse"] for run in svd_runs], "us_per_pair": svd_runs[-1]["us_per_pair"]},
        "knn_baseline": {"fit_seconds": knn_baseline["fit_seconds"], "rmse": knn_baseline["rmse"],
                         "us_per_pair": knn_baseline["us_per_pair"]},
        "cf": {"fit": cf_fit, "rmse": [trace["epochs"][-1]["test_rmse"] for trace in cf_traces],
               "epochs": [trace["epochs"] for trace in cf_traces]},
        "target_rmse": target, "cf_reached": reached, "knn": {},
    }
    if all(reached):
        to_target = bt.summarize([r["seconds"] for r in reached])
        result["cf_to_target"] = to_target
        result["svd_fit_over_cf_to_target"] = svd_fit["median"] / to_target["median"]
    for name in ("user_knn", "item_knn"):
        fit, model = bt.time_repeats(lambda: fit_fresh({"model": name}, train, device), repeats, warmup, device)
        speed = bt.prediction_speed(model, test, repeats, warmup, device)
        result["knn"][name] = {"fit": fit, "us_per_pair": speed["us_per_pair"],
                               "rmse": metrics.rmse(speed["predictions"], torch.as_tensor(test.values))}
    return result


def surprise_run(algo: Any, trainset: Any, test: Ratings) -> dict[str, float]:
    """Fit a Surprise algorithm, predict every test pair (its own per-pair ``predict``): times and RMSE."""
    fit_seconds, _ = bt.timed(lambda: algo.fit(trainset))
    pairs = list(zip(test.users.tolist(), test.items.tolist()))
    predict_seconds, pred = bt.timed(lambda: np.array([algo.predict(u, i).est for u, i in pairs]))
    rmse = float(np.sqrt(np.mean((pred - test.values) ** 2)))
    return {"fit_seconds": fit_seconds, "rmse": rmse, "us_per_pair": predict_seconds / max(len(pairs), 1) * 1e6}


def spin_helpers(n: int) -> list[subprocess.Popen]:
    """``n`` CPU-bound helper processes (a Python busy loop each), started now."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def stop_helpers(helpers: list[subprocess.Popen]) -> None:
    for process in helpers:
        process.terminate()
    for process in helpers:
        process.wait()


def measure_load(
    train: Ratings, test: Ratings, *, device: str, repeats: int, warmup: int, helpers: int, thread_counts: list[int],
    model: str = "cf",
) -> dict[str, Any]:
    """The default ``model`` fit with ``helpers`` CPU-bound processes running ("loaded") and without
    ("quiet"), for each of ``thread_counts``; quiet and loaded fits alternate (their order swaps every
    round), so that outside load drift hits both. The helpers are stopped after every loaded fit."""
    seconds: dict[int, dict[str, list[float]]] = {t: {"quiet": [], "loaded": []} for t in thread_counts}
    for repeat in range(warmup + repeats):
        for threads in thread_counts:
            apply_threads(threads)
            for condition in (("quiet", "loaded") if repeat % 2 == 0 else ("loaded", "quiet")):
                running = spin_helpers(helpers) if condition == "loaded" else []
                try:
                    if running:
                        time.sleep(0.5)  # let them reach their busy loop
                    elapsed, _ = bt.timed(lambda: fit_fresh({"model": model}, train, device), device)
                finally:
                    stop_helpers(running)
                if repeat >= warmup:
                    seconds[threads][condition].append(elapsed)
    rows = {}
    for threads, runs in seconds.items():
        quiet, loaded = bt.summarize(runs["quiet"]), bt.summarize(runs["loaded"])
        rows[str(threads)] = {"quiet": quiet, "loaded": loaded, "ratio": loaded["median"] / quiet["median"]}
    return {"model": model, "helpers": helpers, "threads": rows, "default_threads": DEFAULT_THREADS}


def measure_scaling(
    train: Ratings, test: Ratings, *, name: str, device: str, repeats: int, warmup: int, epochs: int,
) -> dict[str, Any]:
    """One scaling point: fit (learned models: ``epochs`` epochs, seconds per epoch), prediction speed, RMSE."""
    entry, overrides = SCALING_MODELS[name]
    fit_seconds, model = bt.timed(lambda: fit_fresh(entry, train, device, {**overrides, "epochs": epochs}), device)
    speed = bt.prediction_speed(model, test, repeats, warmup, device)
    history = getattr(model, "history", None)
    return {
        "fit_seconds": fit_seconds, "us_per_pair": speed["us_per_pair"],
        "epoch_seconds": float(np.median([row["seconds"] for row in history])) if history else None,
        "test_rmse": metrics.rmse(speed["predictions"], torch.as_tensor(test.values)),
    }


MEASURES: dict[str, Callable[..., dict[str, Any]]] = {
    "models": measure_model, "notebook": measure_notebook, "surprise": measure_surprise, "peers": measure_peers,
    "load": measure_load, "scaling": measure_scaling,
}
