"""Joint: one model, two heads, both questions — "what would they rate it" and "what should they watch".

The rating head (θ_u, x_i, μ, b_u, b_i: the model's own factors) is fitted on the rated cells as
in the squared objective; a preference head (φ_u, z_i, c_u, d_i, of its own rank) is fitted with
the weighted mask over every cell. Both are trained together, on the same batches and steps:

    J = J_squared(rating head) + β · J_weighted(preference head).

``predict`` answers with the rating head (ratings, clipped to the scale); ``recommend`` ranks by
the preference head; "similar movies" compares the preference head's movie vectors. Validation
reports both heads (RMSE, accuracy; Recall@K, NDCG@K); early stopping and ``restore_best`` follow
``train.monitor`` (here ``val_rmse`` unless set), and the two heads are restored together.

The heads share no parameters: on a validation slice of MovieLens 1M, sharing θ and x between
them (with per-head scalings of each dimension) cost 0.06 RMSE; see docs/learned_models.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from cfrec.data.ratings import Ratings
from cfrec.models.losses import LossTerms
from cfrec.objectives.base import (
    Objective, check_options, non_negative, positive_int, rating_validation, ranking_validation,
)
from cfrec.objectives.squared import head_loss
from cfrec.objectives.weighted import (
    als_targets, check_popularity_exponent, check_target, check_w0, fold_in_targets, rated_targets,
)
from cfrec.train import als
from cfrec.train.batches import Batch

if TYPE_CHECKING:
    from cfrec.models.factor import FactorModel
    from cfrec.train.als import AlsData
    from cfrec.models.foldin import FoldedUsers

DEFAULTS = {"rank": 128, "l2": 40.0, "l2_bias": 1.0, "l2_exponent": 0.0, "w0": 0.3, "target": "rating",
            "popularity_exponent": 0.0, "weight": 1.0}


class Joint(Objective):
    """Options of the preference head: ``rank``, ``l2``, ``l2_bias``, ``l2_exponent`` (its own
    penalty, as the model's keys are for the rating head), ``w0``, ``target``, ``popularity_exponent``
    (as in the weighted objective; here 0 unless set) and ``weight`` (β, its share of J)."""

    name = "joint"
    predicts_ratings = True
    ranks_by = "preference"
    monitor = "val_rmse"
    preference_head = True
    solves_exactly = True
    sparse_steps = True

    def __init__(self, **options: Any):
        options = check_options(self.name, options, DEFAULTS)
        self.rank = positive_int("rank", options["rank"])
        self.l2 = non_negative("l2", options["l2"])
        self.l2_bias = non_negative("l2_bias", options["l2_bias"])
        self.l2_exponent = non_negative("l2_exponent", options["l2_exponent"])
        self.w0, self.target = check_w0(options["w0"]), check_target(options["target"])
        self.popularity_exponent = check_popularity_exponent(options["popularity_exponent"])
        self.weight = non_negative("weight", options["weight"])

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "rank": self.rank, "l2": self.l2, "l2_bias": self.l2_bias,
                "l2_exponent": self.l2_exponent, "w0": self.w0, "target": self.target,
                "popularity_exponent": self.popularity_exponent, "weight": self.weight}

    def init_heads(self, model: "FactorModel", train: Ratings, generator: torch.Generator) -> None:
        model.init_biases_from_baseline(train)
        model.add_preference_head(train, self.rank, generator)

    def loss(self, model: "FactorModel", batch: Batch) -> LossTerms:
        rating = head_loss(model.factors(), model.penalty(), batch, **model.step_args(batch, "rating"))
        targets = rated_targets(batch, self.target, model.target_scale)
        preference = head_loss(model.preference_factors(), model.preference_penalty(), batch, targets=targets, w0=self.w0,
                               **model.step_args(batch, "preference"))
        return LossTerms(rating.data + self.weight * preference.data, rating.reg + self.weight * preference.reg)

    def als_sweep(self, model: "FactorModel", data: "AlsData", cg_steps: int = 0) -> LossTerms:
        """Both heads; β scales the preference head's whole J and so does not move its optimum."""
        rating = als.sweep(model.factors(), model.penalty(), data, cg_steps=cg_steps)
        targets = als_targets(data, self.target, model.target_scale)
        preference = als.sweep(model.preference_factors(), model.preference_penalty(), targets, self.w0, cg_steps)
        return LossTerms(rating.data + self.weight * preference.data, rating.reg + self.weight * preference.reg)

    def validate(self, model: "FactorModel", fit_part: Ratings, val: Ratings, device: torch.device) -> dict[str, float]:
        return {**rating_validation(model, val, device), **ranking_validation(model, fit_part, val, device)}

    def fold_in(self, model: "FactorModel", items: Tensor, values: Tensor, users: Tensor, n_users: int) -> "FoldedUsers":
        from cfrec.models.foldin import FoldedUsers, seen_matrix

        rating = model.fold_in_head(model.factors(), model.penalty(), model.l2_exponent, items, values, users, n_users)
        targets = fold_in_targets(items, values, self.target, model.target_scale)
        preference = model.fold_in_head(model.preference_factors(), model.preference_penalty(), self.l2_exponent,
                                        items, targets, users, n_users, w0=self.w0)
        return FoldedUsers(model, rating, preference, seen_matrix(users, items, n_users, model.n_items))
