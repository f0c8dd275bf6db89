"""The benchmark's command line: which sections on which data sets and devices, then the reports.

Sections (``--sections`` / ``--section``; all by default; each runs alone):

- ``models``: every cfrec model preset (``cfrec/conf/model/*.yaml``, or ``--models``) on each
  ``--data`` set: fit, whole-test-set prediction, all-users Recall@K, peak memory, quality.
- ``peers``: cornac MF / EASE, implicit ALS / BPR, Surprise SVD and a reference EASE against cfrec's
  ``cf`` and ``cf_weighted``, on each ``--data`` set, runs interleaved (`peers`).
- ``notebook``: the reference notebook's loops against cfrec's vectorized KNN (first data set).
- ``surprise``: Surprise's SVD and KNNBaseline against cfrec's CF and KNN (first data set).
- ``load``: the default ``cf`` fit with ``--load-helpers`` busy processes and without (first data set).
- ``scaling``: synthetic sizes from ``--min-ratings`` to ``--max-ratings`` (two a decade), users and
  movies grown as ML-1M (``--scaling-shape ml1m``, constant density) and/or as ML-25M (``ml25m``).

Threads: ``--threads N``, else ``$CFREC_THREADS``, else cfrec's default (`cfrec.threads`: 1).
Every job runs in a worker process of its own (its peak memory is its own; ``--no-isolate``: in this
process). Output in ``--out``: benchmark.json, benchmark.md (every table), results.md (the README's
"Results" section), scaling.png.

    python -m scripts.benchmark --section peers --data ../shared/data/ml-1m ../shared/data/ml-100k
    python scripts/benchmark/run.py --section models peers --data ../shared/data/ml-1m ../shared/data/ml-100k synthetic
    python scripts/benchmark.py --max-ratings 10000000 --scaling-shape ml1m ml25m   # the README's run
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from cfrec.threads import DEFAULT_THREADS, resolve_threads_with_source, usable_cpus

from . import report
from .data import data_label, load_split, presets, scaling_sizes, shape_law, synthetic_shape, synthetic_split
from .peers import PEERS
from .runner import Job, Runner, announce, worker
from .sections import SCALING_MODELS

REPO = Path(__file__).resolve().parents[2]
SECTIONS = ("models", "notebook", "surprise", "peers", "load", "scaling")
MAIN_ONLY = ("notebook", "surprise", "load")  # sections that run on the first data set only
DENSE_BYTES_PER_CELL = 9  # Y float32, R bool, R float32
MAX_DENSITY = 0.5  # scaling points denser than this are skipped


def run_suite(args: argparse.Namespace) -> dict[str, Any]:
    """Every requested section on every available device; the whole result as one JSON-able dict."""
    result: dict[str, Any] = {"setup": setup_info(args), "devices": {}}
    devices = [device for device in args.device if device_available(device)]
    for device in set(args.device) - set(devices):
        result["devices"][device] = {"skipped": f"{device} is not available on this machine"}
        print(f"{device}: not available here, skipped")
    with tempfile.TemporaryDirectory(prefix="cfrec-bench-") as workdir:
        runner = Runner(args.isolate, args.threads, Path(workdir))
        for device in devices:
            result["devices"][device] = {}
        if set(args.sections) & {"models", "peers", *MAIN_ONLY}:
            datasets = result["setup"]["datasets"] = {}
            for position, data in enumerate(args.data):
                label = data_label(data)
                train, test = announce(f"load {label}", lambda: load_split(data, args.split))
                datasets[label] = {"data": data, "n_train": len(train), "n_test": len(test),
                                   "n_users": train.n_users, "n_items": train.n_items}
                if position == 0:
                    result["setup"].update(datasets[label])
                runner.register(label, (train, test))
                del train, test
                for device in devices:
                    found = run_data_sections(runner, label, device, args, first=position == 0)
                    target = result["devices"][device]
                    if position > 0:
                        target = target.setdefault("other_data", {}).setdefault(label, {})
                    target.update(found)
                runner.forget(label)
                report.write_text(args.out / "partial.json", json.dumps(result, indent=2) + "\n")  # survives a stop
        if "scaling" in args.sections:
            for shape in args.scaling_shape:
                for device, curve in run_scaling(runner, devices, args, shape).items():
                    result["devices"][device].setdefault("scaling", {})[shape] = curve
    result["setup"]["load_average_end"] = list(os.getloadavg())
    result["setup"]["finished"] = _now()
    for device, sections in result["devices"].items():
        if "skipped" not in sections:
            sections["targets"] = report.check_targets(sections, args.k)
    return result


def device_available(device: str) -> bool:
    return torch.device(device).type != "cuda" or torch.cuda.is_available()


def run_data_sections(runner: Runner, label: str, device: str, args: argparse.Namespace, first: bool) -> dict[str, Any]:
    """The sections that run on one data set (``first``: also notebook, surprise and load) on one device."""
    common = {"repeats": args.repeats, "warmup": args.warmup}
    jobs: dict[str, Job] = {}
    if "models" in args.sections:
        jobs.update({f"models/{name}": Job("models", label, device, {"name": name, "k": args.k, **common}, args.threads)
                     for name in args.models})
    if "peers" in args.sections:
        jobs["peers"] = Job("peers", label, device, {"k": args.k, "peers": args.peers, "cfrec_models": args.peer_cfrec,
                                                     **common}, args.threads)
    if first and "notebook" in args.sections:
        options = {"k": args.k, "loop_pairs": args.loop_pairs, "loop_users": args.loop_users, **common}
        jobs["notebook"] = Job("notebook", label, device, options, args.threads)
    if first and "surprise" in args.sections:
        jobs["surprise"] = Job("surprise", label, device, common, args.threads)
    if first and "load" in args.sections:
        counts = list(dict.fromkeys([DEFAULT_THREADS, args.threads, usable_cpus()]))  # cfrec's default first
        jobs["load"] = Job("load", label, device, {"helpers": args.load_helpers, "thread_counts": counts, **common}, args.threads)
    out: dict[str, Any] = {}
    for name, job in jobs.items():
        section, _, model = name.partition("/")
        row = announce(f"{device} {label} {name}", lambda: runner.run(job))
        if model:
            out.setdefault(section, {})[model] = row
        else:
            out[section] = row
    return out


def run_scaling(runner: Runner, devices: list[str], args: argparse.Namespace, shape: str) -> dict[str, dict[str, Any]]:
    """Every size of `scaling_sizes` grown by ``shape``, every model of `SCALING_MODELS`, on each device."""
    points: dict[str, list[dict[str, Any]]] = {device: [] for device in devices}
    options = {"repeats": args.repeats, "warmup": args.warmup, "epochs": args.scaling_epochs}
    for n_ratings in scaling_sizes(args.min_ratings, args.max_ratings):
        key = f"synthetic-{shape}-{n_ratings}"
        n_users, n_items = synthetic_shape(n_ratings, shape)
        if n_ratings > MAX_DENSITY * n_users * n_items:  # the ML-25M law shrinks small sizes below any sensible density
            note = f"{n_users:,} users × {n_items:,} movies cannot hold {n_ratings:,} ratings at density ≤ {MAX_DENSITY:g}"
            for device in devices:
                points[device] += [{"ratings": n_ratings, "users": n_users, "items": n_items, "model": name, "skipped": note}
                                   for name in SCALING_MODELS]
            continue
        train, test = announce(f"generate {key}", lambda: synthetic_split(n_ratings, shape=shape))
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
                    point.update(announce(f"{device} scaling {shape} {name} {n_ratings:,}", lambda: runner.run(job)))
                points[device].append(point)
        runner.forget(key)
    return {device: {"shape": shape, "law": shape_law(shape), "epochs": args.scaling_epochs, "points": rows,
                     "slopes": scaling_slopes(rows)} for device, rows in points.items()}


def scaling_slopes(points: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Log-log slope of each model's cost against the number of ratings, per metric (None: < 2 points)."""
    slopes: dict[str, dict[str, float | None]] = {}
    for name in SCALING_MODELS:
        rows = [p for p in points if p["model"] == name and report._ok(p)]
        slopes[name] = {}
        for metric in report.SCALING_METRICS:
            xy = [(p["ratings"], p[metric]) for p in rows if (p.get(metric) or 0) > 0]
            slopes[name][metric] = loglog_slope(*zip(*xy)) if len(xy) >= 2 else None
    return slopes


def loglog_slope(x: Iterable[float], y: Iterable[float]) -> float:
    """Least-squares slope of log y against log x: cost ∝ size^slope."""
    return float(np.polyfit(np.log10(np.asarray(x, float)), np.log10(np.asarray(y, float)), 1)[0])


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def setup_info(args: argparse.Namespace) -> dict[str, Any]:
    """Machine, versions, threads, load and the command line of this run."""
    cpu = next((line.split(":", 1)[1].strip() for line in _read_lines("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor() or platform.machine())
    memory_kb = next((int(line.split()[1]) for line in _read_lines("/proc/meminfo") if line.startswith("MemTotal")), 0)
    return {
        "command": "python scripts/benchmark.py " + shlex.join(args.argv), "started": _now(), "cpu": cpu,
        "logical_cpus": os.cpu_count(), "usable_cpus": usable_cpus(), "memory_gb": memory_kb / 2**20,
        "threads": args.threads, "threads_from": args.threads_from, "torch_threads": args.threads,
        "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__, "git": _git_revision(),
        "data": args.data[0], "split": args.split, "k": args.k, "isolated": args.isolate, "repeats": args.repeats,
        "warmup": args.warmup, "load_average_start": list(os.getloadavg()),
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmark", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=[str(REPO / ".." / "shared" / "data" / "ml-1m")],
                        help="data sets: MovieLens folders, ratings files, release names, synthetic (1M ratings, ML-1M's "
                             "shape) or synthetic:N; the first also runs notebook, surprise and load (default: "
                             "../shared/data/ml-1m from the repository root)")
    parser.add_argument("--split", default="per_user", choices=["per_user", "random", "temporal", "kfold"],
                        help="a conf/split/*.yaml, with its defaults (default: per_user, the reference split)")
    parser.add_argument("--sections", "--section", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--models", nargs="+", default=None, help="conf/model presets of the models section (default: all)")
    parser.add_argument("--peers", nargs="+", default=None, choices=list(PEERS), metavar="PEER",
                        help=f"peers of the peers section (default: all: {', '.join(PEERS)})")
    parser.add_argument("--peer-cfrec", nargs="*", default=None, help="cfrec presets interleaved with the peers (default: cf cf_fast cf_weighted)")
    parser.add_argument("--device", nargs="+", default=["cpu"], choices=["cpu", "cuda"],
                        help="run the suite on each (cuda skipped with a note where there is no GPU)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each measurement (median, min–max)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before them")
    parser.add_argument("--threads", default=None,
                        help="torch, BLAS and OpenMP threads of the workers (default: $CFREC_THREADS, else cfrec's default, 1; "
                             "0 or 'all': every usable CPU)")
    parser.add_argument("--k", type=int, default=50, help="Recall@K of the timed all-users ranking and top-K lists")
    parser.add_argument("--loop-pairs", type=int, default=1000, help="test pairs timed through the notebook's per-pair loops")
    parser.add_argument("--loop-users", type=int, default=100,
                        help="users timed through its top-50 loop before each variant's top-K lists (0: skip)")
    parser.add_argument("--load-helpers", type=int, default=2, help="busy helper processes of the load section")
    parser.add_argument("--min-ratings", type=int, default=100_000, help="smallest synthetic size of the scaling section")
    parser.add_argument("--max-ratings", type=int, default=1_000_000, help="largest synthetic size (10000000 for the full curve)")
    parser.add_argument("--scaling-shape", nargs="+", default=["ml1m"], choices=["ml1m", "ml25m"],
                        help="how users and movies grow with ratings: ml1m (√ratings each, constant density) and/or ml25m "
                             "(power laws through ML-1M and ML-25M's 162k × 59k)")
    parser.add_argument("--scaling-epochs", type=int, default=2, help="epochs per learned-model fit in the scaling section")
    parser.add_argument("--dense-max-gb", type=float, default=4.0, help="skip the dense CF layout when Y and R would need more")
    parser.add_argument("--no-isolate", dest="isolate", action="store_false",
                        help="run every job in this process (faster start, no memory figures)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "benchmark", help="output folder")
    parser.add_argument("--readme", type=Path, help="also write the results section into this file, between "
                        f"the lines {report.README_START} and {report.README_END}")
    parser.add_argument("--from-json", type=Path, help="measure nothing: render the reports of a saved benchmark.json "
                        "(into --out, and --readme if given)")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be at least 1 and --warmup at least 0")
    args.threads, args.threads_from = resolve_threads_with_source(args.threads, "--threads")
    args.models = args.models or presets()
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
        print(f"torch threads: {args.threads} ({args.threads_from}; CFREC_THREADS or --threads N to change)", flush=True)
        result = run_suite(args)
    k = result["setup"].get("k", args.k)
    results = report.write_outputs(result, args.out, k)
    if args.readme:
        report.splice_readme(args.readme, results)
    print(results)
    print(f"wrote {args.out / 'benchmark.json'}, benchmark.md, results.md" + (f", {args.readme}" if args.readme else ""))
    return result
