"""train.fold_back: after the validated epochs, more epochs over all of train, the slice included.

The validation record is the one of the model before (identical history); the returned model has
learnt the slice (its error there falls); penalty
row weights follow the counts of all of train; gradient optimizers step at the last epoch's rate
even when the schedule ran it down to 0."""

from __future__ import annotations

import pytest
import torch

from cfrec.data import Ratings, Split
from cfrec.errors import ConfigError
from cfrec.models import CollaborativeFiltering
from cfrec.models.factor import count_weights
from cfrec.train import TrainConfig, Trainer

CASES = {  # id: (training options, objective)
    "als-weighted": ({"optimizer": "als", "epochs": 4}, "weighted"),
    "als-squared": ({"optimizer": "als", "epochs": 4}, "squared"),
    "adam-joint-cosine": ({"epochs": 4, "batch_size": 2000, "schedule": "cosine"}, "joint"),
    "sparse_adam-joint": ({"optimizer": "sparse_adam", "epochs": 4, "batch_size": 2000}, "joint"),
}


def slice_of(train: Ratings, options: dict) -> tuple[Ratings, Ratings]:
    """The (fit part, validation slice) the trainer carves from ``train`` under ``options``."""
    fit_part, val = Trainer(TrainConfig.from_dict(options))._carve_validation(train)
    assert val is not None
    return fit_part, val


def squared_error_on(model: CollaborativeFiltering, ratings: Ratings) -> float:
    head = model.factors()  # the rating head (the weighted objective's only one: scores fitted to the ratings)
    users, items = torch.as_tensor(ratings.users), torch.as_tensor(ratings.items)
    pred = (head.theta[users] * head.x[items]).sum(1)
    if head.biased:
        pred = pred + head.mean + head.user_bias[users] + head.item_bias[items]
    return float(((pred - torch.as_tensor(ratings.values)) ** 2).mean())


@pytest.mark.parametrize("options, objective", list(CASES.values()), ids=list(CASES))
def test_fold_back_learns_the_slice_and_keeps_the_validation_record(small_split: Split, options: dict,
                                                                       objective: str) -> None:
    base = {"val_fraction": 0.2, "progress": False, **options}
    train = small_split.train
    _, val = slice_of(train, base)
    plain = CollaborativeFiltering(rank=4, l2=2.0, l2_exponent=0.5, objective=objective).fit(train, base)
    folded = CollaborativeFiltering(rank=4, l2=2.0, l2_exponent=0.5, objective=objective).fit(
        train, {**base, "fold_back": 1})
    untimed = [[{k: v for k, v in h.items() if k != "seconds"} for h in m.history] for m in (plain, folded)]
    assert untimed[0] == untimed[1]  # validation measured the same model, epoch by epoch
    assert squared_error_on(folded, val) < squared_error_on(plain, val)
    user_weight, item_weight = folded.penalty().user_weight, folded.penalty().item_weight
    assert torch.equal(user_weight, count_weights(train.user_counts(), 0.5, "cpu"))
    assert torch.equal(item_weight, count_weights(train.item_counts(), 0.5, "cpu"))


def test_without_a_slice_there_is_nothing_to_fold_back(small_split: Split) -> None:
    options = {"optimizer": "als", "epochs": 3, "val_fraction": 0.0, "progress": False}
    plain = CollaborativeFiltering(rank=4, objective="weighted").fit(small_split.train, options)
    folded = CollaborativeFiltering(rank=4, objective="weighted").fit(small_split.train, {**options, "fold_back": 2})
    for key, value in plain.state_dict().items():
        assert torch.equal(value, folded.state_dict()[key]), key


@pytest.mark.parametrize("value", [-1, 1.5, "1"])
def test_fold_back_must_be_a_non_negative_integer(value: object) -> None:
    with pytest.raises(ConfigError, match="fold_back"):
        TrainConfig.from_dict({"fold_back": value})
