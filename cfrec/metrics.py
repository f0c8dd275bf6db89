"""Pure, vectorized metric functions on tensors.

Rating metrics take predictions and true ratings. Ranking metrics take a boolean ``hits``
matrix (users × K: is the j-th recommended item relevant?) and each user's number of
relevant items, and return one value per user; the evaluator averages over users.
"""

from __future__ import annotations

import torch
from torch import Tensor


def rmse(pred: Tensor, true: Tensor) -> float:
    """Root mean squared error."""
    return float(torch.sqrt(torch.mean((pred.double() - true.double()) ** 2)))


def mae(pred: Tensor, true: Tensor) -> float:
    """Mean absolute error."""
    return float(torch.mean(torch.abs(pred.double() - true.double())))


def accuracy(pred: Tensor, true: Tensor, tolerance: float = 0.5) -> float:
    """Share of predictions within ``tolerance`` of the truth: |pred − true| < tolerance."""
    if tolerance <= 0:
        raise ValueError(f"tolerance must be positive, got {tolerance}")
    return float(torch.mean(((pred.double() - true.double()).abs() < tolerance).double()))


def rating_metrics(pred: Tensor, true: Tensor, tolerance: float = 0.5) -> dict[str, float]:
    """``rmse``, ``mae`` and ``accuracy`` (within ``tolerance``) of predicted ratings."""
    return {"rmse": rmse(pred, true), "mae": mae(pred, true), "accuracy": accuracy(pred, true, tolerance)}


def recall_at_k(hits: Tensor, n_relevant: Tensor, k: int) -> Tensor:
    """Per user: relevant items in the top ``k`` / all relevant items (users with none: NaN)."""
    found = hits[:, :k].sum(dim=1, dtype=torch.float64)
    return found / n_relevant.double()


def precision_at_k(hits: Tensor, k: int) -> Tensor:
    """Per user: relevant items in the top ``k`` / ``k``."""
    return hits[:, :k].sum(dim=1, dtype=torch.float64) / k


def hit_rate_at_k(hits: Tensor, k: int) -> Tensor:
    """Per user: 1 if any of the top ``k`` is relevant."""
    return hits[:, :k].any(dim=1).double()


def ndcg_at_k(hits: Tensor, n_relevant: Tensor, k: int) -> Tensor:
    """Per user: binary-gain DCG of the top ``k`` over the ideal DCG (all relevant items first)."""
    discount = 1.0 / torch.log2(torch.arange(2, k + 2, device=hits.device, dtype=torch.float64))  # (k,)
    dcg = (hits[:, :k].double() * discount[: hits[:, :k].shape[1]]).sum(dim=1)
    ideal = torch.cumsum(discount, 0)[(n_relevant.clamp(min=1, max=k) - 1).long()]
    return dcg / ideal


def coverage(top_items: Tensor, n_items: int) -> float:
    """Share of the catalog that appears in at least one list of ``top_items`` (users × K)."""
    return torch.unique(top_items).numel() / n_items
