"""One rank of the data-parallel test job: ``torchrun ... tests/distributed_worker.py OUT``.

Trains every case of `CASES` with ``distributed=True``; rank 0 saves each model's parameters
and history to OUT (``torch.save``). `tests/test_distributed.py` trains the same cases in one
process and compares. Also importable: the test takes `CASES` and `data` from here.
"""

from __future__ import annotations

import sys
from typing import Any

import torch

from cfrec.data import Ratings, per_user_split, synthetic
from cfrec.models import CollaborativeFiltering, ContentBased
from cfrec.models.factor import FactorModel
from cfrec.train.distributed import launched_rank

FULL = {"batch_size": None, "epochs": 12, "lr": 0.02, "seed": 1}
MINI = {"batch_size": 700, "epochs": 3, "lr": 0.02, "seed": 2}

CASES: dict[str, tuple[type[FactorModel], dict[str, Any], dict[str, Any]]] = {
    # name: (model class, constructor options, training options)
    "cf_full_dense": (CollaborativeFiltering, {"rank": 5}, {**FULL, "layout": "dense"}),
    "cf_full_index": (CollaborativeFiltering, {"rank": 5}, {**FULL, "layout": "index"}),
    "cf_mini_index": (CollaborativeFiltering, {"rank": 6}, {**MINI, "layout": "index"}),
    "cf_mini_dense": (CollaborativeFiltering, {"rank": 6}, {**MINI, "layout": "dense"}),
    "cf_weighted_mini_index": (CollaborativeFiltering, {"rank": 4, "w0": 0.1}, {**MINI, "layout": "index"}),
    "content_mini_index": (ContentBased, {}, {**MINI, "layout": "index", "val_fraction": 0.1}),
    "cf_sgd_full_dense": (CollaborativeFiltering, {"rank": 4, "bias": False},
                          {**FULL, "optimizer": "sgd", "momentum": 0.5, "lr": 0.05, "layout": "dense"}),
    # over-fits: validation RMSE turns up and patience stops training early, on rank 0's word
    "cf_early_stop": (CollaborativeFiltering, {"rank": 16, "l2": 0.0, "init_scale": 0.3},
                      {"batch_size": None, "epochs": 60, "lr": 0.05, "val_fraction": 0.2, "patience": 3}),
}


def data() -> Ratings:
    """The training ratings of every case: 300 users × 200 items, about 9,600 ratings."""
    return per_user_split(synthetic(n_users=300, n_items=200, n_ratings=12_000, rank=4, seed=7).ratings,
                          test_ratio=0.2, seed=1).train


def fit(name: str, distributed: bool) -> FactorModel:
    """Case ``name`` trained on `data`, data-parallel or in this process alone."""
    model_class, model_options, train_options = CASES[name]
    model = model_class(**model_options)
    return model.fit(data(), {**train_options, "progress": False, "distributed": distributed})


def main(out: str) -> None:
    results = {}
    for name in CASES:
        model = fit(name, distributed=True)
        results[name] = {"state": model.state(), "history": model.history}
    if launched_rank() == 0:
        torch.save(results, out)


if __name__ == "__main__":
    main(sys.argv[1])
