"""Truncated SVD of a sparse rating matrix, without scikit-learn.

`randomized_svd` is the randomized range finder of Halko, Martinsson & Tropp (2011, algorithm 4.4
with LU-normalized power iterations) in the exact variant that scikit-learn's
``TruncatedSVD(algorithm="randomized")`` runs by default: ``n_oversamples=10``, ``n_iter=5``, the
Gaussian test matrix drawn by ``numpy.random.RandomState(seed).normal``, the tall orientation (the
matrix is transposed when it has fewer rows than columns) and arithmetic in the matrix's dtype.
`svd_embeddings` then builds user and item vectors as that estimator's ``fit_transform`` does
(the data projected on the sign-normalized singular vectors), so with the same seed it reproduces
the reference notebook's vectors up to rounding, from one decomposition instead of two.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.linalg as la
import scipy.sparse as sp

from cfrec.data.ratings import Ratings
from cfrec.errors import ConfigError

log = logging.getLogger(__name__)


def randomized_svd(
    matrix: sp.spmatrix | np.ndarray, dim: int, *, n_oversamples: int = 10, n_iter: int = 5, seed: int = 42
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Approximate top-``dim`` SVD ``(U (m, dim), s (dim,), Vt (dim, n))``, s descending.

    Deterministic for a given ``seed``; float32 input is computed in float32, as scikit-learn does.
    Singular vectors carry LAPACK's arbitrary signs (see `positive_peaks`).
    """
    m, n = matrix.shape
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not 1 <= dim <= min(m, n):
        raise ConfigError("dim", f"must be an integer in [1, {min(m, n)}] for a {m} x {n} matrix, got {dim!r}")
    transpose = m < n
    a = matrix.T if transpose else matrix  # (rows >= cols)
    dtype = a.dtype if a.dtype in (np.float32, np.float64) else np.float64
    q = np.random.RandomState(seed).normal(size=(a.shape[1], dim + n_oversamples)).astype(dtype)  # (cols, l)
    for _ in range(n_iter):
        q = la.lu(a @ q, permute_l=True, check_finite=False)[0]  # (rows, l)
        q = la.lu(a.T @ q, permute_l=True, check_finite=False)[0]  # (cols, l)
    q = la.qr(a @ q, mode="economic", check_finite=False)[0]  # (rows, l) orthonormal basis of the range
    u_hat, s, vt = la.svd(np.asarray(q.T @ a), full_matrices=False, check_finite=False, lapack_driver="gesdd")
    u = q @ u_hat  # (rows, l)
    if transpose:
        u, vt = vt.T, u.T
    return u[:, :dim], s[:dim], vt[:dim]


def positive_peaks(vectors: np.ndarray) -> np.ndarray:
    """Columns sign-flipped so that each one's largest-magnitude entry is positive (the sign rule
    of scikit-learn's ``svd_flip(u_based_decision=False)`` for ``TruncatedSVD``)."""
    peaks = vectors[np.argmax(np.abs(vectors), axis=0), np.arange(vectors.shape[1])]  # (dim,)
    return vectors * np.where(peaks < 0, -1, 1).astype(vectors.dtype)


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; all-zero rows stay zero."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1, norms)


def svd_embeddings(train: Ratings, dim: int, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalized (user vectors (n_users, dim), item vectors (n_items, dim)), float32.

    The SVD runs on the compacted float32 matrix A of the users and items that have train ratings
    (in code order), as the reference notebook built it; the others get zero vectors. User vectors
    are the rows of A·V, item vectors those of Aᵀ·U: what ``TruncatedSVD(dim, random_state=seed)
    .fit_transform`` returns for A and for Aᵀ, whose two fits perform this same decomposition.
    """
    matrix = sp.csr_matrix((train.values.astype(np.float32), (train.users, train.items)),
                           shape=(train.n_users, train.n_items))
    log.debug("SVD of %s", train.name)
    return matrix_embeddings(matrix, dim, seed)


def matrix_embeddings(matrix: sp.csr_matrix, dim: int, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """`svd_embeddings` of a (users × items) rating matrix whose stored cells are the ratings."""
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    matrix.sum_duplicates()  # canonical order, as a COO-built matrix
    users = np.flatnonzero(np.diff(matrix.indptr) > 0)
    items = np.flatnonzero(np.bincount(matrix.indices, minlength=matrix.shape[1]) > 0)
    compact = matrix[users][:, items]
    u, _, vt = randomized_svd(compact, dim, seed=seed)
    user_vectors = np.zeros((matrix.shape[0], dim), dtype=np.float32)
    item_vectors = np.zeros((matrix.shape[1], dim), dtype=np.float32)
    user_vectors[users] = normalize_rows(compact @ positive_peaks(vt.T))
    item_vectors[items] = normalize_rows(compact.T @ positive_peaks(u))
    log.debug("SVD: %d x %d matrix, dim %d", len(users), len(items), dim)
    return user_vectors, item_vectors
