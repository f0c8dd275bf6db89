"""Split invariants (property-based) and the reference notebook's exact semantics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cfrec.data import (
    Ratings,
    kfold_split,
    per_user_split,
    random_split,
    temporal_split,
)
from cfrec.data.split import kfold_fold
from cfrec.errors import ConfigError


@st.composite
def ratings_tables(draw) -> Ratings:
    n_users = draw(st.integers(1, 12))
    n_items = draw(st.integers(1, 15))
    cells = draw(st.sets(st.tuples(st.integers(1, n_users), st.integers(1, n_items)), min_size=1, max_size=120))
    cells = draw(st.permutations(sorted(cells)))  # arbitrary file order
    users, items = np.array(cells).T
    values = draw(st.lists(st.integers(1, 5), min_size=len(cells), max_size=len(cells)))
    ts = np.arange(len(cells), dtype=float)[::-1]
    return Ratings.from_arrays(users * 7, items * 3, values, ts)  # raw ids ≠ codes


def row_keys(r: Ratings) -> list[tuple[int, int]]:
    return list(zip(r.users.tolist(), r.items.tolist()))


def check_partition(ratings: Ratings, split) -> None:
    train, test = split
    all_keys = row_keys(ratings)
    position = {key: i for i, key in enumerate(all_keys)}
    train_pos = [position[k] for k in row_keys(train)]
    test_pos = [position[k] for k in row_keys(test)]
    assert train_pos == sorted(train_pos) and test_pos == sorted(test_pos)  # file order kept
    assert not set(train_pos) & set(test_pos)  # disjoint
    assert len(train) + len(test) + split.n_dropped == len(ratings)  # complete
    assert train.user_map is ratings.user_map and test.item_map is ratings.item_map
    known_users, known_items = set(train.users.tolist()), set(train.items.tolist())
    assert all(u in known_users and i in known_items for u, i in row_keys(test))


@settings(max_examples=60, deadline=None)
@given(ratings_tables(), st.sampled_from(["reference", "vectorized"]), st.integers(0, 3))
def test_per_user_split_invariants(ratings, method, seed):
    split = per_user_split(ratings, test_ratio=0.25, min_ratings=3, seed=seed, method=method)
    check_partition(ratings, split)
    counts = ratings.user_counts()
    taken = np.bincount(ratings.users, minlength=ratings.n_users) - np.bincount(split.train.users, minlength=ratings.n_users)
    expected = np.where(counts >= 3, np.maximum(1, (counts * 0.25).astype(int)), 0)
    assert taken.tolist() == expected.tolist()  # per-user counts, before dropping unknown items
    again = per_user_split(ratings, test_ratio=0.25, min_ratings=3, seed=seed, method=method)
    assert row_keys(again.test) == row_keys(split.test)  # seed determinism


def notebook_split(frame: pd.DataFrame, test_ratio=0.1, min_items=5, seed=42):
    """The reference notebook's split_low_memory, verbatim in logic."""
    rng = np.random.default_rng(seed)
    test_indices = []
    for _, group in frame.groupby("userId"):
        if len(group) < min_items:
            continue
        test_size = max(1, int(len(group) * test_ratio))
        test_indices.extend(rng.choice(group.index, size=test_size, replace=False))
    mask = frame.index.isin(set(test_indices))
    return frame[~mask], frame[mask]


def test_reference_method_selects_exactly_the_notebooks_pairs(small):
    frame = small.ratings.to_frame().rename(columns={"user": "userId", "item": "movieId"})
    frame = frame.sample(frac=1.0, random_state=3).reset_index(drop=True)  # users interleaved in the file
    ratings = Ratings.from_frame(frame, user="userId", item="movieId")
    split = per_user_split(ratings)
    _, nb_test = notebook_split(frame)
    assert split.n_test_before_filter == len(nb_test)
    train_frame = split.train.to_frame()
    nb_known = nb_test[nb_test.movieId.isin(train_frame.item) & nb_test.userId.isin(train_frame.user)]
    test_frame = split.test.to_frame()
    assert test_frame[["user", "item"]].to_numpy().tolist() == nb_known[["userId", "movieId"]].to_numpy().tolist()


def test_random_split_sizes_and_determinism(small):
    a = random_split(small.ratings, test_ratio=0.2, seed=5)
    check_partition(small.ratings, a)
    assert a.n_test_before_filter == round(0.2 * len(small.ratings))
    assert row_keys(random_split(small.ratings, test_ratio=0.2, seed=5).test) == row_keys(a.test)


def test_temporal_split_holds_out_each_users_latest(small):
    split = temporal_split(small.ratings, n_last=2)
    check_partition(small.ratings, split)
    frame = small.ratings.to_frame(raw_ids=False)
    latest = frame.sort_values("timestamp").groupby("user").tail(2)
    assert set(row_keys(split.test)) <= set(zip(latest.user, latest.item))
    assert split.n_test_before_filter == len(latest)


def test_temporal_split_needs_timestamps():
    ratings = Ratings.from_arrays([1, 1], [1, 2], [3, 4], [1.0, np.nan])
    with pytest.raises(ConfigError, match="1 of 2 ratings"):
        temporal_split(ratings)


def test_kfold_puts_every_eligible_rating_in_one_test_fold(small):
    folds = kfold_split(small.ratings, n_folds=4, seed=2)
    for split in folds:
        check_partition(small.ratings, split)
    tested = sum(f.n_test_before_filter for f in folds)
    assert tested == len(small.ratings)  # every user has ≥ 5 ratings here
    sizes = [f.n_test_before_filter for f in folds]
    assert max(sizes) - min(sizes) <= small.ratings.n_users  # near-equal: at most one per user apart


def test_one_kfold_fold_is_that_fold_of_the_whole_kfold_split(small, caplog):
    folds = kfold_split(small.ratings, n_folds=4, seed=2)
    caplog.clear()
    with caplog.at_level("INFO", logger="cfrec.data.split"):
        alone = kfold_fold(small.ratings, 2, n_folds=4, seed=2)
    for part in ("train", "test"):
        for field in ("users", "items", "values"):
            np.testing.assert_array_equal(getattr(getattr(alone, part), field), getattr(getattr(folds[2], part), field))
    assert caplog.text.count("split of") == 1  # the other folds were not built
    with pytest.raises(ConfigError, match="fold: must lie in 0..n_folds-1, got 4"):
        kfold_fold(small.ratings, 4, n_folds=4)
    with pytest.raises(ConfigError, match="n_folds: must be at least 2, got 1"):
        kfold_fold(small.ratings, 3, n_folds=1)


@pytest.mark.parametrize("ratio", [0, 1, -0.1, 1.5])
def test_bad_ratio_names_the_key(small, ratio):
    with pytest.raises(ConfigError, match="test_ratio"):
        per_user_split(small.ratings, test_ratio=ratio)
