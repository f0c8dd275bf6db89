"""Train/test splits. Every split keeps the source row order in both parts and shares id maps.

Test pairs whose user or item has no rating in train cannot be scored by a collaborative model;
every split drops them, counts them in ``Split.n_dropped`` and logs the count.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from cfrec.data.ratings import Ratings
from cfrec.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    """A train/test pair; unpacks as ``train, test = split``."""

    train: Ratings
    test: Ratings
    n_test_before_filter: int  # test rows before dropping pairs unknown to train

    @property
    def n_dropped(self) -> int:
        """Test pairs dropped because their user or item has no train rating."""
        return self.n_test_before_filter - len(self.test)

    def __iter__(self) -> Iterator[Ratings]:
        return iter((self.train, self.test))


def _make_split(ratings: Ratings, test_mask: np.ndarray, kind: str) -> Split:
    """Split ``ratings`` by a boolean test mask and drop test pairs unknown to train."""
    train = ratings.subset(~test_mask, name=f"{ratings.name}/train")
    known_users = np.bincount(train.users, minlength=ratings.n_users) > 0
    known_items = np.bincount(train.items, minlength=ratings.n_items) > 0
    test_rows = np.flatnonzero(test_mask)
    keep = known_users[ratings.users[test_rows]] & known_items[ratings.items[test_rows]]
    test = ratings.subset(test_rows[keep], name=f"{ratings.name}/test")
    split = Split(train, test, n_test_before_filter=len(test_rows))
    log.info(
        "%s split of %s: train %d, test %d (%d test pairs dropped: user or item not in train)",
        kind, ratings.name, len(train), len(test), split.n_dropped,
    )
    return split


def _user_groups(users: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row positions grouped by user code (file order inside a group): (order, starts, counts)."""
    order = np.argsort(users, kind="stable")
    sorted_users = users[order]
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]]) if len(users) else np.array([], int)
    counts = np.diff(np.r_[starts, len(users)])
    return order, starts, counts


def _check_ratio(test_ratio: float) -> None:
    if not 0.0 < test_ratio < 1.0:
        raise ConfigError("test_ratio", f"must lie strictly between 0 and 1, got {test_ratio}")


def per_user_split(
    ratings: Ratings,
    test_ratio: float = 0.1,
    min_ratings: int = 5,
    seed: int = 42,
    method: Literal["reference", "vectorized"] = "reference",
) -> Split:
    """Hold out ``max(1, int(n * test_ratio))`` ratings of every user with ``n >= min_ratings``.

    Users with fewer ratings stay whole in train. ``method="reference"`` draws with the reference
    notebook's random stream (``numpy.random.default_rng(seed).choice`` once per user, users in
    ascending raw-id order), so the same seed selects exactly the notebook's test pairs; the draw
    is sequential by nature, one C-level call per user (about 0.1 s for ML-1M's 6,040 users).
    ``method="vectorized"`` ranks one uniform key per rating instead: the same sizes and law,
    a different (still seeded) selection, for catalogs with hundreds of thousands of users.
    """
    _check_ratio(test_ratio)
    if min_ratings < 1:
        raise ConfigError("min_ratings", f"must be at least 1, got {min_ratings}")
    # Group by raw-id order, as pandas' groupby("userId") does; codes are sorted raw ids already
    # when the map came from IdMap.from_values, but a custom map may order them otherwise.
    user_rank = np.argsort(np.argsort(ratings.user_map.ids, kind="stable"), kind="stable")
    order, starts, counts = _user_groups(user_rank[ratings.users])
    n_test = np.maximum(1, (counts * test_ratio).astype(np.int64))
    eligible = counts >= min_ratings
    rng = np.random.default_rng(seed)
    test_mask = np.zeros(len(ratings), dtype=bool)
    if method == "reference":
        picks = [
            order[s : s + n][rng.choice(n, size=k, replace=False)]
            for s, n, k in zip(starts[eligible].tolist(), counts[eligible].tolist(), n_test[eligible].tolist())
        ]
        if picks:
            test_mask[np.concatenate(picks)] = True
    elif method == "vectorized":
        rank_in_user = _random_rank_within_groups(rng, order, starts, counts)
        limit = np.where(eligible, n_test, 0)
        group_of_row = np.repeat(np.arange(len(counts)), counts)
        test_mask[order[rank_in_user < limit[group_of_row]]] = True
    else:
        raise ConfigError("method", f"must be 'reference' or 'vectorized', got {method!r}")
    return _make_split(ratings, test_mask, "per-user")


def _random_rank_within_groups(
    rng: np.random.Generator, order: np.ndarray, starts: np.ndarray, counts: np.ndarray
) -> np.ndarray:
    """For rows in ``order``'s grouped layout, a uniformly random rank 0..n-1 within each group."""
    group_of_row = np.repeat(np.arange(len(counts)), counts)
    keys = rng.random(len(order))  # in [0, 1): group + key sorts by group, then by key (one float sort, 9x a lexsort)
    shuffled = np.argsort(group_of_row + keys)  # positions in grouped layout, shuffled per group
    rank = np.empty(len(order), dtype=np.int64)
    rank[shuffled] = np.arange(len(order)) - np.repeat(starts, counts)
    return rank


def random_split(ratings: Ratings, test_ratio: float = 0.1, seed: int = 42) -> Split:
    """Hold out a uniformly random ``test_ratio`` share of all ratings."""
    _check_ratio(test_ratio)
    rng = np.random.default_rng(seed)
    n_test = int(round(len(ratings) * test_ratio))
    test_mask = np.zeros(len(ratings), dtype=bool)
    test_mask[rng.choice(len(ratings), size=n_test, replace=False)] = True
    return _make_split(ratings, test_mask, "random")


def temporal_split(ratings: Ratings, n_last: int = 1, min_ratings: int = 5) -> Split:
    """Leave-last-n: each user's ``n_last`` most recent ratings go to test.

    Users with fewer than ``min_ratings`` ratings stay whole in train. Ties in time keep file
    order. Needs a timestamp on every rating (ML-1M's reassembled copy lacks some: use ML-100K).
    """
    if n_last < 1:
        raise ConfigError("n_last", f"must be at least 1, got {n_last}")
    if ratings.timestamps is None or np.isnan(ratings.timestamps).any():
        missing = len(ratings) if ratings.timestamps is None else int(np.isnan(ratings.timestamps).sum())
        raise ConfigError(
            "split", f"a temporal split needs timestamps; {missing:,} of {len(ratings):,} ratings of "
            f"{ratings.name!r} have none"
        )
    rows = np.arange(len(ratings))
    order = np.lexsort((rows, ratings.timestamps, ratings.users))  # by user, then time, then row
    counts = ratings.user_counts()[ratings.users[order]]
    starts = np.r_[0, np.flatnonzero(np.diff(ratings.users[order])) + 1]
    position = rows - np.repeat(starts, np.diff(np.r_[starts, len(rows)]))
    take = (counts >= min_ratings) & (position >= counts - n_last)
    test_mask = np.zeros(len(ratings), dtype=bool)
    test_mask[order[take]] = True
    return _make_split(ratings, test_mask, "temporal")


def no_split(ratings: Ratings) -> Split:
    """Every rating in train and an empty test set: a model fitted for use, not for measuring."""
    train = ratings.subset(np.arange(len(ratings)), name=f"{ratings.name}/all")
    test = ratings.subset(np.array([], dtype=np.int64), name=f"{ratings.name}/test")
    log.info("no split of %s: all %d ratings train the model, nothing is held out", ratings.name, len(train))
    return Split(train, test, n_test_before_filter=0)


def kfold_split(ratings: Ratings, n_folds: int = 5, seed: int = 42, min_ratings: int = 5) -> list[Split]:
    """Per-user k-fold: each user's ratings are dealt at random into ``n_folds`` near-equal folds.

    Fold ``f`` is the test set of split ``f``. Users with fewer than ``min_ratings`` ratings stay
    in every train set. Each eligible rating is in exactly one test set.
    """
    _check_n_folds(n_folds)
    fold = _kfold_assignment(ratings, n_folds, seed, min_ratings)
    return [_make_split(ratings, fold == f, f"fold {f + 1}/{n_folds}") for f in range(n_folds)]


def kfold_fold(ratings: Ratings, fold: int, n_folds: int = 5, seed: int = 42, min_ratings: int = 5) -> Split:
    """Split ``fold`` of `kfold_split` alone (the same train and test), without building the others."""
    _check_n_folds(n_folds)
    if not 0 <= fold < n_folds:
        raise ConfigError("fold", f"must lie in 0..n_folds-1, got {fold}")
    return _make_split(ratings, _kfold_assignment(ratings, n_folds, seed, min_ratings) == fold,
                       f"fold {fold + 1}/{n_folds}")


def _kfold_assignment(ratings: Ratings, n_folds: int, seed: int, min_ratings: int) -> np.ndarray:
    """(n,) the fold whose test set holds each rating; −1 for users with fewer than ``min_ratings``
    (``n_folds`` checked by the caller)."""
    rng = np.random.default_rng(seed)
    order, starts, counts = _user_groups(ratings.users)
    rank = _random_rank_within_groups(rng, order, starts, counts)
    fold = np.full(len(ratings), -1, dtype=np.int64)
    eligible_row = np.repeat(counts >= min_ratings, counts)
    fold[order[eligible_row]] = rank[eligible_row] % n_folds
    return fold


def _check_n_folds(n_folds: int) -> None:
    if n_folds < 2:
        raise ConfigError("n_folds", f"must be at least 2, got {n_folds}")
