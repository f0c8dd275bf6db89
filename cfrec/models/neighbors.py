"""Each user's (or item's) most similar users (items) by cosine of their vectors, exact or HNSW."""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
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
