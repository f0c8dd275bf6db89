"""One rank of the data-parallel test job: ``torchrun ... tests/distributed_worker.py OUT``.

Trains every case of `CASES` with ``distributed=True``; rank 0 saves each model's parameters
and history to OUT (``torch.save``), plus how many epochs ran when only rank 1's callback asked
to stop, and the error of a diverging run. `tests/test_distributed.py` trains the same in one
process and compares. Also importable: the test takes `CASES`, `DIVERGES` and `fit` from here.
"""

from __future__ import annotations

import sys
from typing import Any

import torch

from cfrec.data import Ratings, per_user_split, synthetic
from cfrec.errors import TrainingDiverged
from cfrec.models import CollaborativeFiltering, ContentBased
from cfrec.models.factor import FactorModel
from cfrec.train.distributed import join, launched_rank

SENT = {"third": 1 / 3, "tiny": 5e-324, "nan": float("nan"), "inf": float("-inf"), "count": 7}
"""What rank 0 broadcasts with `DataParallel.from_main`: every rank must receive it exactly."""

FULL = {"batch_size": None, "epochs": 10, "lr": 0.02, "seed": 1}
MINI = {"batch_size": 1000, "epochs": 3, "lr": 0.02, "seed": 2}

CASES: dict[str, tuple[type[FactorModel], dict[str, Any], dict[str, Any]]] = {
    # name: (model class, constructor options, training options)
    "cf_full_dense": (CollaborativeFiltering, {"rank": 5, "objective": "squared"}, {**FULL, "layout": "dense"}),
    "cf_full_index": (CollaborativeFiltering, {"rank": 5, "objective": "squared"}, {**FULL, "layout": "index"}),
    "cf_mini_index": (CollaborativeFiltering, {"rank": 6, "objective": "squared"}, {**MINI, "layout": "index"}),
    "cf_mini_dense": (CollaborativeFiltering, {"rank": 6, "objective": "squared"}, {**MINI, "layout": "dense"}),
    "joint_mini_index": (CollaborativeFiltering, {"rank": 6, "objective": {"name": "joint", "rank": 4}},
                         {**MINI, "layout": "index"}),
    "joint_mini_dense": (CollaborativeFiltering, {"rank": 6, "objective": {"name": "joint", "rank": 4}},
                         {**MINI, "layout": "dense"}),
    "cf_weighted_mini_index": (CollaborativeFiltering, {"rank": 4, "objective": {"name": "weighted", "w0": 0.1}},
                               {**MINI, "layout": "index"}),
    # negatives drawn from the trainer's generator for the global batch order: 2 ranks = 1 process
    "bpr_mini_index": (CollaborativeFiltering, {"rank": 4, "objective": {"name": "bpr", "negatives": 2, "candidates": 3}},
                       {**MINI, "layout": "index"}),
    "content_mini_index": (ContentBased, {}, {**MINI, "layout": "index", "val_fraction": 0.1}),
    # the validation slice folded back in after the last epoch: every rank takes the same extra steps
    "joint_mini_index_fold_back": (CollaborativeFiltering, {"rank": 6, "objective": {"name": "joint", "rank": 4}},
                                   {**MINI, "layout": "index", "val_fraction": 0.1, "fold_back": 1}),
    "cf_sgd_full_dense": (CollaborativeFiltering, {"rank": 4, "bias": False, "objective": "squared"},
                          {**FULL, "optimizer": "sgd", "momentum": 0.5, "lr": 0.05, "layout": "dense"}),
    # over-fits: validation RMSE turns up and patience stops training early, on rank 0's word
    "cf_early_stop": (CollaborativeFiltering, {"rank": 16, "l2": 0.0, "init_scale": 0.3, "objective": "squared"},
                      {"batch_size": None, "epochs": 60, "lr": 0.05, "val_fraction": 0.2, "patience": 3}),
}


DIVERGES = (CollaborativeFiltering, {"rank": 4, "bias": False, "init_scale": 1.0, "objective": "squared"},
            {"optimizer": "sgd", "lr": 1e4, "batch_size": None, "epochs": 50})


def data() -> Ratings:
    """The training ratings of every case: 300 users × 200 items, about 9,600 ratings."""
    return per_user_split(synthetic(n_users=300, n_items=200, n_ratings=12_000, rank=4, seed=7).ratings,
                          test_ratio=0.2, seed=1).train


def fit(name: str, distributed: bool, callbacks=()) -> FactorModel:
    """Case ``name`` (or ``"diverges"``) trained on `data`, data-parallel or in this process alone."""
    model_class, model_options, train_options = DIVERGES if name == "diverges" else CASES[name]
    model = model_class(**model_options)
    return model.fit(data(), {**train_options, "progress": False, "distributed": distributed}, callbacks=callbacks)


def main(out: str) -> None:
    results: dict[str, Any] = {}
    for name in CASES:
        model = fit(name, distributed=True)
        results[name] = {"state": model.state(), "history": model.history}
    # a callback only rank 1 has asks to stop after epoch 2 (of 3): every rank must stop there
    model = fit("cf_mini_index", distributed=True, callbacks=[lambda epoch, *_: launched_rank() == 1 and epoch == 2])
    results["stopped_by_rank_1"] = len(model.history)
    try:  # every rank must raise at the same step, none left waiting
        fit("diverges", distributed=True)
    except TrainingDiverged as error:
        results["diverges"] = str(error)
    group = join(torch.device("cpu"))
    received = group.from_main(lambda: SENT)
    results["from_main_exact"] = not group.any(repr(received) != repr(SENT))
    if launched_rank() == 0:
        torch.save(results, out)


if __name__ == "__main__":
    main(sys.argv[1])
