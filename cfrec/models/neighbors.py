"""Each user's (or item's) most similar users (items): by cosine of their vectors (exact or HNSW), or of
their sparse centred rating rows."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor
from tqdm.auto import tqdm

from cfrec.index import HNSWIndex, exact_search, similarity

log = logging.getLogger(__name__)

Method = Literal["exact", "hnsw"]


def neighbor_lists(
    vectors: np.ndarray, active: np.ndarray, k: int, *, method: Method = "exact",
    hnsw: dict[str, Any] | None = None, device: str | torch.device = "cpu", batch_size: int = 1024,
) -> tuple[Tensor, Tensor]:
    """The ``k`` most cosine-similar active rows of every active row, itself excluded.

    Returns (neighbours (n, k) int64, similarities (n, k) float32), most similar first. Inactive
    rows (``active`` false, or an all-zero vector) get no neighbours and are nobody's neighbour;
    missing slots hold −1 and similarity 0 (when fewer than ``k + 1`` rows are active).
    """
    n = len(vectors)
    rows = np.flatnonzero(active & (np.abs(vectors).sum(1) > 0))  # (m,) active row numbers
    neighbors = torch.full((n, k), -1, dtype=torch.int64)
    sims = torch.zeros((n, k), dtype=torch.float32)
    k_eff = min(k, len(rows) - 1)
    if k_eff < 1:
        log.warning("fewer than two rows with vectors: no neighbours at all")
        return neighbors, sims
    if k_eff < k:
        log.warning("only %d rows with vectors: %d neighbours each instead of k=%d", len(rows), k_eff, k)
    data, self_labels = vectors[rows], np.arange(len(rows))
    if method == "exact":
        labels, dist = exact_search(data, data, k_eff, space="cosine", exclude=self_labels, batch_size=batch_size, device=device)
    else:
        index = HNSWIndex(**{"space": "cosine", **(hnsw or {})}).build(data)
        labels, dist = index.query(data, k_eff, exclude=self_labels)
    found = labels >= 0
    row_codes = torch.as_tensor(rows)
    neighbors[row_codes, :k_eff] = torch.where(found, row_codes[labels.clamp(min=0)], -1)
    sims[row_codes, :k_eff] = torch.where(found, similarity(dist, "cosine"), 0.0)
    return neighbors, sims


def rating_neighbors(
    rows: sp.csr_matrix, m: int, *, min_similarity: float = 0.0, support_shrinkage: float = 0.0,
    device: str | torch.device = "cpu", block_mb: float = 256.0, workers: int | None = None,
) -> tuple[Tensor, Tensor]:
    """The ``m`` most cosine-similar rows of every row of a sparse (centred) rating matrix.

    ``rows`` is (n, d) CSR, one row per user (item), e.g. ratings minus a baseline. Similarities
    s(a, b) = ⟨x_a, x_b⟩ / (‖x_a‖ ‖x_b‖) come from blocks of the sparse product X_B Xᵀ, each at
    most ``block_mb`` MiB dense (never an n × n matrix). With ``support_shrinkage`` λ > 0 each is
    scaled by c / (c + λ), c the number of columns both rows hold (co-raters, co-rated items), so
    similarities resting on few common ratings shrink towards 0. Only those above
    ``min_similarity`` are kept. Returns (neighbours (n, m) int64, similarities (n, m) float32), most similar first, on
    the CPU; missing slots hold −1 and 0. All-zero rows get no neighbours and are nobody's.
    ``workers`` threads (default: torch's, the thread policy's) compute the blocks' sparse products
    ahead of their top-m (scipy releases the GIL in them), each block ``block_mb`` / ``workers``.
    """
    x = sp.csr_matrix(rows, dtype=np.float32)
    n = x.shape[0]
    norms = np.sqrt(np.asarray(x.multiply(x).sum(1), dtype=np.float64).ravel())  # (n,)
    inv = np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1.0), 0.0).astype(np.float32)
    m_eff = max(0, min(m, n - 1))
    neighbors = torch.full((n, m), -1, dtype=torch.int64)
    sims = torch.zeros((n, m), dtype=torch.float32)
    if m_eff == 0:
        return neighbors, sims
    cosines = _GramProduct(sp.csr_matrix(sp.diags(inv) @ x), device, block_mb)  # of unit rows (zero rows stay zero)
    co_counts = None
    if support_shrinkage > 0:  # co-rating counts: the same product of the 0/1 pattern
        present = x.copy()
        present.data[:] = 1.0
        co_counts = _GramProduct(present, device, block_mb)
    workers = max(1, torch.get_num_threads() if workers is None else workers)
    block = max(1, _columns_in(block_mb / workers, n))
    products = [cosines] if co_counts is None else [cosines, co_counts]
    starts = range(0, n, block)
    # a bar where it takes a while (ML-25M's movies: 52 blocks, minutes), on a terminal only
    bar = tqdm(_computed_ahead(products, starts, n, workers), total=len(starts), desc="similarities", unit="block",
               leave=False, disable=True if len(starts) < 8 else None)
    for start, stop, (dense, *common) in bar:  # (B, n) each
        if common:
            dense *= common[0] / (common[0] + support_shrinkage)
        dense[torch.arange(stop - start), torch.arange(start, stop)] = -np.inf  # never one's own neighbour
        top = torch.topk(dense, m_eff, dim=1)  # sorted, most similar first
        keep = top.values > min_similarity
        neighbors[start:stop, :m_eff] = torch.where(keep, top.indices, -1).cpu()
        sims[start:stop, :m_eff] = torch.where(keep, top.values, 0.0).float().cpu()
    return neighbors, sims


def _computed_ahead(products: list[_GramProduct], starts: range, n: int,
                    workers: int) -> Iterator[tuple[int, int, list[Tensor]]]:
    """(start, stop, each product's rows start:stop) for the block at every start (of ``n`` rows), in
    order; with ``workers`` > 1 that many blocks are computed ahead on as many threads."""

    def compute(start: int) -> tuple[int, int, list[Tensor]]:
        stop = min(n, start + starts.step)
        return start, stop, [product.rows(start, stop) for product in products]

    if workers == 1:
        yield from map(compute, starts)
        return
    with ThreadPoolExecutor(workers) as pool:
        pending: deque[Future] = deque()
        for start in starts:
            pending.append(pool.submit(compute, start))
            if len(pending) >= workers:  # with the block being consumed: block_mb in all
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _columns_in(block_mb: float, n: int) -> int:
    """How many float32 columns of ``n`` rows (or rows of ``n`` columns) fit in ``block_mb`` MiB."""
    return max(0, int(block_mb * 2**20 // (4 * max(n, 1))))


DENSE_COLUMN_SHARE = 1 / 8
"""A column holding more than this share of the rows is multiplied densely in `_GramProduct`: the
sparse product spends ~c² slow scattered multiply-adds on a column of c entries, a dense GEMM n²
fast ones. Of 1/4, 1/6, 1/8, 1/16, 1/32, 1/64 and 1/128, 1/8 and 1/6 fitted fastest on ML-1M
(docs/knn.md)."""


class _GramProduct:
    """Blocks of rows of X Xᵀ for a sparse (n, d) X: the columns holding many rows (heavy raters, or
    much-rated items) by one dense GEMM, the others by a sparse product; the sum is X Xᵀ."""

    def __init__(self, x: sp.csr_matrix, device: str | torch.device, block_mb: float) -> None:
        n = x.shape[0]
        counts = np.bincount(x.indices, minlength=x.shape[1])
        heavy = np.flatnonzero(counts > DENSE_COLUMN_SHARE * n)
        heavy = heavy[np.argsort(-counts[heavy], kind="stable")][: _columns_in(block_mb, n)]
        light = np.setdiff1d(np.arange(x.shape[1]), heavy)
        self.device = device
        self.light = x[:, light]  # (n, d_l)
        self.light_t = self.light.T.tocsr()  # (d_l, n)
        self.heavy = torch.as_tensor(x[:, heavy].toarray(), device=device) if len(heavy) else None  # (n, d_h)

    def rows(self, start: int, stop: int) -> Tensor:
        """Rows ``start:stop`` of X Xᵀ, dense (B, n)."""
        block = torch.as_tensor((self.light[start:stop] @ self.light_t).toarray(), device=self.device)
        if self.heavy is not None:
            block.addmm_(self.heavy[start:stop], self.heavy.T)
        return block
