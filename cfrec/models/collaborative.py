"""`CollaborativeFiltering`: users' θ and movies' x both learned from the ratings alone."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn

from cfrec.data.ratings import Ratings
from cfrec.models.factor import FactorModel
from cfrec.objectives import Objective
from cfrec.validation import check_int, check_number


class CollaborativeFiltering(FactorModel):
    """Matrix factorization ŷ(u, i) = θ_uᵀx_i (+ μ + b_u + b_i), trained for an objective.

    Options (each one key of ``conf/model/cf.yaml``):

    - ``objective``: what it is trained for (`cfrec.objectives`): ``joint`` (the default: a rating
      head for ``predict`` and a preference head for ``recommend``), ``squared`` (ratings only),
      ``weighted`` or ``bpr`` (ranking only); a name or a mapping with ``name`` and its options.

    - ``rank``: k, the length of θ_u and x_i.
    - ``l2``: λ on ‖Θ‖² + ‖X‖² (J sums over ratings, so λ is in rating-count units).
    - ``bias``: learn a global mean and user/item biases (initialised from the closed-form bias
      baseline); ``l2_bias`` is their own λ.
    - ``init_scale``: standard deviation of the random normal θ and x at the start.
    - ``w0``: deprecated; ``w0=0.3`` is ``objective={"name": "weighted", "w0": 0.3}``.
    - ``clip``: clip predicted ratings into the training rating range.
    - ``l2_exponent``: α of count-scaled regularization: each user's (item's) penalty, biases
      included, is multiplied by its number of training ratings to the power α. 0 is the notes'
      J exactly; 0.5 (the default, chosen on validation) penalises a user with 100 ratings 10× as much
      as one with 1, so λ is per √rating rather than per row.

    Items (or users) with no training rating keep x = 0 and predict μ + b_u.
    """

    name = "cf"

    def __init__(
        self, rank: int = 64, l2: float = 1.0, bias: bool = True, l2_bias: float = 0.1,
        init_scale: float = 0.1, clip: bool = True, l2_exponent: float = 0.5,
        objective: str | Mapping[str, Any] | Objective = "joint", w0: float | None = None,
    ):
        check_int("rank", rank, 1)
        check_number("init_scale", init_scale, 0)
        super().__init__(l2=l2, bias=bias, l2_bias=l2_bias, clip=clip, l2_exponent=l2_exponent, objective=objective, w0=w0)
        self._rank, self._init_scale = rank, float(init_scale)
        self.x = nn.Parameter(torch.zeros(0, rank))

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def init_scale(self) -> float:
        return self._init_scale

    @property
    def item_table(self) -> Tensor:
        return self.x

    def init_item_side(self, train: Ratings, generator: torch.Generator) -> None:
        x = torch.randn(train.n_items, self.rank, generator=generator) * self.init_scale  # (n_items, k)
        x[torch.as_tensor(train.item_counts() == 0)] = 0.0
        self.x = nn.Parameter(x)

    def config(self) -> dict[str, Any]:
        return {
            "rank": self.rank, "l2": self.l2, "bias": self.use_bias, "l2_bias": self.l2_bias,
            "init_scale": self.init_scale, "clip": self.clip_predictions, "l2_exponent": self.l2_exponent,
            "objective": self.objective.config(),
        }
