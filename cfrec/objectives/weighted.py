"""The weighted mask (implicit-feedback least squares): every cell counts, rated or not.

    J = ½ Σ_all W_ui (θ̃_uᵀx̃_i − t_ui)² + penalties,   W = 1 on rated cells, w₀ elsewhere,

with t = the rating (``target: rating``) or 1 (``target: binary``) on rated cells and 0 on the
others. The sum over all cells has the closed form Σ_all ŷ² = ⟨Θ̃ᵀΘ̃, X̃ᵀX̃⟩, so a batch of rated
triples carries its share of it and no unrated cell is ever materialised. Its scores rank
movies well, but they are not ratings: the model does not ``predict``.
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
from cfrec.train.batches import Batch
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


class WeightedMask(Objective):
    """Options: ``w0`` (weight of an unrated cell, in (0, 1]) and ``target`` (``rating`` | ``binary``)."""

    name = "weighted"
    predicts_ratings = False
    ranks_by = "preference"
    monitor = "val_ndcg@10"
    solves_exactly = True
    sparse_steps = True

    def __init__(self, **options: Any):
        options = check_options(self.name, options, {"w0": 0.3, "target": "rating"})
        self.w0, self.target = check_w0(options["w0"]), check_target(options["target"])

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "w0": self.w0, "target": self.target}

    def init_heads(self, model: "FactorModel", train: Ratings, generator: torch.Generator) -> None:
        model.init_biases_zero(train)  # the targets include the zeros: biases start at 0

    def targets(self, batch: Batch) -> Tensor | None:
        return None if self.target == "rating" else binary_targets(batch)

    def loss(self, model: "FactorModel", batch: Batch) -> LossTerms:
        return head_loss(model.factors(), model.penalty(), batch, targets=self.targets(batch), w0=self.w0,
                         **model.step_args(batch, "rating"))

    def als_sweep(self, model: "FactorModel", data: "AlsData", cg_steps: int = 0) -> LossTerms:
        targets = data if self.target == "rating" else data.with_targets(1.0)
        return als.sweep(model.factors(), model.penalty(), targets, self.w0, cg_steps)

    def validate(self, model: "FactorModel", fit_part: Ratings, val: Ratings, device: torch.device) -> dict[str, float]:
        return ranking_validation(model, fit_part, val, device)

    def fold_in(self, model: "FactorModel", items: Tensor, values: Tensor, users: Tensor, n_users: int) -> "FoldedUsers":
        from cfrec.models.foldin import FoldedUsers, seen_matrix

        targets = values if self.target == "rating" else torch.ones_like(values)
        ranking = model.fold_in_head(model.factors(), model.penalty(), model.l2_exponent, items, targets, users,
                                     n_users, w0=self.w0)
        return FoldedUsers(model, None, ranking, seen_matrix(users, items, n_users, model.n_items))
