"""Time to EASE's quality: the reference EASE against the weighted mask by ALS, alternated in one process.

    python scripts/bench_time_to_ease.py --data ../shared/data/ml-1m --rank 40 --sweeps 5

EASE's λ defaults to 2000, the value the benchmark's peers section chooses on ML-1M by NDCG@10 on a
validation slice of train. The cfrec model is ``model=cf_weighted model.rank=R train.epochs=S
train.val_fraction=0`` (alternating least squares on all of train). One untimed round, then the
median of the timed rounds (the order swapped every round); Recall@50 and NDCG@10 on the test split.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cfrec.data  # noqa: E402
from benchmark.peers import ease_model  # noqa: E402
from cfrec.evaluate import ranking_metrics  # noqa: E402
from cfrec.models import CollaborativeFiltering  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ml-1m"))
    parser.add_argument("--ease-lambda", type=float, default=2000.0)
    parser.add_argument("--rank", type=int, default=40)
    parser.add_argument("--sweeps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds after one untimed")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    split = cfrec.data.per_user_split(cfrec.data.load(args.data))

    def fit(name: str):
        if name == "EASE":
            return ease_model(split.train, args.ease_lambda)
        model = CollaborativeFiltering(rank=args.rank, l2=2.5, l2_bias=1.0, objective="weighted")
        return model.fit(split.train, {"optimizer": "als", "epochs": args.sweeps, "val_fraction": 0.0, "progress": False})

    names = ("EASE", f"cf_weighted rank {args.rank}, {args.sweeps} ALS sweeps")
    times: dict[str, list[float]] = {n: [] for n in names}
    quality = {}
    for rnd in range(args.rounds + 1):
        for name in names if rnd % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            model = fit(name)
            seconds = time.perf_counter() - start
            if rnd:
                times[name].append(seconds)
            result = ranking_metrics(model, split.train, split.test, ks=(10, 50))
            quality[name] = (result["recall@50"], result["ndcg@10"])
    print(f"threads {args.threads}; median (min–max) of {args.rounds} timed fits, alternated")
    print("| model | fit s | Recall@50 | NDCG@10 |\n| --- | --- | --- | --- |")
    for name in names:
        t = times[name]
        print(f"| {name} | {statistics.median(t):.2f} ({min(t):.2f}–{max(t):.2f}) | {quality[name][0]:.4f} | {quality[name][1]:.4f} |")


if __name__ == "__main__":
    main()
