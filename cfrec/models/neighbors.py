"""Each user's (or item's) most similar users (items): by cosine of their vectors (exact or HNSW), or of
their sparse centred rating rows."""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

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
    device: str | torch.device = "cpu", block_mb: float = 256.0,
) -> tuple[Tensor, Tensor]:
    """The ``m`` most cosine-similar rows of every row of a sparse (centred) rating matrix.

    ``rows`` is (n, d) CSR, one row per user (item), e.g. ratings minus a baseline. Similarities
    s(a, b) = ⟨x_a, x_b⟩ / (‖x_a‖ ‖x_b‖) come from blocks of the sparse product X_B Xᵀ, each at
    most ``block_mb`` MiB dense (never an n × n matrix). With ``support_shrinkage`` λ > 0 each is
    scaled by c / (c + λ), c the number of columns both rows hold (co-raters, co-rated items), so
    similarities resting on few common ratings shrink towards 0. Only those above
    ``min_similarity`` are kept. Returns (neighbours (n, m) int64, similarities (n, m) float32), most similar first, on
    the CPU; missing slots hold −1 and 0. All-zero rows get no neighbours and are nobody's.
    """
    x = sp.csr_matrix(rows, dtype=np.float32)
    n = x.shape[0]
    norms = np.sqrt(np.asarray(x.multiply(x).sum(1), dtype=np.float64).ravel())  # (n,)
    inv = np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1.0), 0.0).astype(np.float32)
    unit = sp.diags(inv) @ x  # unit rows (zero rows stay zero)
    unit_t = unit.T.tocsr()  # (d, n)
    present = x.copy()
    present.data[:] = 1.0
    present_t = present.T.tocsr()
    m_eff = max(0, min(m, n - 1))
    neighbors = torch.full((n, m), -1, dtype=torch.int64)
    sims = torch.zeros((n, m), dtype=torch.float32)
    if m_eff == 0:
        return neighbors, sims
    block = max(1, int(block_mb * 2**20 // (4 * n)))
    for start in range(0, n, block):
        stop = min(n, start + block)
        dense = torch.as_tensor((unit[start:stop] @ unit_t).toarray(), device=device)  # (B, n)
        if support_shrinkage > 0:
            common = torch.as_tensor((present[start:stop] @ present_t).toarray(), device=device)  # (B, n)
            dense *= common / (common + support_shrinkage)
        dense[torch.arange(stop - start), torch.arange(start, stop)] = -np.inf  # never one's own neighbour
        top = torch.topk(dense, m_eff, dim=1)  # sorted, most similar first
        keep = top.values > min_similarity
        neighbors[start:stop, :m_eff] = torch.where(keep, top.indices, -1).cpu()
        sims[start:stop, :m_eff] = torch.where(keep, top.values, 0.0).float().cpu()
    return neighbors, sims
