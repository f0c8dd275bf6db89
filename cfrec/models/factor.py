"""`FactorModel`: what the learned models share — ŷ(u, i) = θ_uᵀx_i (+ μ + b_u + b_i).

A `torch.nn.Module` that follows the `Recommender` protocol: it holds θ and the biases as
parameters, computes J through `cfrec.models.losses` on the trainer's batches, predicts and
scores in batches, exports plain tensors, and folds new users in. Subclasses own the item
side x: learned (`CollaborativeFiltering`) or fixed features (`ContentBased`).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from cfrec.data.ratings import Ratings
from cfrec.errors import ConfigError
from cfrec.models.base import Recommender, as_codes
from cfrec.models.baseline import fit_biases
from cfrec.models.foldin import FoldedUsers, seen_matrix, solve_users
from cfrec.models.losses import Factors, LossTerms, Penalty, dense_loss, index_loss
from cfrec.train.batches import Batch, DenseBatch
from cfrec.train.config import TrainConfig
from cfrec.train.trainer import EpochCallback, Trainer


class FactorModel(Recommender, nn.Module):
    """Shared core of `CollaborativeFiltering` and `ContentBased`.

    Users or items without a training rating have θ = x = 0 and bias 0, J's own optimum for
    them, so they predict μ + b_u (or μ + b_i): the bias baseline, or the global mean.
    """

    def __init__(
        self, *, l2: float, bias: bool, l2_bias: float, w0: float | None, clip: bool, l2_exponent: float = 0.0,
    ):
        nn.Module.__init__(self)
        _non_negative("l2", l2)
        _non_negative("l2_bias", l2_bias)
        _non_negative("l2_exponent", l2_exponent)
        if w0 is not None and (isinstance(w0, bool) or not isinstance(w0, (int, float)) or not 0 < w0 <= 1):
            raise ConfigError("w0", f"must be null (rated cells only) or in (0, 1], got {w0!r}")
        self.l2, self.use_bias, self.l2_bias = float(l2), bool(bias), float(l2_bias)
        self.l2_exponent = float(l2_exponent)
        self._row_weights: tuple[Tensor | None, Tensor | None] = (None, None)  # n^α of the last fit
        self.w0 = None if w0 is None else float(w0)
        self.clip_predictions = bool(clip)
        self.theta = nn.Parameter(torch.zeros(0, 0))
        if self.use_bias:
            self.user_bias = nn.Parameter(torch.zeros(0))
            self.item_bias = nn.Parameter(torch.zeros(0))
        else:
            self.register_parameter("user_bias", None)
            self.register_parameter("item_bias", None)
        self.register_buffer("mean", torch.zeros(()))
        self.history: list[dict[str, float]] = []  # per-epoch metrics of the last fit

    @property
    def predicts_ratings(self) -> bool:  # type: ignore[override]
        """False for the weighted mask, whose scores rank items but are not ratings."""
        return self.w0 is None

    # -- the item side, owned by subclasses ---------------------------------------------
    @property
    def item_table(self) -> Tensor:
        """x (n_items, k): learned factors or fixed features."""
        raise NotImplementedError

    def init_item_side(self, train: Ratings, generator: torch.Generator) -> None:
        """Create the item side for ``train`` (on CPU; `prepare` moves everything)."""
        raise NotImplementedError

    @property
    def rank(self) -> int:
        raise NotImplementedError

    @property
    def l2_item(self) -> float:
        """λ on x in J: the model's l2 when x is learned, 0 when it is fixed."""
        return self.l2

    @property
    def init_scale(self) -> float:
        """Standard deviation of θ's random initialization."""
        return 0.0

    # -- training -------------------------------------------------------------------------
    def fit(
        self, train: Ratings, config: TrainConfig | dict[str, Any] | None = None,
        callbacks: Sequence[EpochCallback] = (),
    ) -> "FactorModel":
        """Train on ``train`` with `TrainConfig`'s tuned defaults, any of them overridden by ``config``."""
        if not isinstance(config, TrainConfig):
            config = TrainConfig.from_dict(config)
        trainer = Trainer(config, callbacks)
        trainer.fit(self, train)
        self.history = trainer.history
        return self

    def prepare(self, train: Ratings, generator: torch.Generator, device: torch.device) -> None:
        """Initialise every parameter for ``train`` (used by the trainer)."""
        self._remember_shape(train)
        self._row_weights = (
            (count_weights(train.user_counts(), self.l2_exponent, device),
             count_weights(train.item_counts(), self.l2_exponent, device))
            if self.l2_exponent else (None, None)
        )
        self.init_item_side(train, generator)
        theta = torch.randn(train.n_users, self.rank, generator=generator) * self.init_scale  # (n_users, k)
        theta[torch.as_tensor(train.user_counts() == 0)] = 0.0
        self.theta = nn.Parameter(theta)
        if self.use_bias:
            if self.w0 is None:  # start from the closed-form bias baseline of the same λ_b
                mean, user_bias, item_bias = fit_biases(train, self.l2_bias, self.l2_bias, n_sweeps=10)
            else:  # the weighted model's targets include the zeros: its biases start at 0
                mean, user_bias, item_bias = 0.0, np.zeros(train.n_users), np.zeros(train.n_items)
            self.mean = torch.tensor(mean, dtype=torch.float32)
            self.user_bias = nn.Parameter(torch.as_tensor(user_bias, dtype=torch.float32))
            self.item_bias = nn.Parameter(torch.as_tensor(item_bias, dtype=torch.float32))
        self.to(device)

    def factors(self) -> Factors:
        """The tensors of a prediction, for `cfrec.models.losses`."""
        if not self.use_bias:
            return Factors(self.theta, self.item_table)
        return Factors(self.theta, self.item_table, self.mean, self.user_bias, self.item_bias)

    def penalty(self) -> Penalty:
        return Penalty(self.l2, self.l2_item, self.l2_bias if self.use_bias else 0.0, *self._row_weights)

    def forward(self, batch: Batch) -> LossTerms:
        """J's terms on one batch of either layout (``model(batch)``; DDP can wrap it)."""
        if isinstance(batch, DenseBatch):
            return dense_loss(
                self.factors(), self.penalty(), batch.Y, batch.R, rows=batch.rows, fraction=batch.fraction, w0=self.w0,
            )
        return index_loss(
            self.factors(), self.penalty(), batch.users, batch.items, batch.values,
            user_share=batch.user_share, item_share=batch.item_share, fraction=batch.fraction, w0=self.w0,
        )

    # -- prediction -----------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.theta.device

    def predict_vectors(self, theta: Tensor, user_bias: Tensor | None, items: Tensor) -> Tensor:
        """Ratings (n,) for users given by vectors θ (n, k) and biases (n,) against item codes (n,)."""
        with torch.no_grad():
            items = items.to(self.device)
            pred = (theta.to(self.device) * self.item_table[items]).sum(dim=1)  # (n,)
            if self.use_bias:
                pred = pred + self.mean + user_bias.to(self.device) + self.item_bias[items]
        return self.clip(pred) if self.clip_predictions else pred

    def score_vectors(self, theta: Tensor, user_bias: Tensor | None) -> Tensor:
        """Unclipped scores (n, n_items) for users given by vectors θ (n, k) and biases (n,)."""
        with torch.no_grad():
            scores = theta.to(self.device) @ self.item_table.T  # (n, n_items)
            if self.use_bias:
                scores += (self.mean + user_bias.to(self.device))[:, None] + self.item_bias[None, :]
        return scores

    def predict(self, users: Tensor, items: Tensor) -> Tensor:
        self.check_fitted()
        codes = users.to(self.device)
        bias = self.user_bias[codes] if self.use_bias else None
        return self.predict_vectors(self.theta[codes], bias, items).to(users.device)

    def score(self, users: Tensor) -> Tensor:
        self.check_fitted()
        codes = users.to(self.device)
        bias = self.user_bias[codes] if self.use_bias else None
        return self.score_vectors(self.theta[codes], bias).to(users.device)

    @property
    def user_vectors(self) -> Tensor | None:  # type: ignore[override]
        return self.theta.detach() if self.is_fitted else None

    @property
    def item_vectors(self) -> Tensor | None:  # type: ignore[override]
        return self.item_table.detach() if self.is_fitted else None

    # -- fold-in --------------------------------------------------------------------------
    def fold_in(self, items: Any, ratings: Any, users: Any | None = None) -> FoldedUsers:
        """New users' θ (and bias) from their ratings, the item side frozen (closed-form ridge).

        ``items`` are item codes and ``ratings`` their values; ``users`` numbers the new users
        0..n-1 (omitted: all ratings belong to one new user). Returns a `FoldedUsers` that
        predicts, scores and recommends for them.
        """
        self.check_fitted()
        items = as_codes(items, self.device)
        values = torch.as_tensor(np.asarray(ratings, dtype=np.float32), device=self.device).reshape(-1)
        users = torch.zeros_like(items) if users is None else as_codes(users, self.device)
        if not len(items) == len(values) == len(users):
            raise ValueError(f"fold_in: {len(items)} items, {len(values)} ratings and {len(users)} users differ in length")
        if len(items) and (items.min() < 0 or items.max() >= self.n_items):
            raise ValueError(f"fold_in: item codes must lie in [0, {self.n_items}), got {items.min()}..{items.max()}")
        if not torch.isfinite(values).all() or (len(users) and users.min() < 0):
            raise ValueError("fold_in: ratings must be finite and user rows non-negative")
        n_users = int(users.max()) + 1 if len(users) else 1
        with torch.no_grad():
            x = self.item_table.detach()
            reg = torch.full((self.rank,), self.l2, device=self.device)
            if self.use_bias:
                x = torch.cat([x, torch.ones(self.n_items, 1, device=self.device)], dim=1)  # (n_items, k+1)
                reg = torch.cat([reg, torch.tensor([self.l2_bias], device=self.device)])
                offset = self.mean + self.item_bias.detach()  # (n_items,)
            else:
                offset = torch.zeros(self.n_items, device=self.device)
            scale = count_weights(torch.bincount(users, minlength=n_users).cpu().numpy(), self.l2_exponent, self.device)
            z = solve_users(x, offset, reg, users, items, values, n_users, self.w0, scale).float()  # (n_users, f)
        theta, bias = (z[:, : self.rank], z[:, self.rank]) if self.use_bias else (z, None)
        return FoldedUsers(self, theta, bias, seen_matrix(users, items, n_users, self.n_items))

    # -- plain-tensor state ---------------------------------------------------------------
    def state(self) -> dict[str, Tensor]:
        return {name: t.detach().cpu().clone() for name, t in self.state_dict().items()}

    def load_state(self, state: dict[str, Tensor]) -> "FactorModel":
        """Restore ``state()`` (parameters take the stored shapes)."""
        expected = set(self.state_dict())
        if set(state) != expected:
            raise KeyError(f"{type(self).__name__} state needs {sorted(expected)}, got {sorted(state)}")
        for name, tensor in state.items():
            if name in self._parameters:
                self._parameters[name] = nn.Parameter(tensor.clone().to(self.device))
            else:
                self._buffers[name] = tensor.clone().to(self.device)
        return self


def count_weights(counts: np.ndarray, exponent: float, device: torch.device | str) -> Tensor:
    """Per-row penalty weights n^exponent (rows without ratings count as 1)."""
    return torch.as_tensor(np.maximum(counts, 1).astype(np.float64) ** exponent, dtype=torch.float32, device=device)


def _non_negative(key: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ConfigError(key, f"must be a non-negative number, got {value!r}")
