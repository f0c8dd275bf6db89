"""`ContentBased`: each user's θ learned over fixed item features (the notes' first model)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from cfrec.data.ratings import Ratings
from cfrec.errors import ConfigError
from cfrec.models.factor import FactorModel
from cfrec.models.features import item_features
from cfrec.validation import check_bool, check_int
from cfrec.objectives import Objective


class ContentBased(FactorModel):
    """ŷ(u, i) = θ_uᵀf_i (+ μ + b_u + b_i) with fixed item features f_i; all users fit at once.

    Options (each one key of ``conf/model/content.yaml``):

    - ``genres``, ``year_width``, ``constant``: the features built from the training data's
      item metadata (see `item_features`) — genres multi-hot, release-year buckets, a 1.
    - ``item_features``: any (n_items, f) matrix instead (rows in item-code order); not part of
      ``config()``, it travels in ``state()``.
    - ``l2``: λ on ‖Θ‖² (the features are not penalised).
    - ``bias``: learn user/item biases around the global mean (``l2_bias`` their λ); off gives
      the notes' pure θᵀx.
    - ``clip``: clip predicted ratings into the training rating range.
    - ``l2_exponent``: α of count-scaled regularization (see `CollaborativeFiltering`); 0 = the notes'.
    - ``objective``: ``squared`` (ratings) or ``weighted`` (ranking); see `cfrec.objectives`.

    A movie nobody rated has b_i = 0 and is predicted from its features: μ + b_u + θ_uᵀf_i.
    """

    name = "content"
    learns_items = False

    def __init__(
        self, genres: bool = True, year_width: int | None = 10, constant: bool = True, l2: float = 30.0,
        bias: bool = True, l2_bias: float = 1.0, clip: bool = True, item_features: Any | None = None,
        l2_exponent: float = 0.0, objective: str | Mapping[str, Any] | Objective = "squared",
    ):
        super().__init__(l2=l2, bias=bias, l2_bias=l2_bias, clip=clip, l2_exponent=l2_exponent, objective=objective)
        if year_width is not None:
            check_int("year_width", year_width, 1)
        self.genres, self.constant = check_bool("genres", genres), check_bool("constant", constant)
        self.year_width = year_width
        given = None if item_features is None else torch.as_tensor(np.asarray(item_features, dtype=np.float32))
        if given is not None and (given.dim() != 2 or not torch.isfinite(given).all()):
            raise ConfigError("item_features", f"must be a finite (n_items, f) matrix, got shape {tuple(given.shape)}")
        self._given = given
        self.register_buffer("features", given.clone() if given is not None else torch.zeros(0, 0))
        self.feature_names: list[str] = [] if given is None else [f"f{j}" for j in range(given.shape[1])]

    @property
    def rank(self) -> int:
        return self.features.shape[1]

    @property
    def item_table(self) -> Tensor:
        return self.features

    @property
    def l2_item(self) -> float:
        return 0.0

    def init_item_side(self, train: Ratings, generator: torch.Generator) -> None:
        if self._given is not None:
            if self._given.shape[0] != train.n_items:
                raise ConfigError(
                    "item_features", f"has {self._given.shape[0]} rows, the training data {train.n_items} items"
                )
            self.features = self._given.clone()
            return
        if train.item_info is None:
            raise ConfigError("item_features", f"{train.name!r} has no item metadata: pass an item_features matrix")
        matrix, self.feature_names = item_features(
            train.item_info, genres=self.genres, year_width=self.year_width, constant=self.constant,
        )
        self.features = torch.as_tensor(matrix)

    def config(self) -> dict[str, Any]:
        return {
            "genres": self.genres, "year_width": self.year_width, "constant": self.constant, "l2": self.l2,
            "bias": self.use_bias, "l2_bias": self.l2_bias, "clip": self.clip_predictions,
            "l2_exponent": self.l2_exponent, "objective": self.objective.config(),
        }
