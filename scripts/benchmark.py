#!/usr/bin/env python
"""cfrec's benchmark suite: every model's quality, speed and memory, same-run ratios, scaling.

Sections (``--sections``; all by default):

- ``models``: each of ``--models`` (names of ``cfrec/conf/model/*.yaml``, with those defaults) on
  the ``--data`` / ``--split`` split: fit, whole-test-set prediction and all-users Recall@K
  (``--warmup`` untimed runs, then ``--repeats`` timed ones: median and spread), peak memory, and
  the shared evaluator's quality metrics.
- ``notebook``: the reference notebook's per-pair and top-50 loops (`notebook_reference`) on
  ``--loop-pairs`` pairs and ``--loop-users`` users, against cfrec's vectorized KNN timed in the
  same process: ratios per pair and per user's top-K list.
- ``surprise``: Surprise's ``SVD()`` and ``KNNBaseline()`` (defaults) against cfrec's CF and KNN on
  the same split: fit time, RMSE, prediction time, and the fit time cfrec's CF needs to reach
  Surprise SVD's RMSE (test RMSE scored after every epoch, off the clock). Surprise's fits
  alternate with cfrec's, so load drift hits both. Skipped with a note without scikit-surprise.
- ``scaling``: synthetic ratings from ``--min-ratings`` to ``--max-ratings`` (two sizes a decade),
  users and items each growing as √ratings from ML-1M's 6,040 × 3,706 at 1M (constant density):
  CF seconds per epoch in both layouts (dense only while Y and R fit ``--dense-max-gb``),
  content-based, KNN fit, prediction µs per pair, memory; a log-log plot with fitted slopes.

Every job (one model, one section, one scaling point) runs in a worker process of its own, so its
peak memory (its ``VmHWM``: resident-memory high-water mark) is its own; ``--no-isolate`` runs them
in this process, without memory figures. ``--device cpu cuda`` runs the suite once per device, in separate
tables; a device that is not there is skipped with a note. Output in ``--out``: ``benchmark.json``,
``benchmark.md`` (every table), ``results.md`` (the README's "Results" section), ``scaling.png``.

    python scripts/benchmark.py --threads 2                          # ML-1M; scaling up to 1M ratings
    python scripts/benchmark.py --threads 2 --max-ratings 10000000   # the README's run
    python scripts/benchmark.py --data synthetic:50000 --sections models scaling --max-ratings 300000
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import pickle
import platform
import shlex
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf

import benchtools as bt
import cfrec.data
from cfrec import metrics, plots
from cfrec.apps.compare import model_entry
from cfrec.apps.pipeline import fit_model, make_model
from cfrec.data import Ratings
from cfrec.evaluate import evaluate, ranking_metrics
from cfrec.experiment import make_split
from cfrec.io import atomic_path, write_json
from cfrec.models.base import Recommender
from cfrec.tables import to_markdown

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("models", "notebook", "surprise", "scaling")
DEFAULT_MODELS = ("global_mean", "bias", "popularity", "user_knn", "item_knn", "cf", "cf_weighted", "content")
# cfrec KNN variant: (compare-style model entry, the notebook loop it is timed against)
KNN_VARIANTS: dict[str, tuple[dict[str, Any], str]] = {
    "user_knn_reference": ({"model": "user_knn", "mode": "reference"}, "user"),
    "item_knn_reference": ({"model": "item_knn", "mode": "reference"}, "item"),
    "user_knn_reference_hnsw": ({"model": "user_knn", "mode": "reference", "neighbors": "hnsw", "hnsw": "notebook"}, "hnsw"),
    "user_knn": ({"model": "user_knn"}, "user"),
    "item_knn": ({"model": "item_knn"}, "item"),
}
# scaling curve: (model entry, training overrides)
SCALING_MODELS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "cf_dense": ({"model": "cf"}, {"layout": "dense"}),
    "cf_index": ({"model": "cf"}, {"layout": "index"}),
    "content": ({"model": "content"}, {}),
    "user_knn": ({"model": "user_knn"}, {}),
    "item_knn": ({"model": "item_knn"}, {}),
}
ANCHOR = (1_000_000, 6040, 3706)  # MovieLens 1M: ratings, users, movies
SCALING_LAW = "users = 6040·√(ratings/1M), movies = 3706·√(ratings/1M) (ML-1M's shape and density at every size)"
FEW_SECONDS = 5.0  # "all-users Recall@50 in a few seconds"


# -- data -------------------------------------------------------------------------------------
def synthetic_shape(n_ratings: int) -> tuple[int, int]:
    """(users, movies) of a synthetic data set with ``n_ratings`` ratings, by `SCALING_LAW`."""
    scale = math.sqrt(n_ratings / ANCHOR[0])
    return round(ANCHOR[1] * scale), round(ANCHOR[2] * scale)


def synthetic_ratings(n_ratings: int, seed: int = 0) -> Ratings:
    """MovieLens-shaped synthetic ratings (`cfrec.data.synthetic`) of the `synthetic_shape` for ``n_ratings``."""
    n_users, n_items = synthetic_shape(n_ratings)
    return cfrec.data.synthetic(n_users=n_users, n_items=n_items, n_ratings=n_ratings, seed=seed).ratings


def synthetic_split(n_ratings: int, seed: int = 0) -> tuple[Ratings, Ratings]:
    """`synthetic_ratings` with 10 % of each user's ratings held out (the vectorized per-user split)."""
    split = cfrec.data.per_user_split(synthetic_ratings(n_ratings, seed), method="vectorized")
    return split.train, split.test


def load_split(data: str, split: str) -> tuple[Ratings, Ratings]:
    """(train, test) of ``data`` (a MovieLens folder, ratings file, release name or ``synthetic:N``)
    under the split ``conf/split/<split>.yaml``."""
    if data.startswith("synthetic:"):
        ratings = synthetic_ratings(int(float(data.split(":", 1)[1])))
    else:
        ratings = cfrec.data.load(data)
    section = OmegaConf.to_container(OmegaConf.load(files("cfrec.conf").joinpath("split", f"{split}.yaml")))
    train, test = make_split(ratings, section)
    return train, test


def scaling_sizes(low: int, high: int) -> list[int]:
    """Two sizes a decade from ``low`` up to ``high`` (1e5, 3.16e5, 1e6, ...)."""
    count = int(math.floor(2 * math.log10(high / low) + 1e-9)) + 1 if high >= low else 0
    return [round(low * 10 ** (j / 2)) for j in range(count)]


# -- measurements (each runs inside one job) ----------------------------------------------------
def new_model(entry: dict[str, Any], device: str) -> tuple[Recommender, dict[str, Any]]:
    """An unfitted model from a compare-style ``entry`` (conf/model defaults + overrides) and its
    training options (conf/train, for learned models), as the apps build them."""
    options, train_options = model_entry(entry["model"], entry)
    return make_model(options, torch.device(device)), {**(train_options or {}), "progress": False}


def fit_fresh(entry: dict[str, Any], train: Ratings, device: str, train_overrides: dict[str, Any] | None = None) -> Recommender:
    """A `new_model` fitted on ``train``, its training options updated by ``train_overrides``."""
    model, train_options = new_model(entry, device)
    fit_model(model, train, {**train_options, **(train_overrides or {})}, device=torch.device(device), progress=False)
    return model


def measure_model(train: Ratings, test: Ratings, *, name: str, device: str, repeats: int, warmup: int, k: int) -> dict[str, Any]:
    """Fit, whole-test-set prediction and all-users Recall@``k`` timings of one model, and its quality."""
    fit, model = bt.time_repeats(lambda: fit_fresh({"model": name}, train, device), repeats, warmup, device)
    speed = bt.prediction_speed(model, test, repeats, warmup, device)
    rank, ranked = bt.time_repeats(lambda: ranking_metrics(model, train, test, ks=(k,), device=device), repeats, warmup, device)
    quality = evaluate(model, train, test, ks=sorted({10, k}), device=device)
    keys = ("rmse", "mae", "accuracy", "recall@10", f"recall@{k}", "ndcg@10", "n_test", "n_ranking_users")
    return {
        "config": model.config(), "fit": fit, "predict": speed["timing"], "us_per_pair": speed["us_per_pair"],
        "rank": rank, "rank_users": ranked["n_ranking_users"], "quality": {key: quality[key] for key in keys},
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
    """Surprise SVD / KNNBaseline against cfrec CF / KNN on this split (see the module docstring)."""
    try:
        import surprise
    except ImportError:
        return {"skipped": "scikit-surprise is not installed (pip install scikit-surprise)"}
    build_seconds, trainset = bt.timed(lambda: surprise_trainset(surprise, train))
    svd_runs, cf_traces = [], []
    for repeat in range(warmup + repeats):  # alternate, so that a load change hits both sides
        svd = surprise_run(surprise.SVD(), trainset, test)
        model, train_options = new_model({"model": "cf"}, device)
        trace = bt.fit_trace(model, train, test, train_options, device)
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


def surprise_trainset(surprise: Any, train: Ratings) -> Any:
    """Surprise's Trainset of ``train``, cfrec's codes as raw ids."""
    frame = pd.DataFrame({"user": train.users, "item": train.items, "rating": train.values.astype(np.float64)})
    scale = train.scale or (float(train.values.min()), float(train.values.max()))
    return surprise.Dataset.load_from_df(frame, surprise.Reader(rating_scale=scale)).build_full_trainset()


def surprise_run(algo: Any, trainset: Any, test: Ratings) -> dict[str, float]:
    """Fit a Surprise algorithm, predict every test pair (its own per-pair ``predict``): times and RMSE."""
    fit_seconds, _ = bt.timed(lambda: algo.fit(trainset))
    pairs = list(zip(test.users.tolist(), test.items.tolist()))
    predict_seconds, pred = bt.timed(lambda: np.array([algo.predict(u, i).est for u, i in pairs]))
    rmse = float(np.sqrt(np.mean((pred - test.values) ** 2)))
    return {"fit_seconds": fit_seconds, "rmse": rmse, "us_per_pair": predict_seconds / max(len(pairs), 1) * 1e6}


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
    "models": measure_model, "notebook": measure_notebook, "surprise": measure_surprise, "scaling": measure_scaling,
}


# -- jobs: one measurement in this process or in a worker ----------------------------------------
@dataclass(frozen=True)
class Job:
    """One measurement: a `MEASURES` section, its keyword options, the device and the data it runs on."""

    section: str
    data: str
    device: str
    options: dict[str, Any]
    threads: int | None = None


def run_job(job: Job, train: Ratings, test: Ratings) -> dict[str, Any]:
    """Run ``job`` here; adds the load average before/after and, on CUDA, the peak GPU memory."""
    if job.threads:
        torch.set_num_threads(job.threads)
    cuda = torch.device(job.device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(job.device)
    load_before = os.getloadavg()[0]
    result = MEASURES[job.section](train, test, device=job.device, **job.options)
    result["load_average"] = [load_before, os.getloadavg()[0]]
    if cuda:
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated(job.device) / 2**20
    return result


class Runner:
    """Runs jobs in worker processes (``isolate``: clean peak memory) or in this process."""

    def __init__(self, isolate: bool, threads: int | None, workdir: Path):
        self.isolate, self.threads, self.workdir = isolate, threads, workdir
        self._splits: dict[str, tuple[Ratings, Ratings]] = {}
        self._count = 0

    def register(self, key: str, split: tuple[Ratings, Ratings]) -> None:
        """Make ``split`` available to jobs as ``key`` (pickled for workers, kept in memory otherwise)."""
        if self.isolate:
            with open(self.workdir / f"{key}.pkl", "wb") as handle:
                pickle.dump(split, handle, protocol=pickle.HIGHEST_PROTOCOL)
        else:
            self._splits[key] = split

    def run(self, job: Job) -> dict[str, Any]:
        """The job's result; a worker that fails gives ``{"error": ...}`` instead of stopping the suite."""
        if not self.isolate:
            return {**run_job(job, *self._splits[job.data]), "peak_rss_mb": None, "model_rss_mb": None}
        self._count += 1
        job_file, result_file = self.workdir / f"job{self._count}.json", self.workdir / f"job{self._count}.result.json"
        write_json(job_file, {"job": asdict(job), "data": str(self.workdir / f"{job.data}.pkl"), "result": str(result_file)})
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", str(job_file)]
        status = subprocess.run(command, env=thread_env(self.threads)).returncode
        if status != 0:
            return {"error": f"worker exited with status {status}", "peak_rss_mb": None, "model_rss_mb": None}
        result = json.loads(result_file.read_text())
        return {**result, "model_rss_mb": result["peak_rss_mb"] - result["rss_after_load_mb"]}

    def forget(self, key: str) -> None:
        """Drop the split registered as ``key``."""
        self._splits.pop(key, None)
        (self.workdir / f"{key}.pkl").unlink(missing_ok=True)


def thread_env(threads: int | None) -> dict[str, str]:
    """This process's environment with the BLAS/OpenMP thread counts pinned to ``threads`` (if given)."""
    env = dict(os.environ)
    if threads:
        env.update({var: str(threads) for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
    return env


def worker(job_file: Path) -> None:
    """Worker process: load the job's split, run it, write its result with its memory high-water
    marks after loading and at the end (`benchtools.peak_rss_mb`)."""
    spec = json.loads(job_file.read_text())
    job = Job(**spec["job"])
    with open(spec["data"], "rb") as handle:
        train, test = pickle.load(handle)
    bt.prime_torch()
    after_load = bt.peak_rss_mb()
    result = run_job(job, train, test)
    write_json(spec["result"], {**result, "rss_after_load_mb": after_load, "peak_rss_mb": bt.peak_rss_mb()})


# -- the suite ------------------------------------------------------------------------------------
def run_suite(args: argparse.Namespace) -> dict[str, Any]:
    """Every requested section on every available device; the whole result as one JSON-able dict."""
    result: dict[str, Any] = {"setup": setup_info(args), "devices": {}}
    devices = [device for device in args.device if device_available(device)]
    for device in set(args.device) - set(devices):
        result["devices"][device] = {"skipped": f"{device} is not available on this machine"}
        print(f"{device}: not available here, skipped")
    with tempfile.TemporaryDirectory(prefix="cfrec-bench-") as workdir:
        runner = Runner(args.isolate, args.threads, Path(workdir))
        if set(args.sections) & {"models", "notebook", "surprise"}:
            train, test = load_split(args.data, args.split)
            result["setup"].update(n_train=len(train), n_test=len(test), n_users=train.n_users, n_items=train.n_items)
            runner.register("main", (train, test))
            del train, test
        for device in devices:
            result["devices"][device] = run_main_sections(runner, device, args)
        if "scaling" in args.sections:
            for device, scaling in run_scaling(runner, devices, args).items():
                result["devices"][device]["scaling"] = scaling
    result["setup"]["load_average_end"] = list(os.getloadavg())
    result["setup"]["finished"] = _now()
    for device, sections in result["devices"].items():
        if "skipped" not in sections:
            sections["targets"] = check_targets(sections, args.k)
    return result


def device_available(device: str) -> bool:
    return torch.device(device).type != "cuda" or torch.cuda.is_available()


def run_main_sections(runner: Runner, device: str, args: argparse.Namespace) -> dict[str, Any]:
    """The ``models``, ``notebook`` and ``surprise`` sections on the main split, on one device."""
    common = {"repeats": args.repeats, "warmup": args.warmup}
    jobs: dict[str, Job] = {}
    if "models" in args.sections:
        jobs.update({f"models/{name}": Job("models", "main", device, {"name": name, "k": args.k, **common}, args.threads)
                     for name in args.models})
    if "notebook" in args.sections:
        options = {"k": args.k, "loop_pairs": args.loop_pairs, "loop_users": args.loop_users, **common}
        jobs["notebook"] = Job("notebook", "main", device, options, args.threads)
    if "surprise" in args.sections:
        jobs["surprise"] = Job("surprise", "main", device, common, args.threads)
    out: dict[str, Any] = {}
    for label, job in jobs.items():
        section, _, name = label.partition("/")
        row = announce(f"{device} {label}", lambda: runner.run(job))
        if name:
            out.setdefault(section, {})[name] = row
        else:
            out[section] = row
    return out


def run_scaling(runner: Runner, devices: list[str], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Every size of `scaling_sizes`, every model of `SCALING_MODELS`, on each device: points and slopes."""
    points: dict[str, list[dict[str, Any]]] = {device: [] for device in devices}
    options = {"repeats": args.repeats, "warmup": args.warmup, "epochs": args.scaling_epochs}
    for n_ratings in scaling_sizes(args.min_ratings, args.max_ratings):
        key = f"synthetic-{n_ratings}"
        train, test = announce(f"generate {key}", lambda: synthetic_split(n_ratings))
        base = {"ratings": n_ratings, "users": train.n_users, "items": train.n_items, "train": len(train), "test": len(test)}
        dense_gb = train.n_users * train.n_items * DENSE_BYTES_PER_CELL / 2**30
        runner.register(key, (train, test))
        del train, test
        for device in devices:
            for name in SCALING_MODELS:
                point = {**base, "model": name}
                if name == "cf_dense" and dense_gb > args.dense_max_gb:
                    point["skipped"] = f"dense Y, R need ~{dense_gb:.1f} GiB > --dense-max-gb {args.dense_max_gb}"
                else:
                    job = Job("scaling", key, device, {"name": name, **options}, args.threads)
                    point.update(announce(f"{device} scaling {name} {n_ratings:,}", lambda: runner.run(job)))
                points[device].append(point)
        runner.forget(key)
    return {device: {"law": SCALING_LAW, "epochs": args.scaling_epochs, "points": rows, "slopes": scaling_slopes(rows)}
            for device, rows in points.items()}


DENSE_BYTES_PER_CELL = 9  # Y float32, R bool, R float32
SCALING_METRICS = ("epoch_seconds", "fit_seconds", "us_per_pair", "model_rss_mb", "peak_gpu_mb")


def scaling_slopes(points: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Log-log slope of each model's cost against the number of ratings, per metric (None: < 2 points)."""
    slopes: dict[str, dict[str, float | None]] = {}
    for name in SCALING_MODELS:
        rows = [p for p in points if p["model"] == name and _ok(p)]
        slopes[name] = {}
        for metric in SCALING_METRICS:
            xy = [(p["ratings"], p[metric]) for p in rows if (p.get(metric) or 0) > 0]
            slopes[name][metric] = loglog_slope(*zip(*xy)) if len(xy) >= 2 else None
    return slopes


def loglog_slope(x: Iterable[float], y: Iterable[float]) -> float:
    """Least-squares slope of log y against log x: cost ∝ size^slope."""
    return float(np.polyfit(np.log10(np.asarray(x, float)), np.log10(np.asarray(y, float)), 1)[0])


def announce(label: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn``, printing the label, its wall time and any error it reports."""
    print(f"{label} ...", flush=True)
    seconds, result = bt.timed(fn)
    error = f" ERROR: {result['error']}" if isinstance(result, dict) and "error" in result else ""
    print(f"{label}: {seconds:.1f} s{error}", flush=True)
    return result


def _ok(row: Any) -> bool:
    return isinstance(row, dict) and "error" not in row and "skipped" not in row


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def setup_info(args: argparse.Namespace) -> dict[str, Any]:
    """Machine, versions, threads, load and the command line of this run."""
    cpu = next((line.split(":", 1)[1].strip() for line in _read_lines("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor() or platform.machine())
    memory_kb = next((int(line.split()[1]) for line in _read_lines("/proc/meminfo") if line.startswith("MemTotal")), 0)
    return {
        "command": "python scripts/benchmark.py " + shlex.join(args.argv), "started": _now(), "cpu": cpu,
        "logical_cpus": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)), "memory_gb": memory_kb / 2**20,
        "threads": args.threads, "torch_threads": args.threads or torch.get_num_threads(), "python": platform.python_version(),
        "torch": torch.__version__, "numpy": np.__version__, "git": _git_revision(), "data": args.data,
        "split": args.split, "k": args.k, "isolated": args.isolate, "repeats": args.repeats, "warmup": args.warmup,
        "load_average_start": list(os.getloadavg()),
    }


def _read_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def _git_revision() -> str | None:
    """Commit of the checkout, "+dirty" when it has uncommitted changes; None outside git."""
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


# -- targets ----------------------------------------------------------------------------------------
def check_targets(sections: dict[str, Any], k: int) -> list[dict[str, Any]]:
    """The issue's speed targets on one device: what was measured, what was wanted, met or not."""
    rows = []
    notebook = sections.get("notebook")
    if _ok(notebook):
        for name, row in notebook["variants"].items():
            ratio = row["per_pair_ratio"]
            rows.append(_target(f"{name} per pair vs the notebook's {row['loop']} loop", ratio, f"{ratio:,.0f}×", "≥ 100×", ratio >= 100))
    for name, row in sections.get("models", {}).items():
        if _ok(row):
            seconds = row["rank"]["median"]
            rows.append(_target(f"{name}: Recall@{k} over all {row['rank_users']:,} test users", seconds,
                                f"{seconds:.2f} s", f"≤ {FEW_SECONDS:g} s", seconds <= FEW_SECONDS))
    surprise = sections.get("surprise")
    if _ok(surprise):
        ratio = surprise.get("svd_fit_over_cf_to_target")
        shown = "not reached" if ratio is None else (
            f"{surprise['cf_to_target']['median']:.2f} s vs {surprise['svd']['fit']['median']:.2f} s ({ratio:.1f}×)")
        rows.append(_target(f"CF reaches Surprise SVD's RMSE {surprise['target_rmse']:.4f} within Surprise's fit time",
                            ratio, shown, "≥ 1× (Surprise fit / CF time)", ratio is not None and ratio >= 1))
    return rows


def _target(name: str, value: float | None, shown: str, wanted: str, met: bool) -> dict[str, Any]:
    return {"target": name, "value": value, "measured": shown, "wanted": wanted, "met": bool(met)}


# -- reports ----------------------------------------------------------------------------------------
def _fmt(value: Any, digits: int = 2) -> str:
    """A table cell: None as an em dash, floats with ``digits`` decimals and thousands separators."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _timing(timing: dict[str, Any], digits: int = 2) -> str:
    """Median with the min–max range of the repeats."""
    if len(timing["runs"]) == 1:
        return _fmt(timing["median"], digits)
    return f"{_fmt(timing['median'], digits)} ({_fmt(timing['min'], digits)}–{_fmt(timing['max'], digits)})"


def _table(rows: list[dict[str, Any]]) -> str:
    return to_markdown(pd.DataFrame(rows)) if rows else "(nothing measured)\n"


def models_table(models: dict[str, Any], k: int) -> str:
    """Quality and speed of each model (medians, min–max of the repeats in brackets)."""
    rows, scores_only = [], []
    for name, r in models.items():
        if not _ok(r):
            rows.append({"model": name, "RMSE": r.get("error", "")})
            continue
        q = r["quality"]
        if r["config"].get("w0") is not None:  # the weighted mask ranks; its scores are not ratings
            scores_only.append(name)
        rating = (lambda key: "n/a") if name in scores_only else (lambda key: _fmt(q[key], 4))
        rows.append({
            "model": name, "RMSE": rating("rmse"), "MAE": rating("mae"), "accuracy": rating("accuracy"),
            "Recall@10": _fmt(q["recall@10"], 4), f"Recall@{k}": _fmt(q[f"recall@{k}"], 4), "NDCG@10": _fmt(q["ndcg@10"], 4),
            "fit s": _timing(r["fit"]), "predict µs/pair": _fmt(r["us_per_pair"], 3),
            f"Recall@{k} all users s": _timing(r["rank"]), "peak RSS MiB": _fmt(r["peak_rss_mb"], 0),
            "model MiB": _fmt(r["model_rss_mb"], 0), **({"peak GPU MiB": _fmt(r["peak_gpu_mb"], 0)} if "peak_gpu_mb" in r else {}),
        })
    note = f"\nn/a: {', '.join(scores_only)} ranks by scores that are not ratings.\n" if scores_only else ""
    return _table(rows) + note


def notebook_tables(notebook: dict[str, Any], k: int) -> str:
    """cfrec KNN against the notebook's loops (ratios), and the loops' own accuracy and RMSE."""
    if not _ok(notebook):
        return f"{notebook.get('error') or notebook.get('skipped')}\n"
    rows = [{
        "cfrec variant": name, "notebook loop": r["loop"], "loop ms/pair": _fmt(r["loop_ms_per_pair"], 3),
        "cfrec µs/pair": _fmt(r["us_per_pair"], 3), "× per pair": _fmt(r["per_pair_ratio"], 0),
        "loop ms/user (top-50)": _fmt(r["loop_top_k"]["seconds_per_user"] * 1e3 if "loop_top_k" in r else None, 1),
        f"cfrec ms/user (top-{k})": _fmt(r.get("top_k_ms_per_user"), 3), "× top-K": _fmt(r.get("top_k_ratio"), 0),
        "max abs diff vs loop": _fmt(r.get("max_abs_diff_vs_loop"), 6), "fit s": _fmt(r["fit_seconds"]),
    } for name, r in notebook["variants"].items()]
    pairs = [{"loop": name, "pairs": r["pairs"], "accuracy": _fmt(r["accuracy"], 4), "RMSE": _fmt(r["rmse"], 4)}
             for name, r in notebook["loops"].items()]
    top = next((r["loop_top_k"] for r in notebook["variants"].values() if "loop_top_k" in r), None)
    note = "" if top is None else (f"\nThe notebook's top-50 loop (HNSW user neighbours) ran on the first {top['users']} users "
                                   f"with a liked test movie before each variant's top-K lists (Recall@50 {top['recall@50']:.4f} "
                                   f"on them); cfrec's lists cover all users.\n")
    return (_table(rows) + note + "\nThe notebook's per-pair loops on the first test pairs (its printed figures: user "
            "0.395 / 0.9888, item 0.439 / 0.9708):\n\n" + _table(pairs))


def surprise_tables(surprise: dict[str, Any]) -> str:
    """Surprise against cfrec on the same split: fit time, RMSE, prediction time; CF's time to SVD's RMSE."""
    if not _ok(surprise):
        return f"{surprise.get('error') or surprise.get('skipped')}\n"
    svd, kb, cf = surprise["svd"], surprise["knn_baseline"], surprise["cf"]
    rows = [
        {"model": f"Surprise SVD() {surprise['surprise_version']}", "fit s": _timing(svd["fit"]),
         "RMSE": " / ".join(_fmt(x, 4) for x in svd["rmse"]), "predict µs/pair": _fmt(svd["us_per_pair"], 2)},
        {"model": "Surprise KNNBaseline() (one run)", "fit s": _fmt(kb["fit_seconds"]), "RMSE": _fmt(kb["rmse"], 4),
         "predict µs/pair": _fmt(kb["us_per_pair"], 2)},
        {"model": f"cfrec cf ({len(cf['epochs'][0])} epochs)", "fit s": _timing(cf["fit"]),
         "RMSE": " / ".join(_fmt(x, 4) for x in cf["rmse"]), "predict µs/pair": "—"},
    ]
    rows += [{"model": f"cfrec {name}", "fit s": _timing(r["fit"]), "RMSE": _fmt(r["rmse"], 4),
              "predict µs/pair": _fmt(r["us_per_pair"], 3)} for name, r in surprise["knn"].items()]
    reached = surprise["cf_reached"]
    if "cf_to_target" in surprise:
        line = (f"cfrec CF reaches the best SVD RMSE of the repeats, {surprise['target_rmse']:.4f}, after "
                f"{_timing(surprise['cf_to_target'])} s of fitting (epoch {' / '.join(str(r['epoch']) for r in reached)}; "
                f"test scoring off the clock), against {_timing(svd['fit'])} s for Surprise's SVD fit: Surprise's fit "
                f"takes **{surprise['svd_fit_over_cf_to_target']:.1f}×** cfrec's time to that RMSE.")
    else:
        line = f"cfrec CF did not reach SVD's RMSE {surprise['target_rmse']:.4f} in every repeat ({reached})."
    return _table(rows) + "\n" + line + "\n"


def scaling_tables(scaling: dict[str, Any], detailed: bool) -> str:
    """Slopes of each cost against the number of ratings and, in detail, every point."""
    names = {"epoch_seconds": "s/epoch", "fit_seconds": "fit s", "us_per_pair": "µs/pair",
             "model_rss_mb": "memory above data", "peak_gpu_mb": "peak GPU memory"}
    shown = [m for m in SCALING_METRICS if any(s.get(m) is not None for s in scaling["slopes"].values())]
    slopes = [{"model": name, **{f"slope of {names[m]}": _fmt(s[m]) for m in shown}} for name, s in scaling["slopes"].items()]
    text = f"Sizes: {SCALING_LAW}; learned models train {scaling['epochs']} epochs.\n\n" + _table(slopes)
    skipped = sorted({p["skipped"] for p in scaling["points"] if "skipped" in p})
    text += "".join(f"\nSkipped: {note}.\n" for note in skipped)
    if detailed:
        rows = [{"ratings": p["ratings"], "users": p["users"], "movies": p["items"], "model": p["model"],
                 "fit s": _fmt(p.get("fit_seconds")), "s/epoch": _fmt(p.get("epoch_seconds"), 3),
                 "µs/pair": _fmt(p.get("us_per_pair"), 3), "peak RSS MiB": _fmt(p.get("peak_rss_mb"), 0),
                 "memory above data MiB": _fmt(p.get("model_rss_mb"), 0), "test RMSE": _fmt(p.get("test_rmse"), 4),
                 "note": p.get("skipped") or p.get("error") or ""} for p in scaling["points"]]
        text += "\n" + _table(rows)
    return text


def targets_table(targets: list[dict[str, Any]]) -> str:
    rows = [{"target": t["target"], "measured": t["measured"], "wanted": t["wanted"], "met": "yes" if t["met"] else "**no**"}
            for t in targets]
    return _table(rows)


def report(result: dict[str, Any], k: int, detailed: bool) -> str:
    """Markdown of a suite run: the README's "Results" section, or (``detailed``) every table."""
    s = result["setup"]
    lines = [
        "## Results", "",
        f"`{s['command']}` at {s['git']}, {s['started']} – {s['finished']}: {s['cpu']}, {s['usable_cpus']} usable CPU(s), "
        f"{s['memory_gb']:.0f} GiB, torch {s['torch']} with {s['torch_threads']} thread(s); load average "
        f"{s['load_average_start'][0]:.2f} at the start and {s['load_average_end'][0]:.2f} at the end (1-minute; the "
        f"machine is shared, so absolute times move — ratios are measured within one process).",
    ]
    if "n_train" in s:
        lines += ["", f"Data: `{s['data']}`, {s['split']} split: {s['n_train']:,} train / {s['n_test']:,} test ratings, "
                      f"{s['n_users']:,} users × {s['n_items']:,} movies. Timings: {s['warmup']} warm-up run(s), then the "
                      f"median (min–max) of {s['repeats']}."]
    for device, sections in result["devices"].items():
        lines += ["", f"### {device.upper()}", ""]
        if "skipped" in sections:
            lines.append(sections["skipped"])
            continue
        lines += _device_sections(sections, k, detailed)
    return "\n".join(lines).rstrip() + "\n"


def _device_sections(sections: dict[str, Any], k: int, detailed: bool) -> list[str]:
    parts = []
    if "models" in sections:
        parts += ["#### Quality and speed of each model", "", models_table(sections["models"], k)]
    if "notebook" in sections:
        parts += ["#### cfrec KNN against the reference notebook's loops (same process)", "", notebook_tables(sections["notebook"], k)]
    if "surprise" in sections:
        parts += ["#### Against Surprise on the same split (same process, runs alternated)", "", surprise_tables(sections["surprise"])]
    if sections.get("targets"):
        parts += ["#### Targets", "", targets_table(sections["targets"])]
    if "scaling" in sections:
        parts += ["#### Scaling on synthetic data", "", scaling_tables(sections["scaling"], detailed)]
    return parts


def scaling_plot(scaling: dict[str, Any], path: Path) -> Path:
    """Log-log panels of the scaling points, each curve labelled with its fitted slope."""
    panels = {
        "learned models: seconds per epoch": ("epoch_seconds", ("cf_dense", "cf_index", "content")),
        "KNN: fit seconds": ("fit_seconds", ("user_knn", "item_knn")),
        "prediction µs per pair": ("us_per_pair", tuple(SCALING_MODELS)),
        "memory above the loaded data (MiB)": ("model_rss_mb", tuple(SCALING_MODELS)),
    }
    curves = {}
    for title, (metric, models) in panels.items():
        series = {}
        for name in models:
            xy = [(p["ratings"], p[metric]) for p in scaling["points"] if p["model"] == name and _ok(p) and (p.get(metric) or 0) > 0]
            slope = scaling["slopes"][name][metric]
            if xy:
                series[name if slope is None else f"{name} (slope {slope:.2f})"] = tuple(zip(*xy))
        if series:
            curves[title] = series
    return plots.loglog_panels(curves, path, xlabel="ratings")


README_START, README_END = "<!-- benchmark results: start -->", "<!-- benchmark results: end -->"


def splice_readme(readme: Path, results: str) -> None:
    """Replace the text between `README_START` and `README_END` in ``readme`` with ``results``."""
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise SystemExit(f"{readme}: needs the lines {README_START} and {README_END} around its results section")
    with atomic_path(readme) as tmp:
        tmp.write_text(text[: start + len(README_START)] + "\n" + results + text[end:], encoding="utf-8")


def write_outputs(result: dict[str, Any], out: Path, k: int) -> str:
    """benchmark.json, benchmark.md, results.md and a scaling PNG per device into ``out``; returns
    the text of results.md."""
    write_json(out / "benchmark.json", result)
    texts = {name: report(result, k, detailed) for name, detailed in (("benchmark.md", True), ("results.md", False))}
    for name, text in texts.items():
        with atomic_path(out / name) as tmp:
            tmp.write_text(text)
    for device, sections in result["devices"].items():
        if "scaling" in sections:
            scaling_plot(sections["scaling"], out / ("scaling.png" if device == "cpu" else f"scaling-{device}.png"))
    return texts["results.md"]


# -- command line -----------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO / ".." / "shared" / "data" / "ml-1m"),
                        help="MovieLens folder, ratings file, release name or synthetic:N (default: ../shared/data/ml-1m "
                             "from the repository root)")
    parser.add_argument("--split", default="per_user", choices=["per_user", "random", "temporal", "kfold"],
                        help="a conf/split/*.yaml, with its defaults (default: per_user, the reference split)")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="conf/model names for the models section")
    parser.add_argument("--device", nargs="+", default=["cpu"], choices=["cpu", "cuda"],
                        help="run the suite on each (cuda skipped with a note where there is no GPU)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each measurement (median, min–max)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before them")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch, BLAS and OpenMP threads of the workers (default: the libraries' own choice)")
    parser.add_argument("--k", type=int, default=50, help="Recall@K of the timed all-users ranking and top-K lists")
    parser.add_argument("--loop-pairs", type=int, default=1000, help="test pairs timed through the notebook's per-pair loops")
    parser.add_argument("--loop-users", type=int, default=100,
                        help="users timed through its top-50 loop before each variant's top-K lists (0: skip)")
    parser.add_argument("--min-ratings", type=int, default=100_000, help="smallest synthetic size of the scaling section")
    parser.add_argument("--max-ratings", type=int, default=1_000_000, help="largest synthetic size (10000000 for the full curve)")
    parser.add_argument("--scaling-epochs", type=int, default=2, help="epochs per learned-model fit in the scaling section")
    parser.add_argument("--dense-max-gb", type=float, default=4.0, help="skip the dense CF layout when Y and R would need more")
    parser.add_argument("--no-isolate", dest="isolate", action="store_false",
                        help="run every job in this process (faster start, no memory figures)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "benchmark", help="output folder")
    parser.add_argument("--readme", type=Path, help="also write the results section into this file, between "
                        f"the lines {README_START} and {README_END}")
    parser.add_argument("--from-json", type=Path, help="measure nothing: render the reports of a saved benchmark.json "
                        "(into --out, and --readme if given)")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be at least 1 and --warmup at least 0")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the suite (or, with ``--worker``, one job of it); write and print the results."""
    args = parse_args(argv)
    if args.worker:
        worker(args.worker)
        return {}
    if args.from_json:
        result = json.loads(args.from_json.read_text())
    else:
        if args.threads:
            torch.set_num_threads(args.threads)
        result = run_suite(args)
    k = result["setup"].get("k", args.k)
    results = write_outputs(result, args.out, k)
    if args.readme:
        splice_readme(args.readme, results)
    print(results)
    print(f"wrote {args.out / 'benchmark.json'}, benchmark.md, results.md" + (f", {args.readme}" if args.readme else ""))
    return result


if __name__ == "__main__":
    main()
