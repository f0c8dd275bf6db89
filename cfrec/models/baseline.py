"""Reference models without gradients: global mean, user/item bias baseline, popularity."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from cfrec.data.ratings import Ratings
from cfrec.models.base import Recommender
from cfrec.validation import check_bool, check_int, check_number


class GlobalMean(Recommender):
    """Predicts the mean training rating for every pair."""

    name = "global_mean"

    def __init__(self) -> None:
        self.mean = torch.tensor(0.0)

    def fit(self, train: Ratings) -> GlobalMean:
        self._remember_shape(train)
        self.mean = torch.tensor(float(np.mean(train.values, dtype=np.float64)))
        return self

    def predict(self, users: Tensor, items: Tensor) -> Tensor:
        self.check_fitted()
        return self.mean.to(users.device).expand(len(users)).clone()

    def score(self, users: Tensor) -> Tensor:
        self.check_fitted()
        return self.mean.to(users.device).expand(len(users), self.n_items).clone()

    def config(self) -> dict[str, Any]:
        return {}

    def state(self) -> dict[str, Tensor]:
        return {"mean": self.mean}

    def load_state(self, state: dict[str, Tensor]) -> GlobalMean:
        self.mean = state["mean"]
        return self


class BiasBaseline(Recommender):
    """r̂(u, i) = μ + b_u + b_i, regularized, fitted by alternating closed-form updates.

    Each sweep sets b_i = Σ_u (r − μ − b_u) / (reg_item + n_i), then
    b_u = Σ_i (r − μ − b_i) / (reg_user + n_u): exact ridge coordinate descent on
    Σ (r − μ − b_u − b_i)² + reg_user Σ b_u² + reg_item Σ b_i². Users or items without
    training ratings get bias 0. Defaults follow Surprise's BaselineOnly (ALS).
    """

    name = "bias"

    def __init__(self, reg_user: float = 15.0, reg_item: float = 10.0, n_sweeps: int = 10, clip: bool = True):
        check_number("reg_user", reg_user, 0)
        check_number("reg_item", reg_item, 0)
        check_int("n_sweeps", n_sweeps, 1)
        check_bool("clip", clip)
        self.reg_user, self.reg_item, self.n_sweeps, self.clip_predictions = reg_user, reg_item, n_sweeps, clip
        self.mean = torch.tensor(0.0)
        self.user_bias = torch.zeros(0)
        self.item_bias = torch.zeros(0)

    def fit(self, train: Ratings) -> BiasBaseline:
        self._remember_shape(train)
        mean, user_bias, item_bias = fit_biases(train, self.reg_user, self.reg_item, self.n_sweeps)
        self.mean = torch.tensor(mean)
        self.user_bias = torch.as_tensor(user_bias, dtype=torch.float32)
        self.item_bias = torch.as_tensor(item_bias, dtype=torch.float32)
        return self

    def predict(self, users: Tensor, items: Tensor) -> Tensor:
        self.check_fitted()
        dev = users.device
        pred = self.mean.to(dev) + self.user_bias.to(dev)[users] + self.item_bias.to(dev)[items]
        return self.clip(pred) if self.clip_predictions else pred

    def score(self, users: Tensor) -> Tensor:
        self.check_fitted()
        dev = users.device
        return self.mean.to(dev) + self.user_bias.to(dev)[users, None] + self.item_bias.to(dev)[None, :]

    def fallback_predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """μ + b_u (known user) + b_i (known movie); codes −1 are unknown."""
        value = baseline_fallback(self.mean, self.user_bias, self.item_bias, users, items)
        return np.clip(value, *self.rating_range) if self.clip_predictions and self.rating_range else value

    def config(self) -> dict[str, Any]:
        return {"reg_user": self.reg_user, "reg_item": self.reg_item, "n_sweeps": self.n_sweeps, "clip": self.clip_predictions}

    def state(self) -> dict[str, Tensor]:
        return {"mean": self.mean, "user_bias": self.user_bias, "item_bias": self.item_bias}

    def load_state(self, state: dict[str, Tensor]) -> BiasBaseline:
        self.mean, self.user_bias, self.item_bias = state["mean"], state["user_bias"], state["item_bias"]
        return self


def fit_biases(train: Ratings, reg_user: float, reg_item: float, n_sweeps: int) -> tuple[float, np.ndarray, np.ndarray]:
    """(μ, b_u, b_i) of the regularized bias model by alternating exact ridge updates (float64)."""
    values = train.values.astype(np.float64)
    mean = float(values.mean())
    n_u = np.bincount(train.users, minlength=train.n_users)
    n_i = np.bincount(train.items, minlength=train.n_items)
    user_bias = np.zeros(train.n_users)
    item_bias = np.zeros(train.n_items)
    for _ in range(n_sweeps):
        residual = values - mean - user_bias[train.users]
        item_bias = np.bincount(train.items, residual, train.n_items) / (reg_item + n_i)
        residual = values - mean - item_bias[train.items]
        user_bias = np.bincount(train.users, residual, train.n_users) / (reg_user + n_u)
    # (reg + n) is 0 only for an unrated code with reg 0: 0/0 → NaN; such codes get bias 0
    return mean, np.nan_to_num(user_bias), np.nan_to_num(item_bias)


class Popularity(Recommender):
    """Ranks items by how many training ratings they have; predicts the item's mean rating."""

    name = "popularity"

    def __init__(self) -> None:
        self.counts = torch.zeros(0)
        self.item_mean = torch.zeros(0)

    def fit(self, train: Ratings) -> Popularity:
        self._remember_shape(train)
        counts = train.item_counts()
        sums = np.bincount(train.items, train.values.astype(np.float64), train.n_items)
        mean = float(train.values.mean())
        self.counts = torch.as_tensor(counts, dtype=torch.float32)
        self.item_mean = torch.as_tensor(np.where(counts > 0, sums / np.maximum(counts, 1), mean), dtype=torch.float32)
        return self

    def predict(self, users: Tensor, items: Tensor) -> Tensor:
        self.check_fitted()
        return self.item_mean.to(users.device)[items]

    def score(self, users: Tensor) -> Tensor:
        self.check_fitted()
        return self.counts.to(users.device).expand(len(users), self.n_items).clone()

    def config(self) -> dict[str, Any]:
        return {}

    def state(self) -> dict[str, Tensor]:
        return {"counts": self.counts, "item_mean": self.item_mean}

    def load_state(self, state: dict[str, Tensor]) -> Popularity:
        self.counts, self.item_mean = state["counts"], state["item_mean"]
        return self


def baseline_fallback(mean: Tensor | float, user_bias: Tensor, item_bias: Tensor, users: np.ndarray,
                      items: np.ndarray) -> np.ndarray:
    """μ + b_u (known user) + b_i (known movie) for pairs of codes, −1 standing for an unknown id:
    the answer of every model with a baseline for what it cannot score (unclipped)."""
    value = np.full(len(users), float(mean), dtype=np.float32)
    for codes, bias in ((users, user_bias), (items, item_bias)):
        known = codes >= 0
        value[known] += bias.detach().cpu().numpy()[codes[known]]
    return value
