"""The neighbourhood blend (`cfrec.models.blend`, ``model.knn_blend``): β in closed form on the
validation slice, predictions that are exactly the blend, checkpoints that round-trip and refuse tampering."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from cfrec.apps.pipeline import validation_summary
from cfrec.checkpoint import load_model, save_model
from cfrec.data import Split
from cfrec.errors import CheckpointError
from cfrec.io import save_tensors, sha256, write_json
from cfrec.models import CollaborativeFiltering
from cfrec.models.blend import blend_weight
from cfrec.models.factor import FactorModel
from cfrec.train import TrainConfig, Trainer


def load_tensors(path):
    return torch.load(path, weights_only=True)


FIT = {"epochs": 3, "progress": False, "val_fraction": 0.1}


@pytest.fixture(scope="module")
def blended(small_split: Split) -> CollaborativeFiltering:
    return CollaborativeFiltering(rank=6, objective="squared", knn_blend=10).fit(small_split.train, FIT)


def pairs(split: Split) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.as_tensor(split.test.users), torch.as_tensor(split.test.items)


@pytest.mark.parametrize("seed", range(5))
def test_blend_weight_is_the_least_squares_weight(seed: int) -> None:
    rng = np.random.default_rng(seed)
    target = rng.normal(3.5, 1.0, 500)
    factor = target + rng.normal(0, 0.8, 500)
    knn = target + rng.normal(0, 0.4 + seed * 0.3, 500)  # from better to worse than the factors
    grid = np.linspace(0, 1, 10_001)
    sse = [np.sum((target - ((1 - b) * factor + b * knn)) ** 2) for b in grid]
    assert blend_weight(factor, knn, target) == pytest.approx(grid[int(np.argmin(sse))], abs=1e-4)


def test_blend_weight_stays_in_the_unit_interval() -> None:
    target = np.array([1.0, 2.0, 3.0])
    assert blend_weight(target, target + 1.0, target) == 0.0  # the KNN only hurts: not below 0
    assert blend_weight(target + 1.0, target, target) == 1.0  # the KNN is exact
    assert blend_weight(target + 1.0, target + 3.0, target) == 0.0  # the least-squares β is negative
    assert blend_weight(target, target, target) == 0.0  # identical predictions: nothing to weigh


def test_predictions_are_the_blend_with_beta_chosen_on_the_validation_slice(blended, small_split) -> None:
    users, items = pairs(small_split)
    beta = blended.blend.weight
    assert 0.0 < beta < 1.0
    factor = FactorModel.predict(blended, users, items)
    knn = blended.blend.knn.predict(users, items)
    torch.testing.assert_close(blended.predict(users, items), (1 - beta) * factor + beta * knn)
    # β is the closed form on the slice the trainer held out, which the KNN never saw
    fit_part, val = Trainer(TrainConfig.from_dict(FIT))._carve_validation(small_split.train)
    assert blended.blend.knn.n_items == fit_part.n_items and len(fit_part) + len(val) == len(small_split.train)
    vu, vi = torch.as_tensor(val.users), torch.as_tensor(val.items)
    expected = blend_weight(FactorModel.predict(blended, vu, vi).double().numpy(),
                            blended.blend.knn.predict(vu, vi).double().numpy(), val.values)
    assert beta == pytest.approx(expected, rel=1e-6)
    rmse = float(torch.sqrt(torch.mean((blended.predict(vu, vi).double() - torch.as_tensor(val.values)) ** 2)))
    assert blended.final_validation["val_rmse"] == pytest.approx(rmse, rel=1e-5)
    summary = validation_summary(blended)  # what metrics.json reports: the returned (blended) model
    assert summary["valid_rmse"] == blended.final_validation["val_rmse"] and summary["knn_blend_weight"] == beta
    assert blended.final_validation["val_rmse"] < min(h["val_rmse"] for h in blended.history)  # it helped here


def test_ranking_stays_with_the_factors(blended, small_split) -> None:
    assert blended.ranks_by == "factor_rating"
    users = torch.arange(4)
    items = torch.arange(blended.n_items)
    for row, user in enumerate(users):
        factor = FactorModel.predict(blended, user.repeat(blended.n_items), items)
        torch.testing.assert_close(blended.clip(blended.score(users)[row]), factor)


def test_without_a_validation_slice_the_blend_is_off(small_split, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="cfrec.models.blend"):
        model = CollaborativeFiltering(rank=4, objective="squared", knn_blend=10).fit(
            small_split.train, {**FIT, "val_fraction": 0.0})
    assert "no validation slice" in caplog.text
    assert model.blend.knn is None and model.blend.weight == 0.0 and model.final_validation == {}
    users, items = pairs(small_split)
    torch.testing.assert_close(model.predict(users, items), FactorModel.predict(model, users, items))
    assert not any(k.startswith("knn.") for k in model.state()) and model.ranks_by == "rating"


@pytest.mark.parametrize("objective", ["weighted", "bpr"])
def test_ranking_objectives_have_no_blend(small_split, objective) -> None:
    model = CollaborativeFiltering(rank=4, objective=objective).fit(small_split.train, FIT)
    assert model.blend is None and not any(k.startswith("knn.") for k in model.state())


def test_checkpoint_round_trip_keeps_the_blend(blended, small_split, tmp_path) -> None:
    save_model(blended, small_split.train, tmp_path)
    loaded = load_model(tmp_path).model
    users, items = pairs(small_split)
    assert loaded.blend.weight == blended.blend.weight and loaded.ranks_by == "factor_rating"
    torch.testing.assert_close(loaded.predict(users, items), blended.predict(users, items))
    tensors = load_tensors(tmp_path / "model.pt")
    assert {"model.knn.weight", "model.knn.k", "model.knn.neighbors"} <= set(tensors)  # lists kept: no search on load


@pytest.mark.parametrize("tamper, message", [
    (lambda t, m: t.__setitem__("model.knn.weight", torch.tensor(1.5)), "knn.weight must lie in"),
    (lambda t, m: m["config"].__setitem__("knn_blend", None), "knn_blend is None"),
    (lambda t, m: t.pop("model.knn.rating_ptr"), "rating_ptr"),
])
def test_tampered_blend_is_a_checkpoint_error(blended, small_split, tmp_path, tamper, message) -> None:
    import json

    save_model(blended, small_split.train, tmp_path)
    tensors = load_tensors(tmp_path / "model.pt")
    meta = json.loads((tmp_path / "model.json").read_text())
    tamper(tensors, meta)
    save_tensors(tmp_path / "model.pt", tensors)
    meta["sha256"] = sha256(tmp_path / "model.pt")
    write_json(tmp_path / "model.json", meta)
    with pytest.raises(CheckpointError, match=message):
        load_model(tmp_path)
