"""The synthetic generator: shape, skew, determinism, and an honest noise floor."""

from __future__ import annotations

import numpy as np
import pytest

from cfrec.data import synthetic


def test_shape_and_determinism():
    a = synthetic(n_users=200, n_items=150, n_ratings=5000, seed=3)
    b = synthetic(n_users=200, n_items=150, n_ratings=5000, seed=3)
    r = a.ratings
    assert len(r) == 5000 and r.n_users == 200
    assert len(set(zip(r.users.tolist(), r.items.tolist()))) == 5000  # distinct pairs
    assert r.user_counts().min() >= 5
    assert set(np.unique(r.values)) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    np.testing.assert_array_equal(r.values, b.ratings.values)
    assert r.item_info.genres.sum(axis=1).min() >= 1 and len(r.item_info.genre_names) == 18


def test_popularity_and_activity_are_skewed():
    r = synthetic(n_users=500, n_items=400, n_ratings=20_000, seed=1).ratings
    items = np.sort(r.item_counts())[::-1]
    users = np.sort(r.user_counts())[::-1]
    assert items[: len(items) // 10].sum() > 0.3 * len(r)  # top 10% of items: > 30% of ratings
    assert users[0] > 5 * np.median(users)


@pytest.mark.parametrize("step", [1.0, 0.5, 0.0])
def test_noise_floor_is_the_error_of_the_optimal_predictor(step):
    data = synthetic(n_users=400, n_items=300, n_ratings=40_000, noise=0.6, step=step, seed=2)
    optimal = data.expected_rating(data.signal)
    empirical = np.sqrt(np.mean((optimal - data.ratings.values) ** 2))
    assert empirical == pytest.approx(data.noise_floor, rel=0.03)
    naive = np.sqrt(np.mean((data.signal - data.ratings.values) ** 2))
    assert data.noise_floor <= naive + 1e-9  # E[y|s] beats the raw signal when rounding/clipping


def test_truth_is_aligned_with_codes():
    data = synthetic(n_users=100, n_items=80, n_ratings=3000, rank=3, noise=0.0, step=0.0, seed=4)
    r = data.ratings
    share = r.item_info.genres / r.item_info.genres.sum(1, keepdims=True)
    rebuilt = (data.global_mean + data.user_bias[r.users] + data.item_bias[r.items]
               + np.sum(data.user_factors[r.users] * data.item_factors[r.items], 1)
               + np.sum(data.genre_affinity[r.users] * share[r.items], 1))
    np.testing.assert_allclose(rebuilt, r.values, rtol=1e-5, atol=1e-5)
