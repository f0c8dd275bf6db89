"""Baselines: the shared contract, plus their closed forms."""

from __future__ import annotations

import numpy as np
import torch

from cfrec.data import Ratings
from cfrec.models import BiasBaseline, GlobalMean, Popularity
from cfrec.models.baseline import fit_biases
from contract import ModelContract


class TestGlobalMean(ModelContract):
    def make_model(self):
        return GlobalMean()


class TestBiasBaseline(ModelContract):
    def make_model(self):
        return BiasBaseline()


class TestPopularity(ModelContract):
    score_is_prediction = False

    def make_model(self):
        return Popularity()


def test_global_mean_is_the_mean(small_split):
    model = GlobalMean().fit(small_split.train)
    assert float(model.predict(torch.tensor([1]), torch.tensor([2]))) == np.float32(small_split.train.values.mean())


def test_bias_sweeps_converge_to_the_ridge_solution():
    """The alternating updates reach the exact minimiser of the regularized least squares."""
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 6, 40), rng.integers(0, 5, 40)
    keys = np.unique(users * 5 + items)
    users, items = keys // 5, keys % 5
    values = rng.integers(1, 6, len(keys)).astype(float)
    train = Ratings.from_arrays(users, items, values)
    mean, b_u, b_i = fit_biases(train, reg_user=2.0, reg_item=3.0, n_sweeps=500)
    # normal equations of min Σ(r − μ − b_u − b_i)² + 2Σb_u² + 3Σb_i², μ fixed at the mean
    n_u, n_i = train.n_users, train.n_items
    design = np.zeros((len(values), n_u + n_i))
    design[np.arange(len(values)), train.users] = 1
    design[np.arange(len(values)), n_u + train.items] = 1
    penalty = np.diag([2.0] * n_u + [3.0] * n_i)
    exact = np.linalg.solve(design.T @ design + penalty, design.T @ (values - mean))
    np.testing.assert_allclose(np.r_[b_u, b_i], exact, atol=1e-8)


def test_popularity_ranks_by_count(small_split):
    model = Popularity().fit(small_split.train)
    scores = model.score(torch.tensor([0]))[0]
    counts = small_split.train.item_counts()
    assert int(torch.argmax(scores)) == int(np.argmax(counts))
