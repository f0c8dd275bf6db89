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
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor
from tqdm.auto import tqdm

from cfrec import metrics
from cfrec.data.ratings import Ratings
from cfrec.errors import ConfigError
from cfrec.models.base import Recommender, mask_seen
from cfrec.validation import check_bool, check_int, check_number

log = logging.getLogger(__name__)

DEFAULT_KS = (10, 20, 50)
EVAL_OPTIONS = ("ks", "like_threshold", "tolerance", "limit", "ranking", "memory_budget_mb")
"""The options of `evaluate` that a run configures (the ``eval`` group)."""


def check_options(*, ks: Sequence[int], like_threshold: float, tolerance: float, limit: int | None, ranking: bool,
                  memory_budget_mb: float) -> None:
    """`evaluate`'s options, checked before any work (a `ConfigError` naming the option); the
    apps call it on the ``eval`` section before the data is read."""
    if isinstance(ks, (str, bytes)) or not isinstance(ks, Sequence) or not ks:
        raise ConfigError("ks", f"must be a non-empty list of positive integers, got {ks!r}")
    for k in ks:
        check_int("ks", k, 1)
    check_number("like_threshold", like_threshold)
    check_number("tolerance", tolerance, 0, open_low=True)
    if limit is not None:
        check_int("limit", limit, 1)
    check_bool("ranking", ranking)
    check_number("memory_budget_mb", memory_budget_mb, 0, open_low=True)


def check_same_maps(train: Ratings, test: Ratings) -> None:
    """`ConfigError` unless ``test``'s codes stand for the same users and movies as ``train``'s.

    Splits share their parent's id maps, so the usual check is one identity test; maps that are
    different objects are compared by size, then by content.
    """
    for kind, ours, theirs in (("user", train.user_map, test.user_map), ("movie", train.item_map, test.item_map)):
        if ours is not theirs and ours != theirs:
            sizes = f"{len(theirs)} vs {len(ours)}" if len(theirs) != len(ours) else f"both {len(ours)}, not the same"
            raise ConfigError("test", f"the test ratings' {kind} ids are coded differently from the training "
                                      f"ratings' ({sizes} {kind} ids); take train and test from one data set, "
                                      "e.g. with per_user_split")


def predict_pairs(
    model: Recommender, users: np.ndarray, items: np.ndarray, *, batch_size: int = 1 << 16,
    device: torch.device | str = "cpu",
) -> Tensor:
    """``model.predict`` over many code pairs in batches, without autograd; a float32 CPU tensor."""
    out = []
    with torch.no_grad():
        for start in range(0, len(users), batch_size):
            u = torch.as_tensor(users[start : start + batch_size], device=device)
            i = torch.as_tensor(items[start : start + batch_size], device=device)
            out.append(model.predict(u, i).float().cpu())
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
    check_options(ks=ks, like_threshold=like_threshold, tolerance=tolerance, limit=limit, ranking=ranking,
                  memory_budget_mb=memory_budget_mb)
    check_same_maps(train, test)
    n = len(test) if limit is None else min(limit, len(test))
    result: dict[str, float] = {"n_test": n}
    if model.predicts_ratings:  # a ranking-only model's scores are not ratings: no rating error
        start = time.perf_counter()
        pred = predict_pairs(model, test.users[:n], test.items[:n], batch_size=batch_size, device=device)
        true = torch.as_tensor(test.values[:n])
        result.update({**metrics.rating_metrics(pred, true, tolerance), "predict_seconds": time.perf_counter() - start})
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
    check_same_maps(train, test)
    ks = sorted({int(k) for k in ks})
    k_max = min(max(ks), train.n_items)
    liked = test.subset(test.values >= like_threshold)
    liked_csr = sp.csr_matrix(
        (np.ones(len(liked), dtype=bool), (liked.users, liked.items)), shape=(train.n_users, train.n_items)
    )
    users = np.flatnonzero(np.diff(liked_csr.indptr) > 0)
    seen = train.to_csr()
    batch = user_batch_size(train.n_items, memory_budget_mb, score_blocks(model))
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
    if len(users) == 0:  # no liked test movie: ranking metrics are undefined (NaN → null in metrics.json)
        log.warning("no test rating reaches like_threshold %g: ranking metrics are undefined", like_threshold)
        return {**{key: float("nan") for key in sums}, **{f"coverage@{k}": float("nan") for k in ks},
                "n_ranking_users": 0}
    result = {key: value / len(users) for key, value in sums.items()}
    for k in ks:
        result[f"coverage@{k}"] = metrics.coverage(torch.nonzero(recommended[k]).flatten(), train.n_items)
    result["n_ranking_users"] = len(users)
    return result


def score_blocks(model: Recommender) -> int:
    """How many (B × n_items) float32 blocks ``model.score`` holds at its peak, its output included.

    A model may declare it (``score_blocks``); KNN ranked by predictions combines three
    neighbour sums through several same-sized temporaries, and the default `Recommender.score`
    predicts a grid of int64 (user, item) pairs: 8 each; a score matrix computed in place
    through one temporary (the factor models, baselines, KNN aggregates): 2.
    """
    declared = getattr(model, "score_blocks", None)
    if declared:
        return int(declared)
    grid = getattr(type(model), "score", None) is Recommender.score
    return 8 if grid or getattr(model, "ranking", None) == "prediction" else 2


def user_batch_size(n_items: int, memory_budget_mb: float, blocks: int = 2) -> int:
    """Users per batch so that every per-user temporary of a ranking batch fits in the budget:
    ``blocks`` float32 score blocks, the dense liked-movie rows (bool, numpy and torch) and
    topk's working copy of the scores."""
    if not memory_budget_mb > 0:
        raise ValueError(f"memory_budget_mb must be positive, got {memory_budget_mb}")
    bytes_per_user = n_items * (4 * blocks + 2 + 4)
    return max(1, int(memory_budget_mb * 2**20 // bytes_per_user))
