"""The neighbourhood blend of a factor model's rating predictions (``model.knn_blend``).

A factor model sees the whole matrix through k numbers per user and movie; an item-based KNN sees
each rating through the few movies most like it that the user rated. Their errors differ, so their
average beats both (Koren 2008 combines the two in one model for the same reason)::

    ŷ(u, i) = (1 − β) · ŷ_factor(u, i) + β · ŷ_knn(u, i)

ŷ_knn is `ItemKNN`'s improved mode (k neighbours, fitted on the same training ratings as the factor
model). β is not a guess: after training, it is the least-squares weight on the trainer's
validation slice (ratings of train the model never fitted), in closed form::

    β = ⟨ŷ_knn − ŷ_factor, y − ŷ_factor⟩ / ‖ŷ_knn − ŷ_factor‖²,  clipped to [0, 1]

so each data set gets its own weight (0.42 on ML-1M, 0.45 on ML-100K), and data where the
neighbours add nothing keep the factor model alone. Without a validation slice there is nothing to choose β on: β = 0, with a
warning. Only known users are blended: a folded-in user's ratings are not in the neighbours'
table, so `fold_in` predicts with the factor model alone.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import Tensor

from cfrec import metrics
from cfrec.data.ratings import Ratings
from cfrec.models.base import Recommender
from cfrec.models.knn import ItemKNN

log = logging.getLogger(__name__)

STATE_PREFIX = "knn."  # the blend's keys in its model's state
# The KNN's amplification ρ (weights |s|^ρ): sharper than ItemKNN's own 1.5, which is best alone; in
# the blend ρ = 2.5 gave val RMSE 0.8283 against 0.8304 on ML-1M, 0.8928 against 0.8927 on ML-100K
# (the trainer's validation slices; docs/learned_models.md).
AMPLIFICATION = 2.5


def blend_weight(factor: np.ndarray, knn: np.ndarray, target: np.ndarray) -> float:
    """β ∈ [0, 1] minimising Σ (target − ((1 − β) factor + β knn))², in closed form."""
    diff = knn.astype(np.float64) - factor
    denom = float(diff @ diff)
    if denom == 0.0:
        return 0.0
    return float(np.clip(diff @ (target.astype(np.float64) - factor) / denom, 0.0, 1.0))


class NeighborhoodBlend:
    """An `ItemKNN` of ``k`` neighbours and the weight β its predictions get (module docstring)."""

    def __init__(self, k: int):
        self.k = k
        self.reset()

    def reset(self) -> None:
        """Off (β = 0) until `fit`: a model in training predicts with its factors alone."""
        self.knn: ItemKNN | None = None  # None unless fitted with β > 0
        self.weight = 0.0

    def fit(self, model: Recommender, fit_part: Ratings, val: Ratings | None, device: torch.device) -> dict[str, float]:
        """Fit the KNN on ``fit_part`` and β on ``val``, against ``model``'s predictions (its factors
        alone: the blend is off until this returns); returns the blended ``val_*`` metrics (none without ``val``)."""
        from cfrec.evaluate import predict_pairs  # the evaluator imports the models

        self.reset()
        if val is None or len(val) == 0:
            log.warning("knn_blend: no validation slice (train.val_fraction=0?) to choose the blend weight on: "
                        "the neighbourhood blend is off (β = 0)")
            return {}
        rated_items = int((fit_part.item_counts() > 0).sum())
        if rated_items < 2:
            log.warning("knn_blend: %d rated movie(s) leave no neighbours: the neighbourhood blend is off", rated_items)
            return {}
        log.info("knn_blend: the neighbours of %d movies from %d ratings", rated_items, len(fit_part))
        knn = blend_knn(min(self.k, rated_items - 1), device).fit(fit_part)
        factor = predict_pairs(model, val.users, val.items, device=device)
        neighbors = predict_pairs(knn, val.users, val.items, device=device)
        true = torch.as_tensor(val.values)
        weight = blend_weight(factor.double().numpy(), neighbors.double().numpy(), val.values)
        measured = metrics.rating_metrics((1 - weight) * factor + weight * neighbors, true)
        log.info("knn_blend: β = %.3f on %d validation ratings: val RMSE %.4f (factor model alone %.4f)",
                 weight, len(val), measured["rmse"], metrics.rmse(factor, true))
        if weight > 0:
            self.knn, self.weight = knn, weight
        return {**{f"val_{name}": value for name, value in measured.items()}, "knn_blend_weight": weight}

    def apply(self, users: Tensor, items: Tensor, factor: Tensor) -> Tensor:
        """Blend ``factor`` (predictions of the pairs ``users``, ``items``) with the KNN's."""
        if self.knn is None:
            return factor
        neighbors = self.knn.predict(users.to(self.knn.device), items.to(self.knn.device)).to(factor.device)
        return (1 - self.weight) * factor + self.weight * neighbors

    # -- plain-tensor state, under the owning model's ``knn.`` keys --------------------------
    def state(self) -> dict[str, Tensor]:
        if self.knn is None:
            return {}
        own = {"weight": torch.tensor(self.weight, dtype=torch.float64), "k": torch.tensor(self.knn.k)}  # k: capped on tiny data
        return {f"{STATE_PREFIX}{name}": t for name, t in {**own, **self.knn.state()}.items()}

    def load_state(self, state: dict[str, Tensor], device: torch.device | str,
                   rating_range: tuple[float, float] | None) -> None:
        """Restore ``state()``'s entries (`STATE_PREFIX`-ed, an empty dict when β = 0)."""
        if not state:
            self.reset()
            return
        inner = {name.removeprefix(STATE_PREFIX): t for name, t in state.items()}
        weight, k = float(inner.pop("weight")), int(inner.pop("k"))
        if not 0.0 < weight <= 1.0:
            raise ValueError(f"{STATE_PREFIX}weight must lie in (0, 1], got {weight}")
        knn = blend_knn(k, device).load_state(inner)
        knn.rating_range = rating_range
        self.knn, self.weight = knn, weight


def blend_knn(k: int, device: torch.device | str) -> ItemKNN:
    """The blend's KNN: predictions only (no ranking lists; dim 1, as its SVD vectors are never read)."""
    return ItemKNN(k=k, dim=1, amplification=AMPLIFICATION, ranking="prediction", device=str(device))

