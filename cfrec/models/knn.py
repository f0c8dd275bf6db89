"""User- and item-based neighbourhood models: the reference notebook's SVD-KNN and a LensKit-style KNN.

Every user (item) gets a list of its most similar users (items) once, when the model is fitted or
loaded; predictions then gather those lists for a whole batch of pairs, and top-K scores are
sparse matrix products. docs/knn.md states every formula and gives measured numbers.

``mode="reference"`` is the reference notebook's formula. User-based, for the pair (u, i), with
N(u) the k users whose truncated-SVD vectors are most cosine-similar to u's (u excluded, k = 100
by default) and N_i(u) those of them who rated i::

    r̂(u, i) = Σ_{v ∈ N_i(u)} s(u, v) · r(v, i) / Σ_{v ∈ N_i(u)} s(u, v),   0.0 when N_i(u) is empty

(no clipping; 0.0 too if the similarities sum to exactly 0). Item-based is the mirror image:
N(i) the k items most similar to i, N_u(i) those u rated, r(u, j) in place of r(v, i).

``mode="improved"`` (default) is LensKit's neighbourhood formula with a bias baseline
b(u, i) = μ + b_u + b_i (`fit_biases`, as `BiasBaseline`) and two classic refinements. With
``similarity="ratings"`` (default), s(u, v) is the cosine of the users' baseline residual rows
e(u, ·) = r(u, ·) − b(u, ·) (zero where unrated), scaled by c / (c + β) where c is the number of
items both rated and β = ``support_shrinkage`` (``similarity="vectors"``: cosine of the SVD or given
vectors). Each user keeps its ``candidates`` most similar users with s > ``min_similarity``; for
(u, i), N_i(u) is the k most similar of them who rated i, and::

    r̂(u, i) = b(u, i) + Σ_{v ∈ N_i(u)} w(u, v) · (r(v, i) − b(v, i)) / (Σ_{v ∈ N_i(u)} |w(u, v)| + λ)

with w = sign(s) · |s|^ρ, ρ = ``amplification`` (weights the closest neighbours more) and
λ = ``shrinkage``. Where fewer than ``min_support`` neighbours qualify the prediction is the
baseline alone; results are clipped to the training rating range. Item-based mirrors it (items
similar to i among those u rated; k = 50 user-based, 30 item-based by default). Defaults were chosen on a validation split carved from the
ML-1M training data and checked on ML-100K.

Ranking (`score`, hence `recommend` and Recall@K): ``ranking="aggregate"`` (default, both modes)
scores an item by the notebook's neighbour aggregation Σ_{v ∈ N(u)} s(u, v) · r(v, i) (item-based:
Σ_{j ∈ N(i)} s(i, j) · r(u, j)), which ranks far better than predicted ratings. N(u) is the first
k of each list with vector similarity; with rating similarity it is the 100 users (items) whose raw
rating rows are most cosine-similar (built at fit, or on the first ranking after loading; residual
similarities rank worse); ``ranking="prediction"`` scores by the predicted rating (unclipped in the
improved mode; there it evaluates `predict` on the whole grid, so it is slow on large catalogs).

Users and items without train ratings have no neighbours and are nobody's neighbour: the
reference mode predicts 0.0 for them, the improved mode the baseline.

A checkpoint (`state`) holds the training ratings as CSR, the biases, and the neighbour lists
(no similarity search is repeated on loading; a checkpoint from before rating-similarity lists were
kept rebuilds them from ratings and biases); SVD vectors (`user_vectors`) are recomputed on first
use unless they were given as ``embeddings``.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from cfrec.data.ratings import Ratings
from cfrec.device import resolve_device
from cfrec.errors import CheckpointError, ConfigError
from cfrec.index import PRESETS, HNSWIndex, as_matrix
from cfrec.models.base import Recommender
from cfrec.models.baseline import BiasBaseline, baseline_fallback, fit_biases
from cfrec.models.neighbors import neighbor_lists, rating_neighbors
from cfrec.models.rating_table import CellTable
from cfrec.models.svd import matrix_embeddings, normalize_rows
from cfrec.validation import check_choice, check_int, check_number

log = logging.getLogger(__name__)

MODES = ("improved", "reference")
SIMILARITIES = ("ratings", "vectors")
RANKINGS = ("aggregate", "prediction")
METHODS = ("exact", "hnsw")
HNSW_KEYS = ("M", "ef_construction", "ef", "seed", "num_threads")
DEFAULT_K = {("reference", "user"): 100, ("reference", "item"): 100, ("improved", "user"): 50, ("improved", "item"): 30}
RANKING_NEIGHBORS = 100  # list length of the improved mode's aggregate ranking (rating similarity)
PAIRS_PER_CHUNK = 1 << 20  # gathered (pair, neighbour) cells per prediction chunk
STATE_KEYS = ("rating_ptr", "rating_items", "rating_values", "mean", "user_bias", "item_bias")
LEGACY_KEYS = ("users", "items", "values")  # checkpoints written before the CSR layout


class _NeighborhoodKNN(Recommender):
    """Shared body of `UserKNN` and `ItemKNN`; ``entity`` says whose neighbours are used."""

    entity: ClassVar[str] = "user"

    def __init__(
        self,
        k: int | None = None,
        dim: int = 128,
        neighbors: str = "exact",
        mode: str = "improved",
        shrinkage: float = 0.0,
        min_support: int = 1,
        ranking: str = "aggregate",
        hnsw: str | dict[str, Any] = "default",
        seed: int = 42,
        device: str = "cpu",
        dense_mb: float = 256.0,
        embeddings: Recommender | tuple[Any, Any] | None = None,
        similarity: str = "ratings",
        candidates: int = 300,
        min_similarity: float = 0.0,
        support_shrinkage: float = 50.0,
        amplification: float = 1.5,
    ):
        """Formulas in the module docstring. Arguments (plain JSON values, checked here):

        ``k`` neighbours per prediction (None: 100 in the reference mode, where they are the k most
        similar overall; in the improved mode, where they are the k most similar that rated the
        item, 50 user-based and 30 item-based); ``dim`` SVD components and ``seed`` of the SVD;
        ``neighbors`` "exact" (batched matmul + topk on ``device``) or "hnsw" (`HNSWIndex` with the
        preset name or parameter dict ``hnsw``) to search vectors; ``mode`` "improved" or "reference"; ``ranking`` "aggregate" or
        "prediction"; ``device`` for neighbour search and predictions; ``dense_mb`` bounds the dense
        rating table of the lookups. Improved mode only: ``similarity`` "ratings" (cosine of
        baseline residuals) or "vectors" (cosine of SVD / given vectors), ``candidates`` neighbours
        kept per user (item), ``min_similarity`` floor, ``support_shrinkage`` β, ``amplification``
        ρ, ``shrinkage`` λ and ``min_support``. ``embeddings`` (a fitted model exposing
        ``user_vectors`` and ``item_vectors``, or a (user matrix, item matrix) pair) replaces the
        SVD: it is data, not configuration, so `config` leaves it out and `state` keeps the vectors.
        """
        if k is not None:
            check_int("k", k, 1)
        check_int("dim", dim, 1)
        check_choice("neighbors", neighbors, METHODS)
        check_choice("mode", mode, MODES)
        check_number("shrinkage", shrinkage, 0)
        check_int("min_support", min_support, 1)
        check_choice("ranking", ranking, RANKINGS)
        check_int("seed", seed, 0)
        check_number("dense_mb", dense_mb, 0)
        check_choice("similarity", similarity, SIMILARITIES)
        check_int("candidates", candidates, 1)
        check_number("min_similarity", min_similarity, -1)
        check_number("support_shrinkage", support_shrinkage, 0)
        check_number("amplification", amplification, 0)
        self._hnsw_params = _hnsw_params(hnsw)
        self.k, self.mode = k, mode
        self._k = DEFAULT_K[mode, self.entity] if k is None else k  # neighbours per prediction
        self.similarity, self.candidates, self.min_similarity = similarity, candidates, float(min_similarity)
        self.support_shrinkage, self.amplification = float(support_shrinkage), float(amplification)
        if mode == "improved" and similarity == "ratings" and embeddings is not None:
            raise ConfigError("similarity", "embeddings are given but similarity=ratings ignores vectors; set "
                                            "similarity=vectors (or mode=reference) to use them")
        list_length = self._list_length()
        ef = self._hnsw_params.get("ef")
        if neighbors == "hnsw" and ef is not None and ef < list_length:
            what = "k" if mode == "reference" else "candidates"
            raise ConfigError("hnsw", f"ef={ef} is below {what}={list_length}: the search beam must hold them all")
        if mode == "improved" and similarity == "ratings" and neighbors == "hnsw":
            raise ConfigError("neighbors", "hnsw searches vectors; the improved mode's similarity=ratings is an "
                                           "exact sparse search (set similarity=vectors to use hnsw)")
        self.device = resolve_device(device, present=False)  # the run checked that its device exists
        self.dim, self.neighbors = dim, neighbors
        self.shrinkage, self.min_support, self.ranking = float(shrinkage), min_support, ranking
        self.hnsw, self.seed, self.dense_mb = hnsw, seed, dense_mb
        self.embeddings = embeddings
        self._state: dict[str, Tensor] = {}
        self._vectors: tuple[Tensor, Tensor] | None = None

    # -- protocol -----------------------------------------------------------------------------
    def validate(self, train: Ratings) -> None:
        users, items = int((train.user_counts() > 0).sum()), int((train.item_counts() > 0).sum())
        available = users if self.entity == "user" else items
        if self._k >= available:
            raise ConfigError("k", f"asks for {self._k} neighbours, but only {available} {self.entity}s have "
                                   "training ratings (k must be smaller)")
        if self.embeddings is None and self.dim > min(users, items):  # the SVD vectors (also behind similar_*)
            raise ConfigError("dim", f"asks for {self.dim} SVD components of a {users} x {items} rating matrix "
                                     f"(at most {min(users, items)})")

    def fit(self, train: Ratings) -> _NeighborhoodKNN:
        self.validate(train)
        self._remember_shape(train)
        bias = BiasBaseline()
        mean, user_bias, item_bias = fit_biases(train, bias.reg_user, bias.reg_item, bias.n_sweeps)
        ratings = sp.csr_matrix((train.values.astype(np.float32), (train.users, train.items)),
                                shape=(train.n_users, train.n_items))
        ratings.sum_duplicates()
        state = {
            "rating_ptr": torch.as_tensor(ratings.indptr.astype(np.int64)),
            "rating_items": torch.as_tensor(ratings.indices.astype(np.int32)),
            "rating_values": _compact_values(ratings.data),
            "mean": torch.tensor(mean), "user_bias": torch.as_tensor(user_bias, dtype=torch.float32),
            "item_bias": torch.as_tensor(item_bias, dtype=torch.float32),
        }
        vectors = None
        if self._uses_vectors():
            user_vectors, item_vectors = self._fit_vectors(ratings)
            vectors = (torch.as_tensor(user_vectors), torch.as_tensor(item_vectors))
            own = user_vectors if self.entity == "user" else item_vectors
            counts = np.diff(ratings.indptr) if self.entity == "user" else np.bincount(ratings.indices, minlength=ratings.shape[1])
            neighbors, sims = neighbor_lists(own, counts > 0, self._list_length(), method=self.neighbors,
                                             hnsw=self._hnsw_params, device=self.device)
            state["neighbors"], state["similarities"] = neighbors.to(torch.int32), sims
            if self.embeddings is not None:  # not recomputable from the ratings
                state["user_vectors"], state["item_vectors"] = vectors
        self.load_state(state)
        self._vectors = vectors or self._vectors  # computed already: no second SVD on first use
        if self.ranking == "aggregate":
            self._aggregate_weights()  # part of fitting; a loaded model builds it on its first ranking
        return self

    def fallback_predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """For pairs with an unknown user or movie (code −1): the baseline of what is known,
        μ + b_u (known user) + b_i (known movie), clipped to the rating range."""
        self.check_fitted()
        value = baseline_fallback(self._mean, self._user_bias, self._item_bias, users, items)
        return self.clip(torch.as_tensor(value)).numpy()

    def predict(self, users: Tensor, items: Tensor) -> Tensor:
        self.check_fitted()
        out_device = users.device
        users, items = users.to(self.device), items.to(self.device)
        # pairs sorted by the rating-table row they read (the item for user-based, the user for
        # item-based), so consecutive lookups hit the same cached row
        table_rows = items if self.entity == "user" else users
        order = torch.argsort(table_rows, stable=True)
        users, items = users[order], items[order]
        step = max(1, PAIRS_PER_CHUNK // max(1, self._neighbors.shape[1]))
        bounds = chunk_bounds(table_rows[order], step, self._table.rows_per_lookup)
        pred = torch.empty(len(users), device=self.device)
        for start, end in itertools.pairwise(bounds):
            pred[order[start:end]] = self._predict_chunk(users[start:end], items[start:end])
        return pred.to(out_device)

    def score(self, users: Tensor) -> Tensor:
        """(len(users), n_items) ranking scores (see ``ranking``)."""
        self.check_fitted()
        codes = users.cpu().numpy()
        if self.ranking == "aggregate":
            return self._neighbor_sum(codes, self._aggregate_weights(), self._ratings).to(users.device)
        if self.mode == "improved":  # the k-among-raters cap is not a sparse product: predict the grid
            return _grid_predictions(self, users)
        num = self._neighbor_sum(codes, self._weights, self._values)
        den = self._neighbor_sum(codes, self._weights, self._rated)
        count = self._neighbor_sum(codes, (self._weights != 0).astype(np.float32), self._rated)
        all_items = torch.arange(self.n_items, device=self.device)
        return self._combine(num, den, count, users.to(self.device)[:, None], all_items).to(users.device)

    def config(self) -> dict[str, Any]:
        return {"k": self.k, "dim": self.dim, "neighbors": self.neighbors, "mode": self.mode,
                "shrinkage": self.shrinkage, "min_support": self.min_support, "ranking": self.ranking,
                "hnsw": self.hnsw, "seed": self.seed, "device": str(self.device), "dense_mb": self.dense_mb,
                "similarity": self.similarity, "candidates": self.candidates, "min_similarity": self.min_similarity,
                "support_shrinkage": self.support_shrinkage, "amplification": self.amplification}

    def state(self) -> dict[str, Tensor]:
        """What `load_state` needs, on the CPU (a checkpoint never pins a device)."""
        return {name: t.cpu() for name, t in self._state.items()}

    def load_state(self, state: dict[str, Tensor], device: str | torch.device | None = None) -> _NeighborhoodKNN:
        """Restore `state` (tensors on any device) onto ``device`` (default: the model's device),
        rebuilding the lookup tables and, for rating similarity, the neighbour lists."""
        if device is not None:
            self.device = torch.device(device)
        state = _upgrade_legacy(self, dict(state))
        missing = sorted(set(STATE_KEYS) - set(state))
        if self._uses_vectors() and "neighbors" not in state:
            missing.append("neighbors")
        if missing:
            raise CheckpointError(f"{type(self).__name__} state lacks {', '.join(missing)}")
        cpu = {name: t.detach().cpu() for name, t in state.items()}
        self._state = cpu
        self._mean = cpu["mean"].float().to(self.device)
        self._user_bias, self._item_bias = cpu["user_bias"].to(self.device), cpu["item_bias"].to(self.device)
        self.n_users, self.n_items = len(cpu["user_bias"]), len(cpu["item_bias"])
        shape = (self.n_users, self.n_items)
        self._ratings = sp.csr_matrix((cpu["rating_values"].float().numpy(), cpu["rating_items"].numpy(),
                                       cpu["rating_ptr"].numpy()), shape=shape)  # (users, items)
        users = np.repeat(np.arange(self.n_users), np.diff(self._ratings.indptr))
        residuals = self._ratings.data - (float(cpu["mean"]) + cpu["user_bias"].numpy()[users]
                                          + cpu["item_bias"].numpy()[self._ratings.indices])
        self._residuals = sp.csr_matrix((residuals.astype(np.float32), self._ratings.indices, self._ratings.indptr), shape=shape)
        # what predictions average: ratings (reference) or residuals from the baseline (improved)
        self._values = self._ratings if self.mode == "reference" else self._residuals
        self._rated = sp.csr_matrix((np.ones(self._ratings.nnz, np.float32), self._ratings.indices,
                                     self._ratings.indptr), shape=shape)
        self._vectors = (cpu["user_vectors"], cpu["item_vectors"]) if "user_vectors" in cpu else None
        if "neighbors" in cpu:
            neighbors, sims = cpu["neighbors"].long(), cpu["similarities"].float()
        else:  # rating similarity, fitted now (or a checkpoint from before lists were kept): computed once
            rows = self._residuals if self.entity == "user" else self._residuals.T.tocsr()
            neighbors, sims = rating_neighbors(rows, self.candidates, min_similarity=self.min_similarity,
                                               support_shrinkage=self.support_shrinkage, device=self.device)
            width = int((neighbors >= 0).sum(1).max()) if len(neighbors) else 0  # kept: the filled columns only
            neighbors, sims = neighbors[:, :width].clone(), sims[:, :width].clone()  # own storage: saved alone
            cpu["neighbors"], cpu["similarities"] = neighbors.to(torch.int32), sims
        self._set_neighbors(neighbors, sims)
        # lookups read one row per pair: the item's raters (user-based) or the user's ratings (item-based)
        layout = self._values.T if self.entity == "user" else self._values
        self._table = CellTable(layout, device=self.device, dense_mb=self.dense_mb)
        return self

    @property
    def user_vectors(self) -> Tensor | None:  # type: ignore[override]
        """Unit user vectors (the SVD's unless given as ``embeddings``), computed on first use."""
        return self._embedding_pair()[0] if self.is_fitted else None

    @property
    def item_vectors(self) -> Tensor | None:  # type: ignore[override]
        """Unit item vectors (the SVD's unless given as ``embeddings``), computed on first use."""
        return self._embedding_pair()[1] if self.is_fitted else None

    # -- internals ----------------------------------------------------------------------------
    def _uses_vectors(self) -> bool:
        """Whether neighbours come from vectors (the notebook's SVD, or given embeddings)."""
        return self.mode == "reference" or self.similarity == "vectors"

    def _list_length(self) -> int:
        """Neighbours kept per user (item): k in the reference mode, ``candidates`` improved."""
        return self._k if self.mode == "reference" else max(self.candidates, self._k)

    def _embedding_pair(self) -> tuple[Tensor, Tensor]:
        if self._vectors is None:  # the SVD of the stored ratings: deterministic for the seed
            user_vectors, item_vectors = matrix_embeddings(self._ratings, self.dim, self.seed)
            self._vectors = (torch.as_tensor(user_vectors), torch.as_tensor(item_vectors))
        return self._vectors

    def _fit_vectors(self, ratings: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        """(user vectors, item vectors), unit rows: the given embeddings, else the SVD's."""
        if self.embeddings is None:
            return matrix_embeddings(ratings, self.dim, self.seed)
        source = self.embeddings
        if isinstance(source, Recommender):
            pair = (source.user_vectors, source.item_vectors)
            if pair[0] is None or pair[1] is None:
                raise ConfigError("embeddings", f"{type(source).__name__} exposes no user_vectors/item_vectors")
        elif isinstance(source, (tuple, list)) and len(source) == 2:
            pair = tuple(source)
        else:
            raise ConfigError("embeddings", f"must be a fitted model or a (users, items) pair, got {type(source).__name__}")
        vectors = []
        for name, matrix, n in (("user", pair[0], ratings.shape[0]), ("item", pair[1], ratings.shape[1])):
            arr = as_matrix(matrix, f"embeddings ({name} vectors)")
            if len(arr) != n:
                raise ConfigError("embeddings", f"has {len(arr)} {name} vectors, the training data {n} {name}s")
            vectors.append(normalize_rows(arr))
        return vectors[0], vectors[1]

    def _set_neighbors(self, neighbors: Tensor, sims: Tensor) -> None:
        """Device lists for the lookups and the sparse weight matrix of the aggregate ranking."""
        n_entities = len(neighbors)
        # empty slots (-1) point at the table's never-rated sentinel column
        self._neighbors = torch.where(neighbors < 0, n_entities, neighbors).to(self.device, torch.int32)  # (n, m)
        self._sims = sims.to(self.device)
        if self.mode == "improved":
            keep = (neighbors >= 0) & (sims > self.min_similarity)
            weights = torch.sign(sims) * sims.abs() ** self.amplification
            self._pair_weights = torch.where(keep, weights, 0.0).to(self.device)  # w, 0 where unusable
        self._weights = None
        if self._uses_vectors():  # the aggregate ranking reads each list's first k
            head = min(self._k, neighbors.shape[1])
            self._weights = self._as_weights(neighbors[:, :head], sims[:, :head])

    def _as_weights(self, neighbors: Tensor, sims: Tensor) -> sp.csr_matrix:
        """Neighbour lists as the sparse matrix `_neighbor_sum` multiplies by."""
        weights = _weight_matrix(neighbors.numpy(), sims.numpy())  # row e = e's neighbours
        return weights if self.entity == "user" else weights.T.tocsr()

    def _aggregate_weights(self) -> sp.csr_matrix:
        """The aggregate ranking's neighbour matrix; with rating similarity, built on first use from
        the cosine of the raw rating rows (the exact form of the notebook's SVD cosine)."""
        if self._weights is None:
            rows = self._ratings if self.entity == "user" else self._ratings.T.tocsr()
            neighbors, sims = rating_neighbors(rows, RANKING_NEIGHBORS, device=self.device)
            self._weights = self._as_weights(neighbors, sims)
        return self._weights

    def _predict_chunk(self, users: Tensor, items: Tensor) -> Tensor:
        """Predictions for a chunk of pairs, gathering each row's neighbour list: (B,)."""
        own, other = (users, items) if self.entity == "user" else (items, users)
        # index_select, not advanced indexing, and float masks, not bool ones: several times faster on CPU
        values, rated = self._table.lookup(other[:, None], self._neighbors.index_select(0, own))  # (B, m) each
        if self.mode == "reference":
            sims = self._sims.index_select(0, own).mul_(rated)  # (B, k): similarities of neighbours that rated it
            return self._combine((sims * values).sum(1), sims.sum(1), sims.sign().abs_().sum(1), users, items)
        weights = self._pair_weights.index_select(0, own).mul_(rated)  # (B, m), most similar first
        used = weights.sign().abs_()  # 1.0 for a neighbour that rated it and may enter
        first_k = used.cumsum(1).neg_().add_(self._k + 1).clamp_(0.0, 1.0)  # 1.0 while at most k are used
        used.mul_(first_k)
        weights.mul_(first_k)
        num = (weights * values).sum(1)
        pred = self._combine(num, weights.abs_().sum(1), used.sum(1), users, items)
        return self.clip(pred)

    def _combine(self, num: Tensor, den: Tensor, count: Tensor, users: Tensor, items: Tensor) -> Tensor:
        """The mode's formula from the neighbour sums num = Σ s·value, den = Σ s (improved: Σ |w|)
        and count, over the neighbours that enter; users/items broadcast to their shape."""
        if self.mode == "reference":
            ok = (count > 0) & (den != 0)
            return torch.where(ok, num / torch.where(ok, den, 1.0), 0.0)
        ok = (count >= self.min_support) & (den + self.shrinkage > 0)
        base = self._mean + self._user_bias[users] + self._item_bias[items]
        return base + torch.where(ok, num / torch.where(ok, den + self.shrinkage, 1.0), 0.0)

    def _neighbor_sum(self, users: np.ndarray, weights: sp.csr_matrix, cells: sp.csr_matrix) -> Tensor:
        """(len(users), n_items) sums over neighbours of weight × cell, as one sparse product:
        Σ_v w(u, v) · cell(v, i) user-based, Σ_j w(i, j) · cell(u, j) item-based (``weights``
        then holds the transposed neighbour matrix)."""
        product = weights[users] @ cells if self.entity == "user" else cells[users] @ weights
        return torch.as_tensor(product.toarray(), device=self.device)


class UserKNN(_NeighborhoodKNN):
    """User-based KNN: a user's rating of an item from the k most similar users who rated it."""

    name = "user_knn"
    entity = "user"


class ItemKNN(_NeighborhoodKNN):
    """Item-based KNN: a user's rating of an item from their ratings of the k most similar items."""

    name = "item_knn"
    entity = "item"


def chunk_bounds(rows: Tensor, step: int, rows_per_chunk: int | None) -> list[int]:
    """Bounds of consecutive chunks of the sorted ``rows``, each at most ``step`` long and reading
    at most ``rows_per_chunk`` distinct rows (any number for None): [0, …, len(rows)]."""
    if step < 1 or (rows_per_chunk is not None and rows_per_chunk < 1):
        raise ValueError(f"chunks need step >= 1 and rows_per_chunk >= 1 (or None), got {step} and {rows_per_chunk}")
    n = len(rows)
    if rows_per_chunk is None or n == 0:
        return [*range(0, n, step), n]
    codes = rows.cpu().numpy()
    is_new = np.ones(n, dtype=bool)
    is_new[1:] = codes[1:] != codes[:-1]
    run = np.cumsum(is_new) - 1  # which distinct row each position reads
    run_starts = np.flatnonzero(is_new)
    bounds = [0]
    while bounds[-1] < n:
        start = bounds[-1]
        end = start + step
        first_outside = run[start] + rows_per_chunk
        if first_outside < len(run_starts):
            end = min(end, int(run_starts[first_outside]))
        bounds.append(min(end, n))
    return bounds


def _weight_matrix(neighbors: np.ndarray, sims: np.ndarray) -> sp.csr_matrix:
    """(n, n) CSR with row e holding e's neighbours and their similarities (empty slots dropped)."""
    n, k = neighbors.shape
    keep = neighbors >= 0
    rows = np.repeat(np.arange(n), k).reshape(n, k)[keep]
    return sp.csr_matrix((sims[keep], (rows, neighbors[keep])), shape=(n, n))


def _compact_values(values: np.ndarray) -> Tensor:
    """Ratings as float16 when that stores them exactly (stars, half stars), else float32."""
    half = values.astype(np.float16)
    exact = np.array_equal(half.astype(np.float32), values.astype(np.float32))
    return torch.as_tensor(half if exact else values.astype(np.float32))


def _grid_predictions(model: _NeighborhoodKNN, users: Tensor) -> Tensor:
    """`predict` over every (user, item) of ``users`` × all items, unclipped: (len(users), n_items)."""
    items = torch.arange(model.n_items, device=users.device)
    rating_range, model.rating_range = model.rating_range, None
    try:
        return model.predict(users.repeat_interleave(model.n_items), items.repeat(len(users))).view(len(users), -1)
    finally:
        model.rating_range = rating_range


def _upgrade_legacy(model: _NeighborhoodKNN, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A state written before the CSR layout (COO ratings, float vectors, k-long lists) in today's
    layout; an old improved model keeps its formula (vector similarity, every rater in the list)."""
    if not set(LEGACY_KEYS) <= set(state):
        return state
    users, items, values = (state.pop(name).cpu().numpy() for name in LEGACY_KEYS)
    ratings = sp.csr_matrix((values.astype(np.float32), (users, items)),
                            shape=(len(state["user_bias"]), len(state["item_bias"])))
    ratings.sum_duplicates()
    state["rating_ptr"] = torch.as_tensor(ratings.indptr.astype(np.int64))
    state["rating_items"] = torch.as_tensor(ratings.indices.astype(np.int32))
    state["rating_values"] = torch.as_tensor(ratings.data)
    if model.mode == "improved":
        model.similarity, model.amplification, model.min_similarity = "vectors", 1.0, -1.0
        model._k = model.candidates = int(state["neighbors"].shape[1])
    return state


def _hnsw_params(hnsw: str | dict[str, Any]) -> dict[str, Any]:
    """HNSWIndex arguments from a preset name or a parameter dict."""
    if isinstance(hnsw, str):
        if hnsw not in PRESETS:
            raise ConfigError("hnsw", f"unknown preset {hnsw!r}; choose one of {sorted(PRESETS)} or give a dict")
        return dict(PRESETS[hnsw])
    if not isinstance(hnsw, dict) or set(hnsw) - set(HNSW_KEYS):
        raise ConfigError("hnsw", f"must be a preset name or a dict with keys among {HNSW_KEYS}, got {hnsw!r}")
    params = {**PRESETS["default"], **hnsw}
    try:
        HNSWIndex(**params)  # validates the values without building anything
    except ConfigError as err:
        raise ConfigError("hnsw", str(err)) from err
    return params

