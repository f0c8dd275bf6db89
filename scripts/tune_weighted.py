"""The validation grid behind `cf_weighted`'s preset: the weighted mask (ALS or Adam) against EASE.

    python scripts/tune_weighted.py ../shared/data/ml-1m '{"ease": [1000, 2000], "l2": [2.5], "rank": [64, 128]}'

Every model fits on 90 % of each user's *train* ratings (per-user split of train, seed 1, the slice the
benchmark's EASE λ is chosen on) and is scored on the other 10 %: the test split is never read.
Grid keys: ``ease`` (EASE λ values), and for the weighted mask ``rank``, ``l2``, ``l2_bias``, ``a``
(l2_exponent), ``w0``, ``target``, ``pop`` (popularity_exponent), ``opt`` (``als`` | ``adam``), ``epochs``, ``cg`` (als_cg_steps);
every combination of the given values is fitted. One line per model: Recall@50, NDCG@10, fit seconds.
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cfrec.data  # noqa: E402
from benchmark.peers import ease_model, seen_matrix  # noqa: E402
from cfrec.evaluate import ranking_metrics  # noqa: E402
from cfrec.models import CollaborativeFiltering  # noqa: E402


def main(data: str, grid: dict) -> None:
    torch.set_num_threads(1)
    train = cfrec.data.per_user_split(cfrec.data.load(data)).train
    fit, valid = cfrec.data.per_user_split(train, test_ratio=0.1, seed=1, method="vectorized")

    def report(tag: str, model, seconds: float) -> None:
        result = ranking_metrics(model, fit, valid, ks=(10, 50))
        print(f"{tag}  R@50 {result['recall@50']:.4f}  NDCG@10 {result['ndcg@10']:.4f}  {seconds:.1f}s", flush=True)

    if grid.get("ease"):
        x = seen_matrix(fit)
        gram = (x.T @ x).toarray().astype(np.float64)
        for lam in grid.pop("ease"):
            start = time.perf_counter()
            report(f"EASE λ={lam}", ease_model(fit, lam, gram), time.perf_counter() - start)
    for combo in itertools.product(*grid.values()):
        p = dict(zip(grid, combo))
        objective = {"name": "weighted", "w0": p.get("w0", 0.3), "target": p.get("target", "rating"),
                     "popularity_exponent": p.get("pop", 0.05)}
        model = CollaborativeFiltering(rank=p.get("rank", 128), l2=p.get("l2", 2.5), l2_bias=p.get("l2_bias", 1.0),
                                       l2_exponent=p.get("a", 0.5), objective=objective)
        start = time.perf_counter()
        model.fit(fit, {"optimizer": p.get("opt", "als"), "epochs": p.get("epochs", 8), "val_fraction": 0.0,
                        "progress": False, "als_cg_steps": p.get("cg", 0)})
        report(json.dumps(p), model, time.perf_counter() - start)


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]))
