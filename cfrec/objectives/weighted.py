"""The weighted mask (implicit-feedback least squares): every cell counts, rated or not.

    J = ½ Σ_all W_ui (θ̃_uᵀx̃_i − t_ui)² + penalties,   W = 1 on rated cells, w₀ elsewhere,

with t = the rating (``target: rating``) or 1 (``target: binary``) on rated cells, times the
movie's popularity scale (n_i / median n)^−γ (``popularity_exponent`` γ; n_i its training
ratings), and 0 on the others. The sum over all cells has the closed form Σ_all ŷ² = ⟨Θ̃ᵀΘ̃, X̃ᵀX̃⟩, so a batch of rated
triples carries its share of it and no unrated cell is ever materialised. Its scores rank
movies well, but they are not ratings: the model does not ``predict``.

γ > 0 lowers the targets of the most rated movies, the propensity scaling of Saito et al. (2020,
"Unbiased recommender learning from missing-not-at-random implicit feedback"): a movie many users
have rated is seen by most, so a rating of it says less about a user's taste. γ = 0.05 was chosen
on validation slices of ML-1M, ML-100K and synthetic data (docs/objectives.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from cfrec.data.ratings import Ratings
from cfrec.models.losses import LossTerms
from cfrec.objectives.base import Objective, check_options, ranking_validation
from cfrec.objectives.squared import binary_targets, head_loss
from cfrec.train import als
from cfrec.train.batches import Batch, DenseBatch
from cfrec.validation import check_choice, check_number

if TYPE_CHECKING:
    from cfrec.models.factor import FactorModel
    from cfrec.train.als import AlsData
    from cfrec.models.foldin import FoldedUsers

TARGETS = ("rating", "binary")


def check_w0(value: object) -> float:
    return check_number("objective.w0", value, 0.0, 1.0, open_low=True)


def check_target(value: object) -> str:
    return str(check_choice("objective.target", value, TARGETS))


def check_popularity_exponent(value: object) -> float:
    return check_number("objective.popularity_exponent", value, 0.0, 1.0)


def rated_targets(batch: Batch, target: str, scale: Tensor | None) -> Tensor | None:
    """A batch's targets on its rated cells: the ratings (None: the batch's own) or 1, each times
    its movie's ``scale`` (`FactorModel.target_scale`) where there is one."""
    binary = target == "binary"
    if scale is None:
        return binary_targets(batch) if binary else None
    if isinstance(batch, DenseBatch):  # (B, n_items): scale each column
        return (batch.R if binary else batch.Y) * scale
    values = torch.ones_like(batch.values) if binary else batch.values
    return values * scale[batch.items]


def als_targets(data: "AlsData", target: str, scale: Tensor | None) -> "AlsData":
    """`rated_targets` for the blocks of an ALS sweep."""
    data = data.with_targets(1.0) if target == "binary" else data
    return data if scale is None else data.scaled_by_item(scale)


def fold_in_targets(items: Tensor, values: Tensor, target: str, scale: Tensor | None) -> Tensor:
    """`rated_targets` for the ratings a new user folds in with."""
    targets = torch.ones_like(values) if target == "binary" else values
    return targets if scale is None else targets * scale[items]


class WeightedMask(Objective):
    """Options: ``w0`` (weight of an unrated cell, in (0, 1]), ``target`` (``rating`` | ``binary``)
    and ``popularity_exponent`` (γ in [0, 1]: the rated cells' targets × (n_i / median n)^−γ)."""

    name = "weighted"
    predicts_ratings = False
    ranks_by = "preference"
    monitor = "val_ndcg@10"
    solves_exactly = True
    sparse_steps = True

    def __init__(self, **options: Any):
        options = check_options(self.name, options, {"w0": 0.3, "target": "rating", "popularity_exponent": 0.05})
        self.w0, self.target = check_w0(options["w0"]), check_target(options["target"])
        self.popularity_exponent = check_popularity_exponent(options["popularity_exponent"])

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "w0": self.w0, "target": self.target, "popularity_exponent": self.popularity_exponent}

    def init_heads(self, model: "FactorModel", train: Ratings, generator: torch.Generator) -> None:
        model.init_biases_zero(train)  # the targets include the zeros: biases start at 0

    def loss(self, model: "FactorModel", batch: Batch) -> LossTerms:
        targets = rated_targets(batch, self.target, model.target_scale)
        return head_loss(model.factors(), model.penalty(), batch, targets=targets, w0=self.w0,
                         **model.step_args(batch, "rating"))

    def als_sweep(self, model: "FactorModel", data: "AlsData", cg_steps: int = 0) -> LossTerms:
        targets = als_targets(data, self.target, model.target_scale)
        return als.sweep(model.factors(), model.penalty(), targets, self.w0, cg_steps)

    def validate(self, model: "FactorModel", fit_part: Ratings, val: Ratings, device: torch.device) -> dict[str, float]:
        return ranking_validation(model, fit_part, val, device)

    def fold_in(self, model: "FactorModel", items: Tensor, values: Tensor, users: Tensor, n_users: int) -> "FoldedUsers":
        from cfrec.models.foldin import FoldedUsers, seen_matrix

        targets = fold_in_targets(items, values, self.target, model.target_scale)
        ranking = model.fold_in_head(model.factors(), model.penalty(), model.l2_exponent, items, targets, users,
                                     n_users, w0=self.w0)
        return FoldedUsers(model, None, ranking, seen_matrix(users, items, n_users, model.n_items))
