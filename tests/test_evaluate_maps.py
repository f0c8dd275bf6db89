"""`evaluate` and `ranking_metrics` refuse a test set whose codes mean other users or movies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cfrec.data import Ratings, per_user_split, synthetic
from cfrec.data.idmap import IdMap
from cfrec.errors import ConfigError
from cfrec.evaluate import evaluate, ranking_metrics
from cfrec.models.base import Recommender


class FixedScores(Recommender):
    """A model whose scores and predictions are a given matrix."""

    def __init__(self, table: np.ndarray):
        self.table = torch.as_tensor(table, dtype=torch.float32)
        self.n_users, self.n_items = self.table.shape

    def predict(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.table[users, items]


@pytest.fixture(scope="module")
def data() -> tuple[Ratings, Ratings, FixedScores]:
    ratings = synthetic(n_users=60, n_items=40, n_ratings=1500, seed=0).ratings
    train, test = per_user_split(ratings, test_ratio=0.2, seed=1)
    table = np.random.default_rng(0).random((ratings.n_users, ratings.n_items)) * 4 + 1
    return train, test, FixedScores(table)


def test_split_of_the_same_data_evaluates(data, monkeypatch) -> None:
    train, test, model = data
    assert test.user_map is train.user_map and test.item_map is train.item_map
    monkeypatch.setattr(IdMap, "__eq__", lambda self, other: pytest.fail("shared maps compared by content"))
    result = evaluate(model, train, test, ks=(5,))
    assert result["n_test"] == len(test) and result["n_ranking_users"] > 0
    assert np.isfinite(result["rmse"]) and np.isfinite(result["recall@5"])


def test_equal_maps_that_are_other_objects_evaluate(data) -> None:
    train, test, model = data
    copy = Ratings(test.users, test.items, test.values, IdMap(test.user_map.ids.copy(), "user"),
                   IdMap(test.item_map.ids.copy(), "item"))
    got, expected = evaluate(model, train, copy, ks=(5,)), evaluate(model, train, test, ks=(5,))
    assert {key: value for key, value in got.items() if not key.endswith("_seconds")} == pytest.approx(
        {key: value for key, value in expected.items() if not key.endswith("_seconds")})


def test_smaller_other_data_set(data) -> None:
    train, _, model = data
    other = synthetic(n_users=30, n_items=20, n_ratings=300, seed=3).ratings
    with pytest.raises(ConfigError, match=r"^test: the test ratings' user ids are coded differently from the "
                                          rf"training ratings' \({other.n_users} vs {train.n_users} user ids\)"):
        evaluate(model, train, other)


def test_larger_other_data_set_in_ranking_metrics(data) -> None:
    train, _, model = data
    other = synthetic(n_users=100, n_items=70, n_ratings=2000, seed=3).ratings
    with pytest.raises(ConfigError, match=r"^test: the test ratings' user ids are coded differently"):
        ranking_metrics(model, train, other)


def test_same_users_other_movies(data) -> None:
    train, test, model = data
    other_items = IdMap(train.item_map.ids + 1000, "item")  # as many movies, other ids
    other = Ratings(test.users, test.items, test.values, IdMap(train.user_map.ids.copy(), "user"), other_items)
    message = rf"^test: the test ratings' movie ids are coded differently .*\(both {train.n_items}, not the same movie ids\)"
    with pytest.raises(ConfigError, match=message):
        evaluate(model, train, other, ranking=False)
    with pytest.raises(ConfigError, match=message):
        ranking_metrics(model, train, other)
