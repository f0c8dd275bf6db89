"""Metric functions against hand-computed values, and the evaluator against brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cfrec import metrics
from cfrec.data import Ratings
from cfrec.evaluate import evaluate
from cfrec.models.base import Recommender


def test_rating_metrics_by_hand():
    pred, true = torch.tensor([3.0, 4.6, 1.0, 5.0]), torch.tensor([3.4, 4.0, 2.0, 5.0])
    # errors -0.4, 0.6, -1, 0: squares .16 .36 1 0 → mean .38
    assert metrics.rmse(pred, true) == pytest.approx(math.sqrt(0.38))
    assert metrics.mae(pred, true) == pytest.approx(0.5)
    assert metrics.accuracy(pred, true) == pytest.approx(0.5)  # |e| < 0.5: -0.4 and 0
    assert metrics.accuracy(pred, true, tolerance=1.01) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="tolerance"):
        metrics.accuracy(pred, true, tolerance=0)


def test_ranking_metrics_by_hand():
    hits = torch.tensor([[True, False, True], [False, False, False]])
    n_relevant = torch.tensor([4, 1])
    assert metrics.recall_at_k(hits, n_relevant, 3).tolist() == [0.5, 0.0]
    assert metrics.recall_at_k(hits, n_relevant, 1).tolist() == [0.25, 0.0]
    assert metrics.precision_at_k(hits, 3).tolist() == pytest.approx([2 / 3, 0.0])
    assert metrics.hit_rate_at_k(hits, 2).tolist() == [1.0, 0.0]
    dcg = 1 + 1 / math.log2(4)
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)  # 4 relevant, 3 slots
    assert metrics.ndcg_at_k(hits, n_relevant, 3).tolist() == pytest.approx([dcg / ideal, 0.0])
    assert metrics.coverage(torch.tensor([[1, 2], [2, 5]]), 10) == pytest.approx(0.3)


class FixedScores(Recommender):
    """A model whose scores and predictions are a given matrix."""

    def __init__(self, table: np.ndarray):
        self.table = torch.as_tensor(table, dtype=torch.float32)
        self.n_users, self.n_items = self.table.shape

    def predict(self, users, items):
        return self.table[users, items]


def brute_force_recall(table, train, test, k, like=4.0):
    """The reference notebook's recall loop, on codes."""
    seen = {}
    for u, i in zip(train.users, train.items):
        seen.setdefault(int(u), set()).add(int(i))
    by_user = {}
    for u, i, r in zip(test.users, test.items, test.values):
        by_user.setdefault(int(u), []).append((int(i), float(r)))
    recalls = []
    for u, pairs in by_user.items():
        liked = [i for i, r in pairs if r >= like]
        if not liked:
            continue
        ranked = [i for i in np.argsort(-table[u], kind="stable") if i not in seen.get(u, set())][:k]
        recalls.append(sum(i in ranked for i in liked) / len(liked))
    return float(np.mean(recalls)), len(recalls)


@pytest.mark.parametrize("budget_mb", [1e-4, 64.0])  # one user per batch, and all at once
def test_evaluator_matches_brute_force(budget_mb):
    rng = np.random.default_rng(0)
    n_users, n_items = 30, 25
    cells = rng.permutation(n_users * n_items)[:400]
    users, items = cells // n_items, cells % n_items
    values = rng.integers(1, 6, len(cells)).astype(float)
    ratings = Ratings.from_arrays(users, items, values)
    train, test = ratings.subset(np.arange(300)), ratings.subset(np.arange(300, 400))
    table = rng.random((ratings.n_users, ratings.n_items)) * 4 + 1  # distinct scores: no ties
    model = FixedScores(table)
    result = evaluate(model, train, test, ks=(3, 10), memory_budget_mb=budget_mb)
    for k in (3, 10):
        recall, n = brute_force_recall(table, train, test, k)
        assert result[f"recall@{k}"] == pytest.approx(recall)
        assert result["n_ranking_users"] == n
    pred = table[test.users, test.items]
    assert result["rmse"] == pytest.approx(np.sqrt(np.mean((pred - test.values) ** 2)), rel=1e-6)
    limited = evaluate(model, train, test, ks=(3,), limit=10, ranking=False)
    assert limited["n_test"] == 10
    assert limited["mae"] == pytest.approx(np.mean(np.abs(pred[:10] - test.values[:10])), rel=1e-6)
