"""The reference notebook's SVD-KNN code, re-implemented faithfully for timing and cross-checks.

Same per-pair loops as the notebook (ML-1M SVD-KNN, HNSW, Recall@50): one cosine similarity row
per prediction (the whole vector matrix re-normalized on every call, as scikit-learn's
``cosine_similarity`` does), ``np.argpartition`` for the top k, sparse row/column reads of the
train matrix, and the dictionary-based top-K and recall loops. Only scikit-learn is replaced:
``normalize``/``cosine_similarity`` by numpy equivalents and ``TruncatedSVD`` by cfrec's
re-implementation of its algorithm. The notebook read ``k``, ``train_sparse`` and ``ann_index``
from globals; here they are arguments. Not part of the package: benchmarks import it.
"""

from __future__ import annotations

import time
from typing import Callable

import hnswlib
import numpy as np
from scipy.sparse import csr_matrix

from cfrec.data import Ratings
from cfrec.models.svd import positive_peaks, randomized_svd

TestTuple = tuple[int, int, float]


def build_train_test(train: Ratings, test: Ratings) -> tuple[csr_matrix, list[TestTuple], np.ndarray, np.ndarray]:
    """The notebook's ``build_train_test``: users × movies CSR over those with train ratings (codes
    in sorted raw-id order, as pandas categories give) and the test tuples mapped into it, pairs
    unknown to train dropped. Also returns the cfrec user and item codes of the matrix's rows/columns."""
    users = np.flatnonzero(train.user_counts() > 0)
    items = np.flatnonzero(train.item_counts() > 0)
    u_train, m_train = np.searchsorted(users, train.users), np.searchsorted(items, train.items)
    values = train.values.astype(np.int64) if np.all(train.values % 1 == 0) else train.values  # pandas read ints
    mat = csr_matrix((values, (u_train, m_train)), shape=(len(users), len(items)))
    u_test = np.where(np.isin(test.users, users), np.searchsorted(users, test.users), -1)
    m_test = np.where(np.isin(test.items, items), np.searchsorted(items, test.items), -1)
    mask = (u_test != -1) & (m_test != -1)
    test_tuples = list(zip(u_test[mask].tolist(), m_test[mask].tolist(), test.values[mask].tolist()))
    return mat, test_tuples, users, items


def normalize(x: np.ndarray) -> np.ndarray:
    """scikit-learn's ``normalize(x, axis=1)``: rows over their L2 norm, zero rows left alone."""
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    norms[norms == 0.0] = 1.0
    return x / norms[:, np.newaxis]


def cosine_similarity(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """scikit-learn's ``cosine_similarity``: both operands normalized on every call."""
    return normalize(x) @ normalize(y).T


def truncated_svd_transform(mat: csr_matrix, dim: int = 128, random_state: int = 42) -> np.ndarray:
    """``TruncatedSVD(n_components=dim, random_state=random_state).fit_transform(mat)``."""
    _, _, vt = randomized_svd(mat, dim, seed=random_state)
    return np.asarray(mat @ positive_peaks(vt.T))


def build_user_vectors(train_mat: csr_matrix, dim: int = 128) -> np.ndarray:
    return normalize(truncated_svd_transform(train_mat.astype("float32"), dim))


def build_item_vectors(train_mat: csr_matrix, dim: int = 128) -> np.ndarray:
    return normalize(truncated_svd_transform(train_mat.T.astype("float32"), dim))


def predict_rating(user_vectors, train_mat, user_id, movie_id, k=20):
    """User-based prediction for one pair (the notebook's cell 5)."""
    user_vector = user_vectors[user_id].reshape(1, -1)
    sim = cosine_similarity(user_vector, user_vectors).flatten()
    sim[user_id] = -1  # exclude the user itself
    top_k_users = np.argpartition(sim, -k)[-k:]
    top_k_sims = sim[top_k_users]
    ratings = train_mat[top_k_users, movie_id].toarray().flatten()
    mask = ratings > 0
    if np.sum(mask) == 0:
        return 0.0
    weighted_ratings = ratings[mask] * top_k_sims[mask]
    return np.sum(weighted_ratings) / np.sum(top_k_sims[mask])


def predict_rating_byitem(item_vectors, train_mat, user_id, movie_id, k=20):
    """Item-based prediction for one pair (the notebook's cell 8)."""
    item_vector = item_vectors[movie_id].reshape(1, -1)
    sim = cosine_similarity(item_vector, item_vectors).flatten()
    sim[movie_id] = -1  # exclude the movie itself
    top_k_items = np.argpartition(sim, -k)[-k:]
    top_k_sims = sim[top_k_items]
    ratings = train_mat[user_id, top_k_items].toarray().flatten()
    mask = ratings > 0
    if np.sum(mask) == 0:
        return 0.0
    weighted_ratings = ratings[mask] * top_k_sims[mask]
    return np.sum(weighted_ratings) / np.sum(top_k_sims[mask])


def build_ann_index(x, ef=200, M=128):
    """The notebook's hnswlib index (cosine space, default seed and threads)."""
    index = hnswlib.Index(space="cosine", dim=x.shape[1])
    index.init_index(max_elements=x.shape[0], ef_construction=ef, M=M)
    index.add_items(x)
    index.set_ef(ef)
    return index


def get_similar_users(ann_index, user_vector, k=20):
    labels, distances = ann_index.knn_query(user_vector, k=k)
    sims = 1 - distances[0]  # cosine distance in [0, 2]
    return labels[0], sims


def predict_rating_ann(ann_index, user_vectors, train_mat, user_id, movie_id, k=20):
    """User-based prediction with HNSW neighbours (k results, the user itself dropped if found)."""
    user_vector = user_vectors[user_id].reshape(1, -1)
    top_k_users, top_k_sims = get_similar_users(ann_index, user_vector, k=k)
    mask = top_k_users != user_id
    top_k_users = top_k_users[mask]
    top_k_sims = top_k_sims[mask]
    ratings = train_mat[top_k_users, movie_id].toarray().flatten()
    mask = ratings > 0
    if np.sum(mask) == 0:
        return 0.0
    weighted_ratings = ratings[mask] * top_k_sims[mask]
    return np.sum(weighted_ratings) / np.sum(top_k_sims[mask])


PairPredictor = Callable[[int, int, int], float]  # (user, movie, k) -> rating


def evaluate(pred: PairPredictor, test_tuples: list[TestTuple], k: int = 100) -> tuple[float, list[float], list[float]]:
    """The notebook's ``evaluate`` loop: (accuracy |error| < 0.5, errors, predictions)."""
    hits, errors, preds = 0, [], []
    for user_id, movie_id, true_rating in test_tuples:
        pred_rating = pred(user_id, movie_id, k)
        preds.append(pred_rating)
        errors.append(pred_rating - true_rating)
        if abs(pred_rating - true_rating) < 0.5:
            hits += 1
    return (hits / len(test_tuples) if test_tuples else 0), errors, preds


def timed_evaluate(pred: PairPredictor, test_tuples: list[TestTuple], k: int = 100) -> dict[str, float | list[float]]:
    """`evaluate` with its wall time: accuracy, RMSE, seconds, seconds per pair, predictions."""
    start = time.perf_counter()
    accuracy, errors, preds = evaluate(pred, test_tuples, k)
    seconds = time.perf_counter() - start
    rmse = float(np.sqrt(np.mean(np.square(errors))))
    return {"accuracy": accuracy, "rmse": rmse, "seconds": seconds, "seconds_per_pair": seconds / len(test_tuples),
            "predictions": preds}


def recommend_topk(train_mat, user_vectors, ann_index, user, Krec=50):
    """Top-``Krec`` unwatched movies by Σ over the 100 HNSW neighbours of sim × rating (cell 9)."""
    user_vector = user_vectors[user].reshape(1, -1)
    top_k_users, top_k_sims = get_similar_users(ann_index, user_vector, k=100)
    watched_set = set(train_mat[user].nonzero()[1])
    score_dict = {}
    for similar_user, sim in zip(top_k_users, top_k_sims):
        user_ratings = train_mat[similar_user].toarray().flatten()
        for movie_id, rating in enumerate(user_ratings):
            if rating > 0 and movie_id not in watched_set:
                if movie_id not in score_dict:
                    score_dict[movie_id] = 0.0
                score_dict[movie_id] += rating * sim
    ranked_movies = sorted(score_dict.items(), key=lambda x: x[1], reverse=True)
    return [movie_id for movie_id, score in ranked_movies[:Krec]]


def recall_at_k(train_mat, user_vectors, ann_index, test_tuples, Krec=50, like_threshold=4.0, max_users=None):
    """Mean recall of liked test movies in each user's top ``Krec`` (cell 10): (recall, users)."""
    test_map = {}
    for u, m, r in test_tuples:
        test_map.setdefault(u, []).append((m, r))
    sum_recall, cnt_user = 0, 0
    for u, pairs in test_map.items():
        liked = [m for m, r in pairs if r >= like_threshold]
        if not liked:
            continue
        if max_users is not None and cnt_user >= max_users:
            break
        rec_list = recommend_topk(train_mat, user_vectors, ann_index, u, Krec=Krec)
        hit = sum(1 for m in liked if m in rec_list)
        sum_recall += hit / len(liked)
        cnt_user += 1
    return sum_recall / cnt_user, cnt_user
