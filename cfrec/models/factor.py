"""`FactorModel`: what the learned models share — ŷ(u, i) = θ_uᵀx_i (+ μ + b_u + b_i).

A `torch.nn.Module` that follows the `Recommender` protocol: it holds θ and the biases as
parameters (and a preference head where its objective asks for one), computes the
objective's loss on the trainer's batches, predicts and scores in batches, exports plain
tensors, and folds new users in. Subclasses own the item side x: learned
(`CollaborativeFiltering`) or fixed features (`ContentBased`); `cfrec.objectives` owns what
the training is for.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from cfrec.data.ratings import Ratings
from cfrec.errors import ConfigError
from cfrec.models.base import Recommender, as_codes
from cfrec.models.baseline import baseline_fallback, fit_biases
from cfrec.models.foldin import FoldedUsers, solve_users
from cfrec.models.losses import (
    Factors, LossTerms, Penalty, pack_head, packed_factors, packed_views, reset_fixed_columns,
)
from cfrec.objectives import NotSupported, Objective, make_objective
from cfrec.train.batches import Batch, IndexBatch
from cfrec.train.config import TrainConfig
from cfrec.train.sparse import SparseSteps
from cfrec.train.trainer import EpochCallback, Trainer
from cfrec.validation import check_number


class FactorModel(Recommender, nn.Module):
    """Shared core of `CollaborativeFiltering` and `ContentBased`.

    The parameters are a *rating head* (θ, the item side x, μ, b_u, b_i) and, where the
    objective asks for one (``joint``), a *preference head* (φ, z, c_u, d_i), stored packed as the
    augmented tables its steps multiply (`pack_head`) and saved as its four tensors. The `Objective`
    decides how they are trained and what the scores mean; this class does the arithmetic.
    Users or items without a training rating have zero vectors and bias 0, J's own optimum for
    them, so they predict μ + b_u (or μ + b_i): the bias baseline, or the global mean.
    """

    learns_items: ClassVar[bool] = True  # False where x is fixed (features): no preference head then

    def __init__(
        self, *, l2: float, bias: bool, l2_bias: float, clip: bool, l2_exponent: float = 0.0,
        objective: str | Mapping[str, Any] | Objective = "squared", w0: float | None = None,
    ):
        nn.Module.__init__(self)
        for key, value in (("l2", l2), ("l2_bias", l2_bias), ("l2_exponent", l2_exponent)):
            check_number(key, value, 0)
        if w0 is not None:  # the option before objectives existed: the weighted objective
            check_number("w0", w0, 0, 1, open_low=True)
            warnings.warn("w0 is deprecated: use objective={'name': 'weighted', 'w0': ...}", DeprecationWarning, 2)
            objective = {"name": "weighted", "w0": float(w0)}
        try:
            self.objective = make_objective(objective)
        except ConfigError as err:
            raise ConfigError(err.key if err.key.startswith("objective") else f"objective.{err.key}", err.message) from None
        if self.objective.preference_head and not self.learns_items:
            raise ConfigError("objective.name", f"{self.objective.name} needs learned movie factors; "
                              f"{type(self).__name__} has fixed features (use squared or weighted)")
        self.l2, self.use_bias, self.l2_bias = float(l2), bool(bias), float(l2_bias)
        self.l2_exponent = float(l2_exponent)
        self._row_weights: tuple[Tensor | None, Tensor | None] = (None, None)  # n^α of the last fit
        self._preference_weights: tuple[Tensor | None, Tensor | None] = (None, None)  # n^α of the last fit
        self.clip_predictions = bool(clip)
        self.theta = nn.Parameter(torch.zeros(0, 0))
        if self.use_bias:
            self.user_bias = nn.Parameter(torch.zeros(0))
            self.item_bias = nn.Parameter(torch.zeros(0))
        else:
            self.register_parameter("user_bias", None)
            self.register_parameter("item_bias", None)
        self.register_buffer("mean", torch.zeros(()))
        # each movie's factor on its rated cells' targets, (n_i / median n)^−γ (`count_rows`); None without γ
        self.register_buffer("target_scale", torch.zeros(0) if self.objective.popularity_exponent else None)
        if self.objective.preference_head:
            self.pref_users, self.pref_items = nn.Parameter(torch.zeros(0, 0)), nn.Parameter(torch.zeros(0, 0))
            self.register_state_dict_post_hook(_head_as_saved)
            self.register_load_state_dict_pre_hook(_head_as_trained)
        self.history: list[dict[str, float]] = []  # per-epoch metrics of the last fit
        self.final_validation: dict[str, float] = {}  # val_* of the returned model where `finish` changed it
        self._sparse: SparseSteps | None = None  # row-sparse training steps (train.optimizer: sparse_adam)

    # -- what the model is (declared by its objective) ------------------------------------
    @property
    def predicts_ratings(self) -> bool:  # type: ignore[override]
        return self.objective.predicts_ratings

    @property
    def ranks_by(self) -> str:  # type: ignore[override]
        return self.objective.ranks_by

    @property
    def monitor(self) -> str:
        """The validation metric training is monitored on unless ``train.monitor`` says otherwise."""
        return self.objective.monitor

    @property
    def validation_keys(self) -> tuple[str, ...]:
        return self.objective.validation_keys

    @property
    def layouts(self) -> tuple[str, ...]:
        return self.objective.layouts

    @property
    def has_preference_head(self) -> bool:
        return self.objective.preference_head

    @property
    def sparse_steps(self) -> bool:
        """Whether the objective's loss has a row-sparse form (`cfrec.train.sparse`)."""
        return self.objective.sparse_steps

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
    ) -> FactorModel:
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
        self.init_item_side(train, generator)
        theta = torch.randn(train.n_users, self.rank, generator=generator) * self.init_scale  # (n_users, k)
        theta[torch.as_tensor(train.user_counts() == 0)] = 0.0
        self.theta = nn.Parameter(theta)
        self.objective.init_heads(self, train, generator)
        self.to(device)
        self._sparse = None
        self.count_rows(train, device)

    def count_rows(self, train: Ratings, device: torch.device) -> None:
        """Each head's row penalty weights n^α and the movies' target scale from ``train``'s rating counts, and the rows the
        row-sparse steps carry without a rating. `prepare` calls it; the trainer again when the
        validation slice is folded back in (`TrainConfig.fold_back`)."""

        counts = train.user_counts(), train.item_counts()

        def weights(exponent: float) -> tuple[Tensor | None, Tensor | None]:
            if not exponent:
                return None, None
            return count_weights(counts[0], exponent, device), count_weights(counts[1], exponent, device)

        self._row_weights = weights(self.l2_exponent)
        if self.has_preference_head:
            self._preference_weights = weights(self.objective.l2_exponent)
        if self.target_scale is not None:
            self.target_scale = popularity_scale(counts[1], self.objective.popularity_exponent, device)
        if self._sparse is not None:
            self._sparse.count_rows(train, device)

    def use_sparse_steps(self, train: Ratings, device: torch.device) -> None:
        """Train with row-sparse steps from now on (the trainer calls it after ``prepare``)."""
        if not self.sparse_steps:
            raise NotSupported(f"the {self.objective.name} objective has no row-sparse steps")
        self._sparse = SparseSteps(train, device, self.parameters())

    def step_args(self, batch: Batch, head: str) -> dict[str, Any]:
        """The ``head_loss`` arguments of this step for ``head`` (``rating`` | ``preference``): with
        row-sparse steps their rows, Gramians and orphans; with ordinary steps the batch's whole-table
        pattern (`IndexBatch.pattern`, built once per batch for both heads); none for a dense batch."""
        if not isinstance(batch, IndexBatch):
            return {}
        if self._sparse is not None:
            return self._sparse.args(batch, head)
        return {"pattern": batch.pattern(self.n_users, self.n_items)}

    def init_biases_from_baseline(self, train: Ratings) -> None:
        """μ, b_u, b_i start from the closed-form bias baseline of the same λ_b."""
        if self.use_bias:
            mean, user_bias, item_bias = fit_biases(train, self.l2_bias, self.l2_bias, n_sweeps=10)
            self._set_biases(mean, user_bias, item_bias)

    def init_biases_zero(self, train: Ratings) -> None:
        """μ = b_u = b_i = 0 (objectives whose targets are not the ratings alone)."""
        if self.use_bias:
            self._set_biases(0.0, np.zeros(train.n_users), np.zeros(train.n_items))

    def _set_biases(self, mean: float, user_bias: np.ndarray, item_bias: np.ndarray) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32)
        self.user_bias = nn.Parameter(torch.as_tensor(user_bias, dtype=torch.float32))
        self.item_bias = nn.Parameter(torch.as_tensor(item_bias, dtype=torch.float32))

    def add_preference_head(self, train: Ratings, rank: int, generator: torch.Generator) -> None:
        """φ (n_users, rank), z (n_items, rank) random like θ and x; their biases 0."""
        users, items = train.user_counts() == 0, train.item_counts() == 0
        phi = torch.randn(train.n_users, rank, generator=generator) * self.init_scale
        z = torch.randn(train.n_items, rank, generator=generator) * self.init_scale
        phi[torch.as_tensor(users)], z[torch.as_tensor(items)] = 0.0, 0.0
        self._set_preference_head(phi, z, torch.zeros(train.n_users), torch.zeros(train.n_items))

    def _set_preference_head(self, phi: Tensor, z: Tensor, user_bias: Tensor, item_bias: Tensor) -> None:
        self.pref_users, self.pref_items = (nn.Parameter(t) for t in pack_head(phi, z, user_bias, item_bias))

    def after_step(self) -> None:
        """Called after every optimizer step: a packed head's fixed columns (its ones, then its zero
        padding) hold 1 and 0 again. Their gradient is 0, but ``weight_decay`` would shrink the ones."""
        if self.has_preference_head:
            reset_fixed_columns(self.pref_users, self.pref_items, self.objective.rank)

    def factors(self) -> Factors:
        """The rating head's tensors (the only head of single-head objectives)."""
        if not self.use_bias:
            return Factors(self.theta, self.item_table)
        return Factors(self.theta, self.item_table, self.mean, self.user_bias, self.item_bias)

    def penalty(self) -> Penalty:
        return Penalty(self.l2, self.l2_item, self.l2_bias if self.use_bias else 0.0, *self._row_weights)

    def preference_factors(self) -> Factors:
        """The preference head's tensors (objectives with ``preference_head``): views of its packed tables."""
        return packed_factors(self.pref_users, self.pref_items, self.objective.rank)

    def preference_penalty(self) -> Penalty:
        """The preference head's penalty: its objective's λ and λ_b, rows weighted n^α as in the last fit."""
        o = self.objective
        return Penalty(o.l2, o.l2, o.l2_bias, *self._preference_weights)

    def ranking_factors(self) -> Factors:
        """The head whose scores ``score`` and ``recommend`` rank by."""
        return self.preference_factors() if self.has_preference_head else self.factors()

    def forward(self, batch: Batch) -> LossTerms:
        """J's terms on one batch, as the objective defines them (``model(batch)``; DDP can wrap it)."""
        return self.objective.loss(self, batch)

    def training_batches(self, layout, batch_size: int | None, generator: torch.Generator) -> Iterator[Batch]:
        """The epoch's batches, drawn by the objective (used by the trainer)."""
        if self._sparse is not None:
            self._sparse.new_epoch()
        return self.objective.batches(layout, batch_size, generator)

    def als_sweep(self, data, cg_steps: int = 0) -> LossTerms:
        """One alternating-least-squares sweep, as the objective defines it; J after it (used by the trainer)."""
        return self.objective.als_sweep(self, data, cg_steps)

    def validation_metrics(self, fit_part: Ratings, val: Ratings, device: torch.device) -> dict[str, float]:
        """What the objective validates on, measured on ``val`` (used by the trainer)."""
        return self.objective.validate(self, fit_part, val, device)

    def finish(self, fit_part: Ratings, val: Ratings | None, device: torch.device) -> None:
        """Called by the trainer after the last epoch; nothing to add here (`CollaborativeFiltering`
        fits its neighbourhood blend)."""
        self.final_validation = {}

    # -- prediction -----------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.theta.device

    def check_predicts_ratings(self) -> None:
        if not self.predicts_ratings:
            raise NotSupported(
                f"{self.name} with the {self.objective.name} objective ranks movies but does not predict ratings: "
                "use score() or recommend(), or a model whose objective is squared or joint"
            )

    def predict_vectors(self, theta: Tensor, user_bias: Tensor | None, items: Tensor) -> Tensor:
        """Ratings (n,) for users given by rating-head vectors θ (n, k) and biases (n,) against item codes (n,)."""
        self.check_predicts_ratings()
        with torch.no_grad():
            items = items.to(self.device)
            pred = (theta.to(self.device) * self.item_table.index_select(0, items)).sum(dim=1)  # (n,)
            if self.use_bias:
                pred = pred + self.mean + user_bias.to(self.device) + self.item_bias.index_select(0, items)
        return self.clip(pred) if self.clip_predictions else pred

    def score_vectors(self, theta: Tensor, user_bias: Tensor | None) -> Tensor:
        """Unclipped ranking scores (n, n_items) for users given by ranking-head vectors θ (n, k) and biases (n,)."""
        f = self.ranking_factors()
        with torch.no_grad():
            scores = theta.to(self.device) @ f.x.T  # (n, n_items)
            if f.biased:
                scores += (f.mean + user_bias.to(self.device))[:, None] + f.item_bias[None, :]
        return scores

    def predict(self, users: Tensor, items: Tensor) -> Tensor:
        self.check_fitted()
        self.check_predicts_ratings()
        codes = users.to(self.device)
        bias = self.user_bias.index_select(0, codes) if self.use_bias else None  # index_select: faster than t[codes]
        return self.predict_vectors(self.theta.index_select(0, codes), bias, items).to(users.device)

    def score(self, users: Tensor) -> Tensor:
        self.check_fitted()
        f = self.ranking_factors()
        codes = users.to(self.device)
        return self.score_vectors(f.theta[codes], f.user_bias[codes] if f.biased else None).to(users.device)

    def fallback_predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """For pairs the model cannot score (code −1 = unknown): μ + b_u (known user) + b_i
        (known movie) with biases, the training mean without."""
        self.check_predicts_ratings()
        if not self.use_bias:
            return np.full(len(users), self.train_mean, dtype=np.float32)
        value = baseline_fallback(self.mean, self.user_bias, self.item_bias, users, items)
        return self.clip(torch.as_tensor(value)).numpy() if self.clip_predictions else value

    @property
    def user_vectors(self) -> Tensor | None:  # type: ignore[override]
        """The ranking head's user vectors (for similar users and KNN over them)."""
        return self.ranking_factors().theta.detach() if self.is_fitted else None

    @property
    def item_vectors(self) -> Tensor | None:  # type: ignore[override]
        """The ranking head's movie vectors ("similar movies" compares them by cosine)."""
        return self.ranking_factors().x.detach() if self.is_fitted else None

    def retrieval_vectors(self) -> tuple[Tensor, Tensor]:
        """(users (n_users, k'), items (n_items, k')) whose inner products are exactly ``score``:
        the ranking head with its biases folded in, for inner-product (``ip``) search."""
        self.check_fitted()
        theta, x = self.ranking_factors().augmented()
        return theta.detach(), x.detach()

    # -- fold-in --------------------------------------------------------------------------
    def fold_in(self, items: Any, ratings: Any, users: Any | None = None) -> FoldedUsers:
        """New users' vectors from their ratings, the item side frozen (closed-form ridge).

        ``items`` are item codes and ``ratings`` their values; ``users`` numbers the new users
        0..n-1 (omitted: all ratings belong to one new user). Returns a `FoldedUsers` that
        predicts, scores and recommends for them, as the objective defines (`NotSupported` where
        it cannot fold in).
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
            return self.objective.fold_in(self, items, values, users, n_users)

    def fold_in_head(
        self, f: Factors, pen: Penalty, l2_exponent: float, items: Tensor, values: Tensor, users: Tensor,
        n_users: int, w0: float | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """(θ (n_users, k), bias (n_users,) or None) of new users in one head, its item side frozen."""
        x = f.x.detach()
        n_items, rank = x.shape
        reg = torch.full((rank,), pen.l2_user, device=self.device)
        if f.biased:
            x = torch.cat([x, torch.ones(n_items, 1, device=self.device)], dim=1)  # (n_items, k+1)
            reg = torch.cat([reg, torch.tensor([pen.l2_bias], device=self.device)])
            offset = f.mean.detach() + f.item_bias.detach()  # (n_items,)
        else:
            offset = torch.zeros(n_items, device=self.device)
        scale = count_weights(torch.bincount(users, minlength=n_users).cpu().numpy(), l2_exponent, self.device)
        z = solve_users(x, offset, reg, users, items, values, n_users, w0, scale).float()  # (n_users, f)
        return (z[:, :rank], z[:, rank]) if f.biased else (z, None)

    # -- plain-tensor state ---------------------------------------------------------------
    def state(self) -> dict[str, Tensor]:
        return {name: t.detach().cpu().clone() for name, t in self.state_dict().items()}

    def load_state(self, state: dict[str, Tensor]) -> FactorModel:
        """Restore ``state()`` (parameters take the stored shapes)."""
        expected = set(self.state_dict())
        if set(state) != expected:
            raise KeyError(f"{type(self).__name__} state needs {sorted(expected)}, got {sorted(state)}")
        for name, tensor in state.items():
            if name in self._parameters:
                self._parameters[name] = nn.Parameter(tensor.clone().to(self.device))
            elif name in self._buffers:
                self._buffers[name] = tensor.clone().to(self.device)
        if self.has_preference_head:
            phi, z, user_bias, item_bias = (state[name].to(self.device) for name in PREFERENCE_HEAD)
            if phi.dim() != 2 or z.dim() != 2 or phi.shape[1] != self.objective.rank or z.shape[1] != phi.shape[1]:
                raise ValueError(f"{type(self).__name__}: pref_theta {tuple(phi.shape)} and pref_x {tuple(z.shape)} "
                                 f"must have objective.rank = {self.objective.rank} columns")
            if user_bias.shape != phi.shape[:1] or item_bias.shape != z.shape[:1]:
                raise ValueError(f"{type(self).__name__}: pref_user_bias {tuple(user_bias.shape)} and pref_item_bias "
                                 f"{tuple(item_bias.shape)} must match pref_theta's and pref_x's rows")
            self._set_preference_head(phi, z, user_bias, item_bias)
        scale = self.target_scale
        if scale is not None and (scale.shape != (self.n_items,) or not bool(torch.all(torch.isfinite(scale) & (scale > 0)))):
            raise ValueError(f"{type(self).__name__}: target_scale {tuple(scale.shape)} must hold {self.n_items} "
                             "positive finite numbers, one per movie")
        return self


PREFERENCE_HEAD = ("pref_theta", "pref_x", "pref_user_bias", "pref_item_bias")  # its tensors in a state dict
PACKED_HEAD = ("pref_users", "pref_items")  # its parameters: the augmented tables it trains in


def _head_as_saved(model: FactorModel, state: dict[str, Tensor], prefix: str, _metadata) -> None:
    """``state_dict`` post-hook: the packed preference head appears as its four tensors (views of the
    tables), so a state dict names the same tensors whether or not the head is packed."""
    users, items = (state.pop(prefix + name) for name in PACKED_HEAD)
    if users.numel():
        state.update((prefix + name, t) for name, t in zip(PREFERENCE_HEAD, packed_views(users, items, model.objective.rank)))
    else:  # not fitted yet: empty placeholders
        state.update((prefix + name, users.new_zeros((0, 0) if name in PREFERENCE_HEAD[:2] else (0,))) for name in PREFERENCE_HEAD)


def _head_as_trained(model: FactorModel, state: dict[str, Tensor], prefix: str, *_args) -> None:
    """``load_state_dict`` pre-hook: the four tensors of a preference head are packed into the tables
    the module holds, then copied into them in place (the optimizer keeps its parameters)."""
    names = [prefix + name for name in PREFERENCE_HEAD]
    if all(name in state for name in names):
        phi, z, user_bias, item_bias = (state.pop(name) for name in names)
        state[prefix + PACKED_HEAD[0]], state[prefix + PACKED_HEAD[1]] = pack_head(phi, z, user_bias, item_bias)


def popularity_scale(counts: np.ndarray, exponent: float, device: torch.device | str) -> Tensor:
    """Each movie's target factor (n_i / m)^−exponent, m the median count of the rated movies
    (movies without ratings count as 1): the median movie keeps its targets, popular ones shrink."""
    rated = counts[counts > 0]
    median = float(np.median(rated)) if len(rated) else 1.0
    scale = (np.maximum(counts, 1).astype(np.float64) / median) ** -exponent
    return torch.as_tensor(scale, dtype=torch.float32, device=device)


def count_weights(counts: np.ndarray, exponent: float, device: torch.device | str) -> Tensor:
    """Per-row penalty weights n^exponent (rows without ratings count as 1)."""
    return torch.as_tensor(np.maximum(counts, 1).astype(np.float64) ** exponent, dtype=torch.float32, device=device)

