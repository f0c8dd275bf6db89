"""Epoch cost of the default model as data grow the way MovieLens does, and against the memory floor.

Two measurements, written to ``--out`` as ``epoch.md`` and ``epoch.json``:

1. **Scaling as ML-25M grows** (``--sizes``): synthetic sets of the benchmark's ``ml25m`` shape
   (users ∝ ratings^1.02, movies ∝ ratings^0.86: 6,040 × 3,706 at 1M ratings, 162,541 × 59,047 at
   25M; `scripts/benchmark/data.py`), 10 % of each user's ratings held out as the benchmark does. For
   each size and each ``--optimizers`` value, the default ``cf`` (preset and training defaults, only
   the optimizer and ``--epochs`` changed) is fitted in a fresh process; it reports the trainer's
   seconds per epoch (the batch loop; validation excluded), the validation RMSE and its peak resident
   memory (VmHWM: data, model, optimizer state). ``adam`` (every row every step) is skipped above
   ``--dense-max`` ratings.
2. **ML-1M against the memory-traffic floor** (``--ml1m``): the default ``cf`` fit's seconds per
   epoch beside the time one pass over the ratings' factors takes at the bandwidth a plain torch copy
   reaches here: bytes = ratings × (the four factor rows a rating reads: θ_u, x_i of the rating head,
   φ_u, z_i of the preference head, biases included) × 4 B + the rating's packed triple (user, item,
   value: 3 × 4 B, `cfrec.train.batches.IndexLayout`); bandwidth = bytes read + written per second by ``dst.copy_(src)`` on 256 MiB.

    python scripts/bench_epoch.py --out docs/benchmark --ml1m ../shared/data/ml-1m --threads 2
    python scripts/bench_epoch.py --sizes 100000 --optimizers sparse_adam --out /tmp/e   # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

SIZES = (1_000_000, 3_162_278, 10_000_000, 25_000_000)

CHILD = r"""
import json, os, pickle, sys, time, torch
sys.path.insert(0, sys.argv[1])
from benchmark.data import new_model
from cfrec.threads import apply_threads
apply_threads(int(sys.argv[4]))
with open(sys.argv[2], "rb") as handle:
    train = pickle.load(handle)
model, options = new_model({"model": "cf"}, "cpu")
options.update(json.loads(sys.argv[3]))
load = os.getloadavg()[0]
start = time.perf_counter()
model.fit(train, {**options, "device": "cpu"})
wall = time.perf_counter() - start
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024
print(json.dumps({"epoch_seconds": [h["seconds"] for h in model.history], "val_rmse": [h.get("val_rmse") for h in model.history],
                  "fit_seconds": wall, "peak_rss_mb": peak, "load_average": [load, os.getloadavg()[0]],
                  "torch_threads": torch.get_num_threads()}))
"""


def bandwidth(threads: int, mib: int = 256, repeats: int = 10) -> float:
    """Bytes read + written per second by ``dst.copy_(src)`` on ``mib`` MiB (the median of ``repeats``)."""
    import torch

    torch.set_num_threads(threads)
    src = torch.ones(mib * 2**20 // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        seconds.append(time.perf_counter() - start)
    return 2 * src.numel() * 4 / sorted(seconds)[len(seconds) // 2]


def factor_bytes_per_rating() -> dict[str, int]:
    """Bytes one rating reads in one pass: its four factor rows (with biases) and its triple."""
    from benchmark.data import model_preset

    preset, _ = model_preset("cf", "model")  # (the model options, its train preset)
    k, k_pref = int(preset["rank"]), int(preset["objective"]["rank"])
    rows = 2 * (k + 1) + 2 * (k_pref + 1)  # θ_u, x_i with b_u, b_i; φ_u, z_i with c_u, d_i
    return {"factor_floats": rows, "factor_bytes": 4 * rows, "triple_bytes": 4 + 4 + 4}


def child_fit(train_file: Path, options: dict[str, Any], threads: int) -> dict[str, Any]:
    env = {**os.environ, **{v: str(threads) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}}
    done = subprocess.run([sys.executable, "-c", CHILD, str(REPO / "scripts"), str(train_file), json.dumps(options),
                           str(threads)], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        return {"error": done.stderr[-2000:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def synthetic_train(n_ratings: int, work: Path) -> tuple[Path, dict[str, Any]]:
    """The train part of the ``ml25m``-shaped synthetic split of ``n_ratings``, pickled under ``work`` (cached)."""
    from benchmark.data import synthetic_split

    path = work / f"ml25m-{n_ratings}.pkl"
    info_path = path.with_suffix(".json")
    if not path.exists():
        start = time.perf_counter()
        train, _ = synthetic_split(n_ratings, seed=0, shape="ml25m")
        with open(path, "wb") as handle:
            pickle.dump(train, handle, protocol=pickle.HIGHEST_PROTOCOL)
        info_path.write_text(json.dumps({"n_train": len(train), "n_users": train.n_users, "n_items": train.n_items,
                                         "generate_seconds": time.perf_counter() - start}))
    return path, json.loads(info_path.read_text())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    parser.add_argument("--optimizers", nargs="+", default=["adam", "sparse_adam"])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=None, help="train.batch_size (default: the training default)")
    parser.add_argument("--dense-max", type=int, default=10_000_000, help="largest size fitted with a dense optimizer")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("CFREC_THREADS", "1")))
    parser.add_argument("--ml1m", type=Path, help="MovieLens 1M folder: the memory-floor measurement")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench_epoch")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench_epoch")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    overrides: dict[str, Any] = {"epochs": args.epochs, "progress": False}
    if args.batch_size:
        overrides["batch_size"] = args.batch_size
    result: dict[str, Any] = {"command": "python scripts/bench_epoch.py " + " ".join(sys.argv[1:] if argv is None else argv),
                              "threads": args.threads, "cpu_count": os.cpu_count(), "scaling": [], "floor": None}
    for n in args.sizes:
        train_file, info = synthetic_train(n, args.work)
        for optimizer in args.optimizers:
            if optimizer != "sparse_adam" and n > args.dense_max:
                continue
            print(f"{n:,} ratings, {optimizer} ...", flush=True)
            row = {"ratings": n, **info, "optimizer": optimizer,
                   **child_fit(train_file, {**overrides, "optimizer": optimizer}, args.threads)}
            print(json.dumps(row), flush=True)
            result["scaling"].append(row)
            (args.out / "epoch.json").write_text(json.dumps(result, indent=2) + "\n")
    if args.ml1m:
        result["floor"] = measure_floor(args, overrides)
    (args.out / "epoch.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "epoch.md").write_text(render(result))
    print(render(result))
    return result


def measure_floor(args: argparse.Namespace, overrides: dict[str, Any]) -> dict[str, Any]:
    import cfrec.data
    from cfrec.data import per_user_split

    train = per_user_split(cfrec.data.load(args.ml1m), method="vectorized").train
    path = args.work / "ml1m-train.pkl"
    with open(path, "wb") as handle:
        pickle.dump(train, handle, protocol=pickle.HIGHEST_PROTOCOL)
    sizes = factor_bytes_per_rating()
    fits = {opt: child_fit(path, {**overrides, "epochs": 8, "optimizer": opt}, args.threads) for opt in args.optimizers}
    n_fit = round(len(train) * 0.98)  # the trainer holds out val_fraction = 2 % of each user's ratings
    moved = n_fit * (sizes["factor_bytes"] + sizes["triple_bytes"])
    speed = bandwidth(args.threads)
    return {"ratings": n_fit, **sizes, "bytes_per_epoch": moved, "bandwidth_bytes_per_second": speed,
            "floor_seconds": moved / speed, "fits": fits, "load_average": list(os.getloadavg())}


def render(result: dict[str, Any]) -> str:
    lines = ["# Epoch cost of the default model", "", f"Generated by `{result['command']}` "
             f"({result['threads']} torch thread(s), {result['cpu_count']} CPUs). Seconds per epoch are the trainer's "
             "(the batch loop; per-epoch validation excluded), the median of the fit's epochs; peak memory is the fit "
             "process's high-water mark (data, model, optimizer state).", ""]
    if result["scaling"]:
        lines += ["## As ML-25M grows (synthetic, `ml25m` shape)", "",
                  "| ratings (train) | users | movies | optimizer | s / epoch | µs / rating | val RMSE | peak MB | load |",
                  "| ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- |"]
        for row in result["scaling"]:
            if "error" in row:
                lines.append(f"| {row['n_train']:,} | {row['n_users']:,} | {row['n_items']:,} | {row['optimizer']} | "
                             f"error | | | | |")
                continue
            epochs = sorted(row["epoch_seconds"])
            median = epochs[len(epochs) // 2]
            rmse = row["val_rmse"][-1]
            lines.append(f"| {row['n_train']:,} | {row['n_users']:,} | {row['n_items']:,} | {row['optimizer']} | "
                         f"{median:.2f} | {median / row['n_train'] * 1e6:.2f} | "
                         f"{'—' if rmse is None else f'{rmse:.4f}'} | {row['peak_rss_mb']:.0f} | "
                         f"{row['load_average'][0]:.1f}–{row['load_average'][1]:.1f} |")
        lines.append("")
    floor = result.get("floor")
    if floor:
        lines += ["## ML-1M against the memory-traffic floor", "",
                  f"One pass over the ratings' factors: {floor['ratings']:,} ratings × ({floor['factor_floats']} factor "
                  f"floats = {floor['factor_bytes']} B + a {floor['triple_bytes']} B triple) = "
                  f"{floor['bytes_per_epoch'] / 1e9:.2f} GB per epoch; a torch copy moves "
                  f"{floor['bandwidth_bytes_per_second'] / 1e9:.1f} GB/s here (read + write), so the floor is "
                  f"{floor['floor_seconds']:.3f} s per epoch.", "",
                  "| optimizer | s / epoch (median) | × the floor | val RMSE | fit s | load |", "| --- | ---: | ---: | ---: | ---: | --- |"]
        for optimizer, fit in floor["fits"].items():
            if "error" in fit:
                lines.append(f"| {optimizer} | error | | | | |")
                continue
            epochs = sorted(fit["epoch_seconds"])
            median = epochs[len(epochs) // 2]
            lines.append(f"| {optimizer} | {median:.3f} | {median / floor['floor_seconds']:.1f} | {fit['val_rmse'][-1]:.4f} | "
                         f"{fit['fit_seconds']:.1f} | {fit['load_average'][0]:.1f}–{fit['load_average'][1]:.1f} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
