"""The two data layouts of the training loss and the mini-batches they deal out.

`DenseLayout` holds the ratings as dense masked tensors (Y, R) and deals blocks of whole
users; `IndexLayout` holds the rated (user, item, rating) triples and deals random chunks
of them. A batch of ``batch_size`` means about that many ratings in either layout; ``None``
is the full batch, the notes' plain gradient descent. `choose_layout` picks one by size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from cfrec.data.ratings import Ratings
from cfrec.errors import ConfigError


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

    @property
    def n_ratings(self) -> int:
        return len(self.users)


Batch = DenseBatch | IndexBatch


class DenseLayout:
    """Dense (Y, R) of the whole training matrix on ``device``; batches are blocks of users."""

    name = "dense"

    def __init__(self, train: Ratings, device: torch.device | str = "cpu"):
        Y, R = train.to_dense(device)
        self.Y, self.R = Y, R.float()  # (n_users, n_items) each
        self.n_users, self.n_ratings = train.n_users, len(train)

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
            yield DenseBatch(self.Y, self.R, None, 1.0, self.n_ratings)
            return
        order = torch.randperm(self.n_users, generator=generator).to(self.Y.device)
        for rows in order.split(rows_per):
            rows = rows.sort().values  # (B,) ascending rows read memory in order
            R = self.R[rows]  # (B, n_items)
            yield DenseBatch(self.Y[rows], R, rows, len(rows) / self.n_users, int(R.sum()))


class IndexLayout:
    """The rated triples as tensors on ``device``; batches are random chunks of them."""

    name = "index"

    def __init__(self, train: Ratings, device: torch.device | str = "cpu"):
        self.users, self.items, self.values = train.to_tensors(device)  # (n,) each
        n_u = np.maximum(train.user_counts(), 1).astype(np.float32)
        n_i = np.maximum(train.item_counts(), 1).astype(np.float32)
        self.user_share = torch.as_tensor(1.0 / n_u, device=device)[self.users]  # (n,)
        self.item_share = torch.as_tensor(1.0 / n_i, device=device)[self.items]  # (n,)
        self.n_ratings = len(train)

    def n_batches(self, batch_size: int | None) -> int:
        return 1 if batch_size is None else math.ceil(self.n_ratings / batch_size)

    def batches(self, batch_size: int | None, generator: torch.Generator) -> Iterator[IndexBatch]:
        if batch_size is None or batch_size >= self.n_ratings:
            yield IndexBatch(self.users, self.items, self.values, None, None, 1.0)
            return
        order = torch.randperm(self.n_ratings, generator=generator).to(self.users.device)
        # one shuffled copy per epoch, then contiguous slices (views): cheaper than gathering per batch
        columns = [t.index_select(0, order) for t in (self.users, self.items, self.values, self.user_share, self.item_share)]
        for start in range(0, self.n_ratings, batch_size):
            users, items, values, user_share, item_share = (t[start : start + batch_size] for t in columns)
            yield IndexBatch(users, items, values, user_share, item_share, len(users) / self.n_ratings)


def choose_layout(
    layout: str, train: Ratings, device: torch.device | str, dense_max_cells: int, batch_size: int | None,
) -> DenseLayout | IndexLayout:
    """``dense``, ``index`` or ``auto``.

    ``auto`` takes dense for full-batch descent while users × items ≤ ``dense_max_cells`` (one
    matmul beats gathering every rating), and index for mini-batches: its random batches update
    every user many times per epoch, where a dense block of users updates each of them once.
    """
    if layout == "auto":
        fits = train.n_users * train.n_items <= dense_max_cells
        layout = "dense" if fits and (batch_size is None or batch_size >= len(train)) else "index"
    if layout == "dense":
        return DenseLayout(train, device)
    if layout == "index":
        return IndexLayout(train, device)
    raise ConfigError("layout", f"must be 'auto', 'dense' or 'index', got {layout!r}")
