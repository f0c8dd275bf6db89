"""The model protocol every cfrec model follows (learned, neighbourhood and trivial alike).

Models speak internal codes (int64 tensors); raw ids live in `Ratings` maps and in the
`cfrec.load` wrapper. A model:

- ``fit(train)`` learns from a `Ratings` and returns itself;
- ``predict(users, items)`` returns one rating per (user, item) code pair;
- ``score(users)`` returns a (len(users), n_items) matrix for ranking (higher is better);
- ``recommend(users, k, exclude=train)`` returns the top-``k`` item codes and their scores;
- exposes ``user_vectors`` / ``item_vectors`` where it has embeddings (for KNN and HNSW);
- ``config()`` gives its constructor arguments, ``state()`` / ``load_state()`` its fitted
  tensors and ``shape_meta()`` / ``restore_shape()`` its sizes, so a checkpoint is plain
  tensors plus JSON.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from cfrec.data.ratings import Ratings
from cfrec.errors import CfrecError


class NotFittedError(CfrecError, RuntimeError):
    """A model was asked to predict before ``fit``."""


class Recommender:
    """Base class: shared sizes, clipping, default ``score`` and ``recommend``."""

    name: ClassVar[str] = "model"
    n_users: int = 0
    n_items: int = 0
    rating_range: tuple[float, float] | None = None  # predictions are clipped into it when set
    predicts_ratings: bool = True  # False where scores rank items but are not ratings (RMSE does not apply)
    ranks_by: str = "rating"  # what ``score`` returns: predicted ratings, or a "preference" score
    vector_similarity: str = "cosine"  # how ``user_vectors`` / ``item_vectors`` compare ("similar movies")
    train_mean: float = 0.0  # the mean training rating (the last-resort fallback)

    # -- to implement -------------------------------------------------------------------
    def fit(self, train: Ratings) -> "Recommender":
        raise NotImplementedError

    def predict(self, users: Tensor, items: Tensor) -> Tensor:
        """Predicted ratings for code pairs, shape (n,)."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-serialisable): ``type(self)(**m.config())`` rebuilds it."""
        raise NotImplementedError

    def state(self) -> dict[str, Tensor]:
        """Fitted tensors; with ``config()`` they reproduce the fitted model."""
        raise NotImplementedError

    def load_state(self, state: dict[str, Tensor]) -> "Recommender":
        """Restore what ``state()`` returned."""
        raise NotImplementedError

    def validate(self, train: Ratings) -> None:
        """Raise `ConfigError` naming the option when this configuration cannot fit ``train``."""

    # -- provided -----------------------------------------------------------------------
    user_vectors: Tensor | None = None
    item_vectors: Tensor | None = None

    @property
    def is_fitted(self) -> bool:
        return self.n_items > 0

    def check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit(train) first")

    def _remember_shape(self, train: Ratings) -> None:
        """Record sizes and the rating range at fit time."""
        if len(train) == 0:
            raise ValueError(f"cannot fit {type(self).__name__} on an empty training set")
        self.n_users, self.n_items = train.n_users, train.n_items
        self.rating_range = train.scale or (float(train.values.min()), float(train.values.max()))
        self.train_mean = float(np.mean(train.values, dtype=np.float64))

    def shape_meta(self) -> dict[str, Any]:
        """Sizes and rating range as JSON, stored beside ``state()`` in checkpoints."""
        return {"n_users": self.n_users, "n_items": self.n_items,
                "rating_range": None if self.rating_range is None else list(self.rating_range),
                "train_mean": self.train_mean}

    def restore_shape(self, meta: dict[str, Any]) -> None:
        """Inverse of ``shape_meta``."""
        self.n_users, self.n_items = int(meta["n_users"]), int(meta["n_items"])
        self.rating_range = None if meta["rating_range"] is None else tuple(meta["rating_range"])
        self.train_mean = float(meta.get("train_mean", 0.0))

    def fallback_predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Ratings for pairs the model cannot score (code −1 = an unknown user or movie): here the
        mean training rating; models with biases add what they know (`BiasBaseline`, `FactorModel`)."""
        return np.full(len(users), self.train_mean, dtype=np.float32)

    def clip(self, ratings: Tensor) -> Tensor:
        """Predictions clipped into the training rating range."""
        if self.rating_range is None:
            return ratings
        return ratings.clamp(*self.rating_range)

    def score(self, users: Tensor) -> Tensor:
        """Ranking scores (len(users), n_items); default: ``predict`` on the whole grid."""
        self.check_fitted()
        items = torch.arange(self.n_items, device=users.device)
        grid_users = users.repeat_interleave(self.n_items)  # (B * n_items,)
        return self.predict(grid_users, items.repeat(len(users))).view(len(users), self.n_items)

    def recommend(
        self, users: Tensor, k: int = 10, exclude: Ratings | sp.csr_matrix | None = None
    ) -> tuple[Tensor, Tensor]:
        """Top-``k`` item codes and scores per user, (len(users), k) each; ``exclude`` masks seen items."""
        scores = self.score(users).float()
        if exclude is not None:
            mask_seen(scores, users, exclude if sp.issparse(exclude) else exclude.to_csr())
        k = min(k, self.n_items)
        top = torch.topk(scores, k, dim=1)
        return top.indices, top.values


def mask_seen(scores: Tensor, users: Tensor, seen: sp.csr_matrix) -> Tensor:
    """Set ``scores[b, i] = -inf`` where user ``users[b]`` has item ``i`` in ``seen`` (in place)."""
    rows = seen[users.cpu().numpy()]
    coo = rows.tocoo()
    if coo.nnz:
        r = torch.as_tensor(coo.row.astype(np.int64), device=scores.device)
        c = torch.as_tensor(coo.col.astype(np.int64), device=scores.device)
        scores[r, c] = float("-inf")
    return scores


def as_codes(values: Any, device: torch.device | str = "cpu") -> Tensor:
    """Anything array-like → int64 tensor on ``device``."""
    return torch.as_tensor(np.asarray(values) if not isinstance(values, Tensor) else values, device=device).long()
