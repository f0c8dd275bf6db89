"""Benchmark the learned models on MovieLens: seconds per epoch, time to a target RMSE, final metrics.

Each run trains one model on the per-user split (the reference split) and, after every
epoch, scores all test pairs to find when test RMSE first reaches ``--target`` (0.862, the
RMSE of Surprise's SVD on this split). The evaluation time is taken off the training clock;
"time to target" counts everything `fit` does up to that epoch (bias initialisation and data
layout included). Results go to ``OUT/bench_learned.json`` and ``OUT/bench_learned.md``. The
measurement is `benchtools.fit_trace`, shared with the full suite (``scripts/benchmark.py``,
whose Surprise section takes the target from Surprise's own run).

    python scripts/bench_learned.py --data ../shared/data/ml-1m --threads 1
    python scripts/bench_learned.py --runs cf-index cf-dense --repeats 3
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
from pathlib import Path
from typing import Any

import torch

import benchtools as bt
import cfrec.data
from cfrec.evaluate import evaluate
from cfrec.models import CollaborativeFiltering, ContentBased

# name: (model class, constructor arguments, training overrides on top of the model's defaults)
RUNS: dict[str, tuple[type, dict[str, Any], dict[str, Any]]] = {
    "cf-index": (CollaborativeFiltering, {}, {"layout": "index"}),
    "cf-dense": (CollaborativeFiltering, {}, {"layout": "dense"}),
    "cf-rank128-index": (CollaborativeFiltering, {"rank": 128}, {"layout": "index"}),
    "cf-fast-index": (CollaborativeFiltering, {}, {"layout": "index", "epochs": 4, "lr": 0.03}),
    "cf-fast-dense": (CollaborativeFiltering, {}, {"layout": "dense", "epochs": 8, "lr": 0.03}),
    "cf-fullbatch-dense": (CollaborativeFiltering, {}, {"layout": "dense", "batch_size": None, "epochs": 5}),
    "cf-fullbatch-index": (CollaborativeFiltering, {}, {"layout": "index", "batch_size": None, "epochs": 5}),
    "cf-weighted": (CollaborativeFiltering, {"rank": 128, "l2": 40.0, "l2_bias": 1.0, "l2_exponent": 0.0, "w0": 0.3}, {}),
    "content": (ContentBased, {}, {}),
    "content-pure": (ContentBased, {"bias": False, "l2": 1.0}, {"epochs": 30, "lr": 0.1}),
}
DEFAULT_RUNS = ["cf-index", "cf-dense", "cf-rank128-index", "cf-fast-index", "cf-weighted", "content", "content-pure"]


def run_one(name: str, train, test, target: float, device: str, seed: int) -> dict[str, Any]:
    """Train one configuration with per-epoch test RMSE; return timings and final metrics."""
    cls, model_args, train_args = RUNS[name]
    model = cls(**model_args)
    trace = bt.fit_trace(model, train, test, {**train_args, "seed": seed}, device)
    epochs = trace["epochs"]
    reached = bt.seconds_to_rmse(epochs, target)
    final = evaluate(model, train, test, ks=(10, 20, 50), device=device)
    per_epoch = sorted(e["seconds"] for e in epochs)
    return {
        "run": name, "model": cls.__name__, "model_config": model.config(), "train_overrides": train_args,
        "fit_seconds": trace["fit_seconds"], "setup_seconds": epochs[0]["train_seconds"] - epochs[0]["seconds"],
        "median_epoch_seconds": per_epoch[len(per_epoch) // 2], "epochs": epochs,
        "target": target, "epochs_to_target": None if reached is None else reached["epoch"],
        "seconds_to_target": None if reached is None else reached["seconds"],
        **{k: final[k] for k in ("rmse", "mae", "accuracy", "recall@10", "recall@20", "recall@50", "n_test")},
    }


def markdown(results: list[dict[str, Any]], header: dict[str, Any]) -> str:
    lines = [
        f"# Learned models on {header['data']}", "",
        f"torch {header['torch']}, {header['threads']} thread(s), device {header['device']}, "
        f"{header['n_train']:,} train / {header['n_test']:,} test ratings; target RMSE {header['target']}.", "",
        "| run | s/epoch (median) | epochs | fit s | s to target | RMSE | MAE | accuracy | Recall@50 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        to_target = "—" if r["seconds_to_target"] is None else f"{r['seconds_to_target']:.2f} (ep {r['epochs_to_target']})"
        lines.append(
            f"| {r['run']} | {r['median_epoch_seconds']:.3f} | {len(r['epochs'])} | {r['fit_seconds']:.2f} | {to_target} "
            f"| {r['rmse']:.4f} | {r['mae']:.4f} | {r['accuracy']:.4f} | {r['recall@50']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/ml-1m", help="MovieLens folder or release name")
    parser.add_argument("--runs", nargs="+", default=DEFAULT_RUNS, choices=sorted(RUNS))
    parser.add_argument("--target", type=float, default=0.862, help="test RMSE to time (Surprise SVD: 0.862)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--repeats", type=int, default=1, help="repeat each run; the fastest fit is kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench_learned", help="folder for the JSON and markdown results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    bt.prime_torch()

    ratings = cfrec.data.load(args.data)
    train, test = cfrec.data.per_user_split(ratings)
    header = {
        "data": ratings.name, "torch": torch.__version__, "threads": torch.get_num_threads(), "device": args.device,
        "cpu": platform.processor() or platform.machine(), "n_train": len(train), "n_test": len(test),
        "target": args.target, "repeats": args.repeats,
    }
    results = []
    for name in args.runs:
        attempts = [run_one(name, train, test, args.target, args.device, args.seed) for _ in range(args.repeats)]
        best = min(attempts, key=lambda r: r["fit_seconds"])
        best["fit_seconds_all"] = [round(r["fit_seconds"], 3) for r in attempts]
        results.append(best)
        print(
            f"{name}: {best['median_epoch_seconds']:.3f} s/epoch, fit {best['fit_seconds']:.2f} s, "
            f"to {args.target}: {best['seconds_to_target']}, RMSE {best['rmse']:.4f}, "
            f"accuracy {best['accuracy']:.4f}, Recall@50 {best['recall@50']:.4f}", flush=True,
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_learned.json").write_text(json.dumps({"header": header, "results": results}, indent=2))
    (out / "bench_learned.md").write_text(markdown(results, header))
    print(f"wrote {out / 'bench_learned.json'} and {out / 'bench_learned.md'}")


if __name__ == "__main__":
    main()
