"""The default model's KNN blend at scale: its item-KNN fitted on synthetic data of the ML-25M shape.

    python scripts/bench_blend_knn.py --ratings 25000000

Generates ``--ratings`` ratings as ML-25M grows (`benchmark.data.synthetic_split`, shape ``ml25m``;
the 10 % test split is dropped), fits the blend's `ItemKNN` (k 30, ρ 2.5, the `model.knn_blend`
default) on the training ratings with one torch thread, then predicts a random 2 % of them (the
size of the trainer's validation slice, on which β is fitted). Prints each step's seconds and
the process's peak resident memory; docs/learned_models.md has a run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchtools as bt
from benchmark.data import synthetic_split

from cfrec.evaluate import predict_pairs
from cfrec.models.blend import blend_knn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", type=int, default=25_000_000, help="synthetic ratings to generate")
    parser.add_argument("--k", type=int, default=30, help="neighbours (model.knn_blend)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    seconds, (train, _) = bt.timed(lambda: synthetic_split(args.ratings, seed=0, shape="ml25m"))
    print(f"generated {len(train):,} train ratings, {train.n_users:,} users × {train.n_items:,} movies "
          f"in {seconds:.1f} s", flush=True)

    seconds, knn = bt.timed(lambda: blend_knn(args.k, "cpu").fit(train))
    print(f"item-KNN fit (k {args.k}): {seconds:.1f} s", flush=True)

    pick = np.random.default_rng(0).choice(len(train), size=len(train) // 50, replace=False)
    seconds, _ = bt.timed(lambda: predict_pairs(knn, train.users[pick], train.items[pick]))
    print(f"predict {len(pick):,} pairs: {seconds:.1f} s ({seconds / len(pick) * 1e6:.1f} µs a pair); "
          f"peak resident memory {bt.peak_rss_mb() / 1024:.2f} GiB", flush=True)

if __name__ == "__main__":
    main()
