"""`CollaborativeFiltering`: users' θ and movies' x both learned from the ratings alone."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from cfrec.data.ratings import Ratings
from cfrec.models.blend import STATE_PREFIX, NeighborhoodBlend
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

    - ``knn_blend``: k of the item-KNN whose predicted ratings are blended into the model's,
      ŷ = (1 − β) ŷ_factor + β ŷ_knn, β chosen in closed form on the trainer's validation slice
      after training (`cfrec.models.blend`; 0 without a slice); ``None`` = the factor model alone.
      Only objectives that predict ratings (``squared``, ``joint``) blend; ranking objectives
      predict none, so there it changes nothing.

    Items (or users) with no training rating keep x = 0 and predict μ + b_u.
    """

    name = "cf"

    def __init__(
        self, rank: int = 64, l2: float = 1.0, bias: bool = True, l2_bias: float = 0.1,
        init_scale: float = 0.1, clip: bool = True, l2_exponent: float = 0.5,
        objective: str | Mapping[str, Any] | Objective = "joint", w0: float | None = None,
        knn_blend: int | None = 30,
    ):
        check_int("rank", rank, 1)
        check_number("init_scale", init_scale, 0)
        if knn_blend is not None:
            check_int("knn_blend", knn_blend, 1)
        super().__init__(l2=l2, bias=bias, l2_bias=l2_bias, clip=clip, l2_exponent=l2_exponent, objective=objective, w0=w0)
        self._rank, self._init_scale = rank, float(init_scale)
        self.x = nn.Parameter(torch.zeros(0, rank))
        self.knn_blend = knn_blend
        self.blend = NeighborhoodBlend(knn_blend) if knn_blend is not None and self.predicts_ratings else None

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

    def prepare(self, train: Ratings, generator: torch.Generator, device: torch.device) -> None:
        super().prepare(train, generator, device)
        if self.blend is not None:
            self.blend.reset()  # validation during training measures the factors alone

    def finish(self, fit_part: Ratings, val: Ratings | None, device: torch.device) -> None:
        """Fit the neighbourhood blend on ``fit_part`` and choose β on ``val``."""
        super().finish(fit_part, val, device)
        if self.blend is not None:
            self.final_validation = self.blend.fit(self, fit_part, val, device)

    @property
    def ranks_by(self) -> str:  # type: ignore[override]
        """As the objective says, but ``factor_rating`` where the objective ranks by the rating and a
        blend is fitted: ``score`` then ranks by the factors' rating, without the KNN's share
        (scoring the KNN over every movie of every user would cost a neighbour list per cell)."""
        blended = self.blend is not None and self.blend.knn is not None
        return "factor_rating" if blended and self.objective.ranks_by == "rating" else self.objective.ranks_by

    def predict(self, users: Tensor, items: Tensor) -> Tensor:
        pred = super().predict(users, items)
        return pred if self.blend is None else self.blend.apply(users, items, pred)

    def state(self) -> dict[str, Tensor]:
        return {**super().state(), **({} if self.blend is None else self.blend.state())}

    def load_state(self, state: dict[str, Tensor]) -> CollaborativeFiltering:
        blend = {k: v for k, v in state.items() if k.startswith(STATE_PREFIX)}
        if blend and self.blend is None:
            raise KeyError(f"the state holds a neighbourhood blend ({STATE_PREFIX}*) but knn_blend is {self.knn_blend}")
        super().load_state({k: v for k, v in state.items() if not k.startswith(STATE_PREFIX)})
        if self.blend is not None:
            self.blend.load_state(blend, self.device, self.rating_range)
        return self

    def config(self) -> dict[str, Any]:
        return {
            "rank": self.rank, "l2": self.l2, "bias": self.use_bias, "l2_bias": self.l2_bias,
            "init_scale": self.init_scale, "clip": self.clip_predictions, "l2_exponent": self.l2_exponent,
            "objective": self.objective.config(), "knn_blend": self.knn_blend,
        }
