"""HNSWIndex and exact search: recall, exclusion, save/load, argument errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from cfrec.errors import CheckpointError, ConfigError
from cfrec.index import PRESETS, HNSWIndex, exact_search


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(1500, 24)).astype(np.float32)


@pytest.fixture(scope="module")
def index(vectors: np.ndarray) -> HNSWIndex:
    return HNSWIndex().build(vectors)


def brute_force(data: np.ndarray, queries: np.ndarray, k: int, space: str) -> np.ndarray:
    """Labels of the k nearest rows, one query at a time."""
    out = []
    for q in queries:
        if space == "cosine":
            dist = 1 - data @ q / (np.linalg.norm(data, axis=1) * np.linalg.norm(q))
        elif space == "ip":
            dist = 1 - data @ q
        else:
            dist = ((data - q) ** 2).sum(1)
        out.append(np.argsort(dist, kind="stable")[:k])
    return np.array(out)


@pytest.mark.parametrize("space", ["cosine", "ip", "l2"])
def test_exact_search_matches_a_brute_force_loop(vectors, space):
    queries = vectors[:40] + 0.1
    labels, dist = exact_search(vectors, queries, 7, space=space, batch_size=16)
    np.testing.assert_array_equal(labels.numpy(), brute_force(vectors, queries, 7, space))
    assert torch.all(dist[:, 1:] >= dist[:, :-1])


@pytest.mark.parametrize("k", [10, 50])
def test_recall_with_default_parameters_on_random_vectors(index, k):
    assert index.recall(k, sample=300) >= 0.99


@pytest.mark.parametrize("space", ["ip", "l2"])
def test_other_spaces_find_their_exact_neighbours(vectors, space):
    assert HNSWIndex(space=space).build(vectors).recall(10, sample=200) >= 0.99


def test_recall_of_a_weak_index_is_measured_as_weak(vectors):
    """The recall check can fail: a tiny graph with a tiny beam misses neighbours."""
    weak = HNSWIndex(M=2, ef_construction=4, ef=1).build(vectors)
    assert weak.recall(50, sample=200) < 0.9


def test_self_exclusion_and_similarity(index, vectors):
    rows = np.arange(50)
    labels, dist = index.query(vectors[rows], 5, exclude=rows)
    assert not (labels.numpy() == rows[:, None]).any()
    exact, exact_dist = exact_search(vectors, vectors[rows], 5, exclude=rows)
    np.testing.assert_array_equal(labels.numpy(), exact.numpy())
    sims = index.similarity(dist).numpy()
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cos = (unit[rows][:, None, :] * unit[labels.numpy()]).sum(-1)
    np.testing.assert_allclose(sims, cos, atol=1e-5)


def test_seen_items_are_excluded_per_row(index, vectors):
    queries = vectors[:3]
    plain, _ = index.query(queries, 10)
    seen = sp.csr_matrix((np.ones(4), ([0, 0, 2, 2], plain.numpy()[[0, 0, 2, 2], [0, 3, 1, 9]])), shape=(3, len(vectors)))
    labels, dist = index.query(queries, 10, exclude=seen)
    for row in range(3):
        expected = [x for x in plain[row].tolist() if x not in set(seen[row].indices)]
        assert labels[row].tolist()[: len(expected)] == expected
        assert not set(labels[row].tolist()) & set(seen[row].indices)
    assert torch.isfinite(dist).all()


def test_rows_with_too_few_survivors_are_padded():
    data = np.eye(4, dtype=np.float32) + 0.1
    labels, dist = HNSWIndex().build(data).query(data[:1], 4, exclude=np.array([0]))
    assert labels[0, -1] == -1 and torch.isinf(dist[0, -1])
    assert sorted(labels[0, :3].tolist()) == [1, 2, 3]


def test_save_load_round_trip_returns_identical_neighbours(index, vectors, tmp_path):
    path = index.save(tmp_path / "sub" / "users.hnsw")
    meta = json.loads((tmp_path / "sub" / "users.hnsw.json").read_text())
    assert meta["params"] == index.params() and meta["count"] == len(vectors)
    assert sorted(p.name for p in path.parent.iterdir()) == ["users.hnsw", "users.hnsw.json"]  # no temp files left
    loaded = HNSWIndex.load(path)
    before, d_before = index.query(vectors[:100], 20, exclude=np.arange(100))
    after, d_after = loaded.query(vectors[:100], 20, exclude=np.arange(100))
    assert torch.equal(before, after) and torch.equal(d_before, d_after)
    assert loaded.params() == index.params() and len(loaded) == len(index)


def test_load_refuses_a_tampered_or_missing_index(index, tmp_path):
    path = index.save(tmp_path / "a.hnsw")
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="checksum"):
        HNSWIndex.load(path)
    with pytest.raises(CheckpointError, match="cannot read"):
        HNSWIndex.load(tmp_path / "missing.hnsw")


def test_seeded_single_thread_builds_are_identical(vectors):
    a = HNSWIndex(M=8, seed=3).build(vectors[:500])
    b = HNSWIndex(M=8, seed=3).build(vectors[:500])
    assert torch.equal(a.query(vectors[:50], 10)[0], b.query(vectors[:50], 10)[0])


def test_presets():
    assert HNSWIndex.preset("notebook").params() == HNSWIndex(**PRESETS["notebook"]).params()
    assert HNSWIndex.preset("notebook", ef=300).ef == 300
    with pytest.raises(ConfigError, match="preset.*'fast'"):
        HNSWIndex.preset("fast")


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"space": "dot"}, "space"), ({"M": 1}, "M"), ({"ef_construction": 0}, "ef_construction"),
     ({"ef": 0}, "ef"), ({"seed": -1}, "seed"), ({"num_threads": 0}, "num_threads"), ({"M": 2.5}, "M")],
)
def test_bad_parameters_are_named(kwargs, key):
    with pytest.raises(ConfigError, match=f"^{key}:"):
        HNSWIndex(**kwargs)


def test_bad_queries_are_named(index, vectors):
    with pytest.raises(ConfigError, match="^k:"):
        index.query(vectors[:2], len(vectors) + 1)
    with pytest.raises(ConfigError, match="^vectors:.*dimension"):
        index.query(vectors[:2, :5], 3)
    with pytest.raises(ConfigError, match="^exclude:"):
        index.query(vectors[:2], 3, exclude=np.array([1, 2, 3]))
    with pytest.raises(ConfigError, match="^vectors:.*NaN"):
        index.query(np.full((1, 24), np.nan), 3)
    with pytest.raises(CheckpointError, match="empty"):
        HNSWIndex().query(vectors[:2], 3)


def test_zero_rows_are_indexed_at_similarity_zero():
    data = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 0, 0], [0, 1, 0]], dtype=np.float32)
    index = HNSWIndex().build(data)
    labels, dist = index.query(data[:1], 3, exclude=np.array([0]))
    assert labels[0].tolist()[0] == 1
    zero = labels[0].tolist().index(2)
    assert index.similarity(dist)[0, zero] == pytest.approx(0.0, abs=1e-6)
    assert not index.vectors()[2].any()
