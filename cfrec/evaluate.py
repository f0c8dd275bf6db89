"""The shared evaluator: any model × a test set → rating and ranking metrics, all batched.

Rating metrics (RMSE, MAE, accuracy) run over the test pairs, or the first ``limit`` of them
in split order as the reference notebook reported. Ranking metrics follow the reference
definition: a test rating ≥ ``like_threshold`` marks a liked item; users without a liked
test item are skipped; items the user rated in train are excluded from the list; Recall@K =
liked items in the top K / liked items, averaged over users. Ranking runs over every test
user in batches sized so that the dense score block stays within ``memory_budget_mb``.
"""

from __future__ import annotations

import logging
import time
from typing import Sequence

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor
from tqdm.auto import tqdm

from cfrec import metrics
from cfrec.data.ratings import Ratings
from cfrec.models.base import Recommender, mask_seen

log = logging.getLogger(__name__)

DEFAULT_KS = (10, 20, 50)


def predict_pairs(
    model: Recommender, users: np.ndarray, items: np.ndarray, *, batch_size: int = 1 << 16,
    device: torch.device | str = "cpu",
) -> Tensor:
    """``model.predict`` over many code pairs in batches; a float32 CPU tensor."""
    out = []
    for start in range(0, len(users), batch_size):
        u = torch.as_tensor(users[start : start + batch_size], device=device)
        i = torch.as_tensor(items[start : start + batch_size], device=device)
        out.append(model.predict(u, i).detach().float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


def evaluate(
    model: Recommender,
    train: Ratings,
    test: Ratings,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    like_threshold: float = 4.0,
    tolerance: float = 0.5,
    limit: int | None = None,
    ranking: bool = True,
    memory_budget_mb: float = 256.0,
    batch_size: int = 1 << 16,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> dict[str, float]:
    """Metrics of a fitted ``model`` on ``test``, plus timings, as a flat dict.

    Keys: ``rmse``, ``mae``, ``accuracy``, ``predict_seconds`` (models that predict ratings
    only), ``n_test`` and, with
    ``ranking``, ``recall@K``, ``precision@K``, ``ndcg@K``, ``hit_rate@K``, ``coverage@K`` for
    each K, ``n_ranking_users``, ``rank_seconds``. ``limit`` restricts the rating metrics to the
    first ``limit`` test pairs; ranking always uses every test user.
    """
    if tolerance <= 0:
        raise ValueError(f"tolerance must be positive, got {tolerance}")
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive integers, got {list(ks)}")
    n = len(test) if limit is None else min(limit, len(test))
    result: dict[str, float] = {"n_test": n}
    if model.predicts_ratings:  # a ranking-only model's scores are not ratings: no rating error
        start = time.perf_counter()
        pred = predict_pairs(model, test.users[:n], test.items[:n], batch_size=batch_size, device=device)
        true = torch.as_tensor(test.values[:n])
        result.update({
            "rmse": metrics.rmse(pred, true),
            "mae": metrics.mae(pred, true),
            "accuracy": metrics.accuracy(pred, true, tolerance),
            "predict_seconds": time.perf_counter() - start,
        })
    if ranking:
        start = time.perf_counter()
        result.update(ranking_metrics(
            model, train, test, ks=ks, like_threshold=like_threshold,
            memory_budget_mb=memory_budget_mb, device=device, progress=progress,
        ))
        result["rank_seconds"] = time.perf_counter() - start
    return result


def ranking_metrics(
    model: Recommender,
    train: Ratings,
    test: Ratings,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    like_threshold: float = 4.0,
    memory_budget_mb: float = 256.0,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> dict[str, float]:
    """Recall, precision, NDCG, hit rate and coverage at each K over users with a liked test item."""
    ks = sorted(set(int(k) for k in ks))
    k_max = min(max(ks), train.n_items)
    liked = test.subset(test.values >= like_threshold)
    liked_csr = sp.csr_matrix(
        (np.ones(len(liked), dtype=bool), (liked.users, liked.items)), shape=(train.n_users, train.n_items)
    )
    users = np.flatnonzero(np.diff(liked_csr.indptr) > 0)
    seen = train.to_csr()
    batch = user_batch_size(train.n_items, memory_budget_mb)
    sums = {f"{name}@{k}": 0.0 for k in ks for name in ("recall", "precision", "ndcg", "hit_rate")}
    recommended = {k: torch.zeros(train.n_items, dtype=torch.bool) for k in ks}
    batches = range(0, len(users), batch)
    for start in tqdm(batches, desc="ranking", disable=not progress, leave=False):
        codes = torch.as_tensor(users[start : start + batch], device=device)
        scores = model.score(codes).float()  # (B, n_items)
        mask_seen(scores, codes, seen)
        top = torch.topk(scores, k_max, dim=1).indices  # (B, k_max)
        rows = liked_csr[codes.cpu().numpy()]
        relevant = torch.as_tensor(rows.toarray(), device=top.device)  # (B, n_items) bool
        hits = relevant.gather(1, top)  # (B, k_max)
        n_relevant = relevant.sum(dim=1)
        for k in ks:
            sums[f"recall@{k}"] += float(metrics.recall_at_k(hits, n_relevant, k).sum())
            sums[f"precision@{k}"] += float(metrics.precision_at_k(hits, k).sum())
            sums[f"ndcg@{k}"] += float(metrics.ndcg_at_k(hits, n_relevant, k).sum())
            sums[f"hit_rate@{k}"] += float(metrics.hit_rate_at_k(hits, k).sum())
            recommended[k][top[:, :k].reshape(-1).cpu()] = True
    n_users = max(1, len(users))
    result = {key: value / n_users for key, value in sums.items()}
    for k in ks:
        result[f"coverage@{k}"] = metrics.coverage(torch.nonzero(recommended[k]).flatten(), train.n_items)
    result["n_ranking_users"] = len(users)
    return result


def user_batch_size(n_items: int, memory_budget_mb: float) -> int:
    """Users per batch so that a few (B × n_items) float blocks fit in the budget."""
    bytes_per_user = n_items * 4 * 3  # scores, relevance, and topk's working copy
    return max(1, int(memory_budget_mb * 2**20 // bytes_per_user))
