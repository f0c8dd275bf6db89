"""``model.<option>=auto``: the search, and the choice of a planted λ on data where it is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cfrec.apps.pipeline import fit_tuned, make_model
from cfrec.data import Ratings
from cfrec.errors import ConfigError
from cfrec.tune import auto_keys, search


def test_search_finds_the_minimum_of_a_log_parabola_in_five_fits() -> None:
    calls = []

    def fit(value: float):
        calls.append(value)
        return (math.log(value) - math.log(7.0)) ** 2, f"model@{value:.3g}"

    best, fitted, tried = search(fit, start=30.0)
    assert len(calls) == len(tried) <= 5
    assert best == pytest.approx(7.0, rel=1e-6) and fitted == f"model@{best:.3g}"


def test_search_stops_stepping_at_the_budget() -> None:
    best, _, tried = search(lambda v: (v, None), start=1.0, max_fits=4)  # always smaller is better
    assert len(tried) == 4 and best == min(v for v, _ in tried) == pytest.approx(1 / 9)


def test_only_tunable_options_may_be_auto() -> None:
    assert auto_keys({"name": "cf", "l2": "auto", "objective": {"name": "joint", "l2": "auto"}}) == ["l2", "objective.l2"]
    with pytest.raises(ConfigError, match="^model.rank: cannot be 'auto'"):
        auto_keys({"name": "cf", "rank": "auto"})


def planted_ridge(l2_true: float, seed: int = 0) -> tuple[Ratings, np.ndarray]:
    """y = θ_uᵀx_i + ε with θ_u ~ N(0, τ²), ε ~ N(0, σ²), fixed features x: the Bayes-optimal ridge
    penalty of each user's θ is λ = σ² / τ²."""
    rng = np.random.default_rng(seed)
    n_users, n_items, f, per_user, tau = 300, 40, 4, 30, 0.5
    sigma = tau * math.sqrt(l2_true)
    x = rng.normal(size=(n_items, f)).astype(np.float32)
    theta = rng.normal(scale=tau, size=(n_users, f))
    users = np.repeat(np.arange(n_users), per_user)
    items = np.concatenate([rng.choice(n_items, per_user, replace=False) for _ in range(n_users)])
    values = (theta[users] * x[items]).sum(1) + rng.normal(scale=sigma, size=len(users))
    return Ratings.from_arrays(users + 1, items + 1, values), x


def test_auto_l2_picks_the_planted_penalty() -> None:
    """The content model over the true features is exactly that ridge: validation must find λ = 10."""
    ratings, features = planted_ridge(l2_true=10.0)
    cfg = {
        "model": {"name": "content", "item_features": features.tolist(), "bias": False, "l2": "auto",
                  "l2_exponent": 0.0, "clip": False},
        "train": {"epochs": 150, "batch_size": None, "lr": 0.1, "val_fraction": 0.25, "progress": False},
    }
    device = torch.device("cpu")
    model, seconds, chosen = fit_tuned(cfg, make_model(cfg["model"], device), ratings, device, progress=False)
    value = chosen["l2"]["value"]
    assert 7.0 <= value <= 14.0, chosen
    assert model.l2 == value and len(chosen["l2"]["tried"]) <= 5 and seconds > 0
