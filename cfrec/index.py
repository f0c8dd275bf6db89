"""Nearest-neighbour search over any embedding matrix: exact (torch) and HNSW (hnswlib).

Every HNSW use in cfrec goes through `HNSWIndex`. Labels are the row numbers of the matrix the
index was built from. Distances follow hnswlib: ``cosine`` 1 − cos, ``ip`` 1 − dot, ``l2`` the
squared Euclidean distance; `similarity` turns them into "higher is closer" scores. Queries can
exclude labels per query row (the query item itself, or what a user has already seen): the search
over-fetches by the largest exclusion count of a batch and keeps the first ``k`` survivors.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Literal, Union

import hnswlib
import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from cfrec.errors import CheckpointError, ConfigError
from cfrec.hnsw_file import check_file
from cfrec.io import atomic_path, sha256, write_json
from cfrec.validation import check_choice, check_int

log = logging.getLogger(__name__)

Space = Literal["cosine", "ip", "l2"]
SPACES = ("cosine", "ip", "l2")
Exclude = Union[np.ndarray, Tensor, sp.spmatrix, None]  # (n,) one label per row (-1: none) or CSR rows

# hnswlib's guidance (ALGO_PARAMS.md): M 12-48 suits most data, ef_construction ~200, ef >= k;
# ef=None means max(2k, 100) per query. "notebook" is the reference notebook's setting.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {"M": 32, "ef_construction": 200, "ef": None},
    "notebook": {"M": 128, "ef_construction": 200, "ef": 200},
}
FORMAT_VERSION = 1


def as_matrix(vectors: Any, name: str = "vectors") -> np.ndarray:
    """A float32 C-contiguous (n, dim) array from a tensor or array; rejects NaN and wrong ranks."""
    arr = vectors.detach().cpu().numpy() if isinstance(vectors, Tensor) else np.asarray(vectors)
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ConfigError(name, f"must be a 2-D (n, dim) matrix, got shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ConfigError(name, "contains NaN or infinite values")
    return arr


def similarity(distances: Tensor, space: Space) -> Tensor:
    """Distances of ``space`` turned into similarities (cosine/ip: 1 − d, l2: −d)."""
    return -distances if space == "l2" else 1.0 - distances


def exact_search(
    data: Any, queries: Any, k: int, *, space: Space = "cosine", exclude: Exclude = None,
    batch_size: int = 1024, device: str | torch.device = "cpu",
) -> tuple[Tensor, Tensor]:
    """Brute-force k-NN by batched matmul + topk: (labels (n, k) int64, distances (n, k) float32).

    Same conventions as `HNSWIndex.query`, on CPU or GPU; results come back on the CPU.
    """
    check_choice("space", space, SPACES)
    base = torch.as_tensor(as_matrix(data, "data"), device=device)  # (N, d)
    q_all = torch.as_tensor(as_matrix(queries, "queries"), device=device)  # (n, d)
    if space == "cosine":
        base, q_all = _unit_rows(base), _unit_rows(q_all)
    sq_norms = (base * base).sum(1) if space == "l2" else None  # (N,)

    def search(rows: slice, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        q = q_all[rows]  # (B, d)
        dots = q @ base.T  # (B, N)
        dist = sq_norms[None, :] - 2 * dots + (q * q).sum(1, keepdim=True) if space == "l2" else 1.0 - dots
        top = torch.topk(dist, fetch, dim=1, largest=False)  # sorted, closest first
        return top.indices.cpu().numpy(), top.values.float().cpu().numpy()

    return _query_batches(search, len(q_all), len(base), k, exclude, batch_size)


class HNSWIndex:
    """An hnswlib graph over the rows of a matrix, with exclusion, recall check and safe save/load.

    ``M`` links per node, ``ef_construction`` build beam, ``ef`` query beam (``None``: max(2k, 100)
    per query; hnswlib always uses at least the number of results fetched). The build is
    deterministic for a given ``seed`` when ``num_threads == 1`` (the default); more threads
    build faster but the graph then depends on thread timing. Queries use all cores.
    """

    def __init__(
        self, space: Space = "cosine", M: int = 32, ef_construction: int = 200, ef: int | None = None,
        seed: int = 100, num_threads: int = 1,
    ):
        check_choice("space", space, SPACES)
        for key, value, low in (("M", M, 2), ("ef_construction", ef_construction, 1), ("num_threads", num_threads, 1)):
            check_int(key, value, low)
        if ef is not None:
            check_int("ef", ef, 1)
        check_int("seed", seed, 0)
        self.space, self.M, self.ef_construction, self.ef = space, M, ef_construction, ef
        self.seed, self.num_threads = seed, num_threads
        self._index: hnswlib.Index | None = None

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "HNSWIndex":
        """An index with the named parameter set (``default`` or ``notebook``), plus overrides."""
        if name not in PRESETS:
            raise ConfigError("preset", f"unknown HNSW preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def params(self) -> dict[str, Any]:
        """Constructor arguments, JSON-serialisable."""
        return {"space": self.space, "M": self.M, "ef_construction": self.ef_construction, "ef": self.ef,
                "seed": self.seed, "num_threads": self.num_threads}

    def __len__(self) -> int:
        return 0 if self._index is None else self._index.get_current_count()

    @property
    def dim(self) -> int:
        return self._built().dim

    def build(self, vectors: Any) -> "HNSWIndex":
        """Index the rows of ``vectors`` (n, dim) under labels 0..n-1; returns self.

        In cosine space an all-zero row (e.g. the SVD vector of an item without train ratings)
        stays zero: distance 1, similarity 0, to everything.
        """
        data = as_matrix(vectors)
        index = hnswlib.Index(space=self.space, dim=data.shape[1])
        index.init_index(max_elements=len(data), M=self.M, ef_construction=self.ef_construction, random_seed=self.seed)
        index.add_items(data, np.arange(len(data)), num_threads=self.num_threads)
        self._index = index
        log.debug("built HNSW index: %d x %d, %s", len(data), data.shape[1], self.params())
        return self

    def query(self, vectors: Any, k: int, *, exclude: Exclude = None, batch_size: int = 4096) -> tuple[Tensor, Tensor]:
        """Approximate k-NN of each row: (labels (n, k) int64, distances (n, k) float32), closest first.

        ``exclude``: a (n,) array of one label per row (e.g. the row itself; −1 excludes
        nothing), or a sparse (n, len(self)) matrix whose row i lists labels to skip for query i.
        Rows left with fewer than ``k`` results are padded with label −1 and distance +inf. When
        the graph cannot return that many rows (near all of them, among many identical vectors),
        the batch is answered by `exact_search` instead.
        """
        index = self._built()
        queries = as_matrix(vectors)
        if queries.shape[1] != index.dim:
            raise ConfigError("vectors", f"have dimension {queries.shape[1]}, the index has {index.dim}")

        def search(rows: slice, fetch: int) -> tuple[np.ndarray, np.ndarray]:
            index.set_ef(max(fetch, self.ef if self.ef is not None else max(2 * k, 100)))
            try:
                labels, dist = index.knn_query(queries[rows], k=fetch, num_threads=-1)
            except RuntimeError:  # the graph cannot reach `fetch` rows (e.g. many identical vectors): exact
                log.debug("HNSW found fewer than %d of %d rows; exact search for this batch", fetch, len(self))
                labels, dist = exact_search(self.vectors(), queries[rows], fetch, space=self.space)
                return labels.numpy(), dist.numpy()
            return labels.astype(np.int64), dist

        return _query_batches(search, len(queries), len(self), k, exclude, batch_size)

    def similarity(self, distances: Tensor) -> Tensor:
        """Distances from `query` turned into similarities (higher is closer)."""
        return similarity(distances, self.space)

    def vectors(self) -> np.ndarray:
        """The indexed rows as stored (unit-normalized in cosine space), (len(self), dim)."""
        return np.asarray(self._built().get_items(np.arange(len(self)), return_type="numpy"), dtype=np.float32)

    def recall(self, k: int = 10, queries: Any = None, *, sample: int = 1000, seed: int = 0) -> float:
        """Mean share of the exact ``k`` nearest neighbours that `query` returns.

        Without ``queries``, ``sample`` indexed rows (drawn with ``seed``) query the index, each
        excluding itself, so the measure is the neighbour-list quality used by KNN models.
        """
        data = self.vectors()
        if queries is None:
            rows = np.random.default_rng(seed).permutation(len(data))[:sample]
            queries, exclude = data[rows], rows
        else:
            exclude = None
        approx, _ = self.query(queries, k, exclude=exclude)
        exact, _ = exact_search(data, queries, k, space=self.space, exclude=exclude)
        found = (approx[:, :, None] == exact[:, None, :]) & (exact[:, None, :] >= 0)  # (n, k, k)
        return float(found.any(2).sum() / (exact >= 0).sum())

    def save(self, path: str | os.PathLike) -> Path:
        """Write the graph to ``path`` and its parameters to ``path + '.json'``, each atomically."""
        index, path = self._built(), Path(path)
        with atomic_path(path) as tmp:
            index.save_index(str(tmp))
            checksum = sha256(tmp)
        meta = {"format": FORMAT_VERSION, "params": self.params(), "dim": index.dim, "count": len(self),
                "sha256": checksum}
        write_json(_meta_path(path), meta)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, vectors: Any = None) -> "HNSWIndex":
        """An index written by `save`; raises `CheckpointError` when the files disagree.

        The files may come from someone else's run folder: the JSON is schema-checked and the
        graph parsed in numpy (`cfrec.hnsw_file`) before hnswlib reads it, so a damaged or
        crafted file is an error, never a crash. With ``vectors`` (the matrix the index should
        hold) the stored count, dimension and rows must match it too.
        """
        path = Path(path)
        meta = _read_index_meta(_meta_path(path))
        if not path.is_file() or sha256(path) != meta["sha256"]:
            raise CheckpointError(f"{path}: missing, or its checksum does not match {_meta_path(path).name}")
        try:
            self = cls(**meta["params"])
        except (TypeError, ConfigError) as err:
            raise CheckpointError(f"{_meta_path(path)}: params: {err}") from None
        count, dim = meta["count"], meta["dim"]
        expected = None if vectors is None else as_matrix(vectors)
        if expected is not None and expected.shape != (count, dim):
            raise CheckpointError(f"{_meta_path(path)}: holds {count} x {dim} vectors, the model has "
                                  f"{expected.shape[0]} x {expected.shape[1]}")
        stored = check_file(path, count, dim, self.M, self.ef_construction)
        if expected is not None:
            if self.space == "cosine":
                expected = expected / (np.linalg.norm(expected, axis=1, keepdims=True) + 1e-30)
            if not np.allclose(stored.vectors, expected, rtol=1e-5, atol=1e-6):
                raise CheckpointError(f"{path}: its vectors differ from the model's")
        self._index = hnswlib.Index(space=self.space, dim=dim)
        self._index.load_index(str(path), max_elements=count)
        return self

    def _built(self) -> hnswlib.Index:
        if self._index is None:
            raise CheckpointError("the HNSW index is empty: call build(vectors) or HNSWIndex.load(path) first")
        return self._index

    def __repr__(self) -> str:
        return f"HNSWIndex({len(self)} vectors, {self.params()})"


def _query_batches(search, n_queries: int, n_data: int, k: int, exclude: Exclude, batch_size: int) -> tuple[Tensor, Tensor]:
    """Run ``search(rows, fetch) -> (labels, distances)`` batch by batch, dropping excluded labels."""
    check_int("k", k, 1)
    if k > n_data:
        raise ConfigError("k", f"asks for {k} neighbours among only {n_data} indexed vectors")
    excluded = _exclusion_keys(exclude, n_queries, n_data)
    per_row = _exclusion_counts(exclude, n_queries)
    labels = np.full((n_queries, k), -1, dtype=np.int64)
    dists = np.full((n_queries, k), np.inf, dtype=np.float32)
    for start in range(0, n_queries, batch_size):
        rows = slice(start, min(start + batch_size, n_queries))
        fetch = min(n_data, k + int(per_row[rows].max(initial=0)))
        got, dist = search(rows, fetch)  # (B, fetch) each
        keys = np.arange(rows.start, rows.stop)[:, None] * n_data + got
        keep = ~_isin_sorted(keys, excluded) & (got >= 0)
        order = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # survivors first, in distance order
        kept = np.take_along_axis(keep, order, 1)
        labels[rows] = np.where(kept, np.take_along_axis(got, order, 1), -1)
        dists[rows] = np.where(kept, np.take_along_axis(dist, order, 1), np.inf)
    return torch.from_numpy(labels), torch.from_numpy(dists)


def _exclusion_keys(exclude: Exclude, n_queries: int, n_data: int) -> np.ndarray:
    """Excluded (row, label) pairs as sorted keys row * n_data + label."""
    if exclude is None:
        return np.zeros(0, dtype=np.int64)
    if sp.issparse(exclude):
        if exclude.shape != (n_queries, n_data):
            raise ConfigError("exclude", f"sparse matrix must be {(n_queries, n_data)}, got {exclude.shape}")
        coo = sp.coo_matrix(exclude)
        return np.unique(coo.row.astype(np.int64) * n_data + coo.col)
    labels = (exclude.cpu().numpy() if isinstance(exclude, Tensor) else np.asarray(exclude)).astype(np.int64)
    if labels.shape != (n_queries,):
        raise ConfigError("exclude", f"must hold one label per query ({n_queries}), got shape {labels.shape}")
    rows = np.flatnonzero(labels >= 0)
    return np.sort(rows * n_data + labels[rows])


def _isin_sorted(values: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """Elementwise ``values in sorted_keys`` by binary search."""
    if len(sorted_keys) == 0:
        return np.zeros(values.shape, dtype=bool)
    pos = np.searchsorted(sorted_keys, values).clip(max=len(sorted_keys) - 1)
    return sorted_keys[pos] == values


def _exclusion_counts(exclude: Exclude, n_queries: int) -> np.ndarray:
    """How many labels each query row excludes, (n_queries,)."""
    if exclude is None:
        return np.zeros(n_queries, dtype=np.int64)
    if sp.issparse(exclude):
        return np.diff(sp.csr_matrix(exclude).indptr)
    labels = exclude.cpu().numpy() if isinstance(exclude, Tensor) else np.asarray(exclude)
    return (labels >= 0).astype(np.int64)


def _unit_rows(x: Tensor) -> Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _read_index_meta(path: Path) -> dict[str, Any]:
    """The ``.json`` beside an index file, every key checked for presence and type."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as err:
        raise CheckpointError(f"{path}: cannot read the index parameters ({err})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    if meta.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: index format {meta.get('format')!r}, expected {FORMAT_VERSION}")
    for key, kind, low in (("params", dict, None), ("dim", int, 1), ("count", int, 0), ("sha256", str, None)):
        value = meta.get(key)
        if not isinstance(value, kind) or isinstance(value, bool) or (low is not None and value < low):
            want = f"an integer >= {low}" if low is not None else f"a {kind.__name__}"
            raise CheckpointError(f"{path}: {key} must be {want}, got {str(value)[:60]!r}")
    return meta


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")
