"""`Objective`: what a factor model is trained for, and everything that follows from it.

A `FactorModel` keeps the parameters (θ, x, biases, and a second head where an objective asks
for one) and the arithmetic of scoring; the `Trainer` keeps the loop, the optimiser, resume and
data parallelism. An objective owns the rest:

- ``batches``: how its training batches are drawn from a layout, with the trainer's seeded
  generator (so a resumed run and every rank of a torchrun job draw the same ones);
- ``loss``: J's data and regularisation terms on one batch;
- ``predicts_ratings`` / ``ranks_by``: whether the model's ``predict`` answers ratings, and what
  kind of score ``recommend`` ranks by;
- ``monitor`` and ``validate``: the validation metric it is monitored and early-stopped on, and
  how it is measured on a held-out slice of train;
- ``init_heads``: the starting values of the parameters it trains;
- ``fold_in``: new users from a few ratings, in closed form (or a clear `NotSupported`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Iterator

import numpy as np
import torch
from torch import Tensor

from cfrec import metrics
from cfrec.data.ratings import Ratings
from cfrec.errors import CfrecError, ConfigError
from cfrec.models.losses import LossTerms
from cfrec.train.batches import Batch, DenseLayout, IndexLayout
from cfrec.validation import check_int, check_number

if TYPE_CHECKING:  # the models import the objectives
    from cfrec.models.factor import FactorModel
    from cfrec.train.als import AlsData
    from cfrec.models.foldin import FoldedUsers

RANKING_KS = (10, 50)  # validation Recall@K and NDCG@K of ranking objectives
RATING_KEYS = ("val_rmse", "val_mae", "val_accuracy")
RANKING_KEYS = tuple(f"val_{name}@{k}" for k in RANKING_KS for name in ("recall", "ndcg"))
MAX_VALIDATION_USERS = 2000  # ranking validation scores at most this many users (a fixed sample)


class NotSupported(CfrecError, NotImplementedError):
    """The model's objective cannot do what was asked (e.g. predict ratings, fold in)."""


class Objective:
    """Base class; subclasses set the class attributes and implement ``loss``."""

    name: ClassVar[str]
    predicts_ratings: ClassVar[bool] = True
    ranks_by: ClassVar[str] = "rating"  # "rating": predicted ratings; "preference": a ranking score
    monitor: ClassVar[str] = "val_rmse"
    layouts: ClassVar[tuple[str, ...]] = ("dense", "index")
    preference_head: ClassVar[bool] = False  # a second set of factors beside the rating head
    solves_exactly: ClassVar[bool] = False  # J is a ridge problem per row: ``train.optimizer=als`` can solve it
    sparse_steps: ClassVar[bool] = False  # its index-layout loss has a row-sparse form (train.optimizer: sparse_adam)
    popularity_exponent: float = 0.0  # γ > 0: the model keeps each movie's target scale (n_i / median n)^−γ

    @property
    def validation_keys(self) -> tuple[str, ...]:
        """The metrics ``validate`` returns: rating errors where it predicts ratings, ranking
        quality where it ranks by a preference score."""
        keys = RATING_KEYS if self.predicts_ratings else ()
        return keys + (RANKING_KEYS if self.ranks_by == "preference" else ())

    def config(self) -> dict[str, Any]:
        """The objective's options, ``name`` first: ``make_objective(o.config())`` rebuilds it."""
        return {"name": self.name}

    # -- training -------------------------------------------------------------------------
    def init_heads(self, model: "FactorModel", train: Ratings, generator: torch.Generator) -> None:
        """Give the model's biases (and any extra head) their starting values for ``train``."""
        model.init_biases_from_baseline(train)

    def batches(self, layout: DenseLayout | IndexLayout, batch_size: int | None,
                generator: torch.Generator) -> Iterator[Batch]:
        """The epoch's batches, drawn with the trainer's ``generator``."""
        return layout.batches(batch_size, generator)

    def loss(self, model: "FactorModel", batch: Batch) -> LossTerms:
        raise NotImplementedError

    def als_sweep(self, model: "FactorModel", data: "AlsData", cg_steps: int = 0) -> LossTerms:
        """One alternating-least-squares sweep of every head this objective trains (`cfrec.train.als`;
        ``cg_steps`` > 0: that many conjugate-gradient steps per side instead of exact solves); J after it."""
        raise NotSupported(f"the {self.name} objective has no closed-form row updates: train it with adam, adamw or sgd")

    # -- validation -----------------------------------------------------------------------
    def validate(self, model: "FactorModel", fit_part: Ratings, val: Ratings, device: torch.device) -> dict[str, float]:
        """Validation metrics on ``val`` (held out of ``fit_part``, which the model trained on)."""
        return rating_validation(model, val, device)

    # -- new users ------------------------------------------------------------------------
    def fold_in(self, model: "FactorModel", items: Tensor, values: Tensor, users: Tensor, n_users: int) -> "FoldedUsers":
        raise NotSupported(f"the {self.name} objective cannot fold in new users")


def rating_validation(model: "FactorModel", val: Ratings, device: torch.device, tolerance: float = 0.5) -> dict[str, float]:
    """RMSE, MAE and accuracy of the model's rating predictions on ``val``."""
    from cfrec.evaluate import predict_pairs  # the evaluator imports the models

    pred = predict_pairs(model, val.users, val.items, device=device)
    measured = metrics.rating_metrics(pred, torch.as_tensor(val.values), tolerance)
    return {f"val_{name}": value for name, value in measured.items()}


def ranking_validation(
    model: "FactorModel", fit_part: Ratings, val: Ratings, device: torch.device, like_threshold: float | None = None,
) -> dict[str, float]:
    """Recall@K and NDCG@K (K = 10, 50) of the model's ranking on ``val``, ``fit_part``'s items excluded.

    A liked item is a held-out rating ≥ 4 on a 1–5 scale (≥ 80 % of the scale's top in
    general); at most `MAX_VALIDATION_USERS` users are scored, a fixed sample.
    """
    from cfrec.evaluate import ranking_metrics  # the evaluator imports the models

    if like_threshold is None:
        low, high = fit_part.scale or (float(fit_part.values.min()), float(fit_part.values.max()))
        like_threshold = min(4.0, high) if high <= 5 else low + 0.75 * (high - low)
    users = np.unique(val.users[val.values >= like_threshold])
    if len(users) > MAX_VALIDATION_USERS:
        users = np.sort(np.random.default_rng(0).choice(users, MAX_VALIDATION_USERS, replace=False))
        val = val.subset(np.isin(val.users, users))
    result = ranking_metrics(model, fit_part, val, ks=RANKING_KS, like_threshold=like_threshold, device=device)
    return {f"val_{name}@{k}": result[f"{name}@{k}"] for k in RANKING_KS for name in ("recall", "ndcg")}


def check_options(name: str, options: dict[str, Any], allowed: dict[str, Any]) -> dict[str, Any]:
    """``allowed`` (option → default) updated by ``options``; unknown keys name their key."""
    for key in options:
        if key not in allowed:
            raise ConfigError(f"objective.{key}", f"not an option of the {name} objective; options: "
                              f"{', '.join(allowed) or 'none'}")
    return {**allowed, **options}


def non_negative(key: str, value: object) -> float:
    """An objective's option ``key`` as a number >= 0 (`cfrec.validation`; errors name ``objective.<key>``)."""
    return check_number(f"objective.{key}", value, 0.0)


def positive_int(key: str, value: object) -> int:
    """An objective's option ``key`` as an integer >= 1 (errors name ``objective.<key>``)."""
    return check_int(f"objective.{key}", value, 1)
