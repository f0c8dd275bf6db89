"""The two data layouts of the training loss and the mini-batches they deal out.

`DenseLayout` holds the ratings as dense masked tensors (Y, R) and deals blocks of whole
users; `IndexLayout` holds the rated (user, item, rating) triples and deals random chunks
of them. A batch of ``batch_size`` means about that many ratings in either layout; ``None``
is the full batch, the notes' plain gradient descent. `choose_layout` picks one by size.

Given a `Shard` (data-parallel training), a layout holds only that rank's users (dense) or
ratings (index) and deals, from the same seeded order as one process, that rank's part of
each batch: the parts of one batch over all ranks are the single-process batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from cfrec.data.ratings import Ratings
from cfrec.errors import ConfigError
from cfrec.train.distributed import Shard
from cfrec.train.sparse import BatchRows, batch_rows, table_rows


@dataclass(frozen=True)
class DenseBatch:
    """A block of users' full rating rows."""

    Y: Tensor  # (B, n_items) float ratings, 0 where unrated
    R: Tensor  # (B, n_items) float 0/1 mask of rated cells
    rows: Tensor | None  # (B,) user codes; None = every user, in code order
    fraction: float  # B / n_users: the block's share of the item-side penalty
    n_ratings: int


@dataclass(frozen=True)
class IndexBatch:
    """A chunk of rated triples with each one's share of its rows' regularization."""

    users: Tensor  # (n,) int64
    items: Tensor  # (n,) int64
    values: Tensor  # (n,) float32
    user_share: Tensor | None  # (n,) 1 / ratings of the user; None for the full batch
    item_share: Tensor | None  # (n,) 1 / ratings of the item
    fraction: float  # n / all ratings
    negatives: Tensor | None = None  # (n, m) sampled item codes per triple, for pairwise objectives

    @property
    def n_ratings(self) -> int:
        return len(self.users)

    def pattern(self, n_users: int, n_items: int) -> BatchRows:
        """The batch's user × item pattern over whole tables of ``n_users`` and ``n_items`` rows
        (`table_rows`, for steps that update every row): built on first use and kept with the batch,
        so a model's heads share it."""
        return self._kept("_pattern", lambda: table_rows(self.users, self.items, self.user_share, self.item_share,
                                                          self.fraction, n_users, n_items))

    def rows(self) -> BatchRows:
        """The batch's distinct users and items and its pattern over them (`batch_rows`, for row-sparse
        steps): built on first use and kept with the batch, so a model's heads share it."""
        return self._kept("_rows", lambda: batch_rows(self.users, self.items, self.user_share, self.item_share,
                                                       self.fraction))

    def _kept(self, name: str, build: Callable[[], BatchRows]) -> BatchRows:
        built = self.__dict__.get(name)
        if built is None:
            built = build()
            object.__setattr__(self, name, built)  # a cache, not a field: frozen, equality unchanged
        return built


Batch = DenseBatch | IndexBatch


class DenseLayout:
    """Dense (Y, R) of the training matrix on ``device``; batches are blocks of users.

    With a ``shard``, only the rows of the shard's users (codes ``rank::world_size``).
    """

    name = "dense"

    def __init__(self, train: Ratings, device: torch.device | str = "cpu", shard: Shard | None = None):
        self.n_users, self.n_ratings = train.n_users, len(train)  # of all shards: they set the batches
        self.shard = shard
        if shard is None:
            Y, R = train.to_dense(device)
            self.rows, self.n_held = None, len(train)  # every user, in code order
        else:
            held = train.subset(shard.owns(train.users))
            self.rows = torch.as_tensor(shard.rows(train.n_users), device=device)  # (n_rows,) user codes
            Y, R = _dense_rows(held, len(self.rows), shard, device)
            self.n_held = len(held)
        self.Y, self.R = Y, R.float()  # (n_rows, n_items) each

    def rows_per_batch(self, batch_size: int | None) -> int:
        """Users per block so that a block holds about ``batch_size`` ratings."""
        if batch_size is None or batch_size >= self.n_ratings:
            return self.n_users
        return max(1, round(batch_size * self.n_users / self.n_ratings))

    def n_batches(self, batch_size: int | None) -> int:
        return math.ceil(self.n_users / self.rows_per_batch(batch_size))

    def batches(self, batch_size: int | None, generator: torch.Generator) -> Iterator[DenseBatch]:
        rows_per = self.rows_per_batch(batch_size)
        if rows_per >= self.n_users:
            yield DenseBatch(self.Y, self.R, self.rows, len(self.Y) / self.n_users, self.n_held)
            return
        order = torch.randperm(self.n_users, generator=generator).to(self.Y.device)
        for rows in order.split(rows_per):
            rows = rows.sort().values  # (B,) ascending rows read memory in order
            if self.shard is not None:
                rows = rows[self.shard.owns(rows)]  # the block's users held here
            held = rows if self.shard is None else self.shard.local(rows)
            R = self.R[held]  # (B, n_items)
            yield DenseBatch(self.Y[held], R, rows, len(rows) / self.n_users, int(R.sum()))


class IndexLayout:
    """The rated triples as tensors on ``device``; batches are random chunks of them.

    With a ``shard``, only the shard's ratings (rows ``rank::world_size`` of ``train``); the
    penalty shares still count every rating of a user or item, on whichever rank it lives.
    """

    name = "index"

    def __init__(self, train: Ratings, device: torch.device | str = "cpu", shard: Shard | None = None):
        held = train if shard is None else train.subset(shard.rows(len(train)))
        users, items, values = held.to_tensors(device)  # (n_held,) each
        # one 12-byte row per rating (user, item, the value's bits), so that an epoch's shuffle gathers
        # one row where five columns cost five cache misses a rating: 0.34 s against 1.22 s at 22.6M
        self.triples = torch.stack([users.int(), items.int(), values.float().view(torch.int32)], dim=1)  # (n_held, 3)
        n_u = np.maximum(train.user_counts(), 1).astype(np.float32)
        n_i = np.maximum(train.item_counts(), 1).astype(np.float32)
        self.user_share = torch.as_tensor(1.0 / n_u, device=device)  # (n_users,) a rating's share of its user's penalty
        self.item_share = torch.as_tensor(1.0 / n_i, device=device)  # (n_items,)
        self.n_ratings, self.n_held = len(train), len(held)  # all shards' count sets the batches
        self.shard = shard

    def n_batches(self, batch_size: int | None) -> int:
        return 1 if batch_size is None else math.ceil(self.n_ratings / batch_size)

    def batches(
        self, batch_size: int | None, generator: torch.Generator, *,
        negative_pool: Tensor | None = None, n_negatives: int = 0,
    ) -> Iterator[IndexBatch]:
        """The epoch's batches; with ``n_negatives``, each triple also carries that many item
        codes drawn uniformly from ``negative_pool`` (drawn for every position of the epoch's
        global order, so every shard and a resumed run see the same ones)."""
        full = batch_size is None or batch_size >= self.n_ratings
        device = self.triples.device
        order = None if full else torch.randperm(self.n_ratings, generator=generator, dtype=torch.int32).to(device)
        negatives = None
        if n_negatives:
            draws = torch.randint(len(negative_pool), (self.n_ratings, n_negatives), generator=generator)
            negatives = negative_pool[draws].to(device)  # (n_ratings, m), by position in the order
        if full:
            held = None if self.shard is None else torch.as_tensor(self.shard.rows(self.n_ratings), device=device)
            negatives = negatives if negatives is None or held is None else negatives[held]
            users, items, values = self._columns(self.triples)
            yield IndexBatch(users, items, values, None, None, self.n_held / self.n_ratings, negatives)
            return
        if self.shard is not None:
            yield from self._held_batches(order.long(), batch_size, negatives)
            return
        shuffled = self.triples.index_select(0, order)  # one shuffled copy per epoch, then contiguous slices
        for start in range(0, self.n_ratings, batch_size):
            negs = None if negatives is None else negatives[start : start + batch_size]
            yield self._batch(shuffled[start : start + batch_size], negs)

    def _held_batches(self, order: Tensor, batch_size: int, negatives: Tensor | None) -> Iterator[IndexBatch]:
        """The shard's part of each batch of the global ``order`` (n,), in the order of ``order``."""
        held = self.shard.owns(order)  # (n,) positions of the global order whose rating lives here
        batch_of = torch.nonzero(held).squeeze(1).div(batch_size, rounding_mode="floor")  # (n_held,)
        sizes = torch.bincount(batch_of, minlength=self.n_batches(batch_size)).tolist()
        local = self.shard.local(order[held])  # (n_held,) local rows in global batch order
        parts = self.triples.index_select(0, local).split(sizes)
        negs = [None] * len(sizes) if negatives is None else negatives[held].split(sizes)
        for part, neg in zip(parts, negs):
            yield self._batch(part, neg)

    def _batch(self, triples: Tensor, negatives: Tensor | None) -> IndexBatch:
        """The `IndexBatch` of ``triples`` (m, 3), each with its share of its rows' penalty."""
        users, items, values = self._columns(triples)
        return IndexBatch(users, items, values, self.user_share.index_select(0, users),
                          self.item_share.index_select(0, items), len(users) / self.n_ratings, negatives)

    @staticmethod
    def _columns(triples: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(users int64, items int64, values float32) of packed ``triples`` (m, 3)."""
        return triples[:, 0].long(), triples[:, 1].long(), triples[:, 2].view(torch.float32).contiguous()


def choose_layout(
    layout: str, train: Ratings, device: torch.device | str, dense_max_cells: int, batch_size: int | None,
    shard: Shard | None = None, allowed: tuple[str, ...] = ("dense", "index"),
) -> DenseLayout | IndexLayout:
    """``dense``, ``index`` or ``auto``, holding all of ``train`` or ``shard``'s part of it.

    ``auto`` takes dense for full-batch descent while users × items ≤ ``dense_max_cells`` (one
    matmul beats gathering every rating), and index for mini-batches: its random batches update
    every user many times per epoch, where a dense block of users updates each of them once.
    A shard decides as one process would, so both train alike. ``allowed`` are the layouts the
    model's loss is defined on.
    """
    if layout == "auto":
        fits = train.n_users * train.n_items <= dense_max_cells and "dense" in allowed
        layout = "dense" if fits and (batch_size is None or batch_size >= len(train)) else "index"
    elif layout in ("dense", "index") and layout not in allowed:
        raise ConfigError("train.layout", f"{layout!r}: this model's objective trains on {' or '.join(allowed)} only")
    if layout == "dense":
        return DenseLayout(train, device, shard)
    if layout == "index":
        return IndexLayout(train, device, shard)
    raise ConfigError("layout", f"must be 'auto', 'dense' or 'index', got {layout!r}")


def _dense_rows(held: Ratings, n_rows: int, shard: Shard, device: torch.device | str) -> tuple[Tensor, Tensor]:
    """Dense (Y, R) (n_rows, n_items) of a shard's users from their ratings ``held``."""
    users, items, values = held.to_tensors(device)
    Y = torch.zeros(n_rows, held.n_items, dtype=torch.float32, device=device)
    R = torch.zeros(n_rows, held.n_items, dtype=torch.bool, device=device)
    rows = shard.local(users)
    Y[rows, items] = values
    R[rows, items] = True
    return Y, R
