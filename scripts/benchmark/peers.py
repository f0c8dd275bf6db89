"""Peers: other libraries' models on cfrec's split, fitted in turn with cfrec's own (peer, cfrec,
peer, cfrec…; medians of the repeats) and all scored by cfrec's evaluator, so that every number is
computed the same way.

Rating peers (scored by RMSE and accuracy as well as ranking): Surprise ``SVD()``, cornac ``MF()``.
Ranking peers (Recall@K, NDCG@K; their scores are not ratings): implicit ``AlternatingLeastSquares``
and ``BayesianPersonalizedRanking``, cornac ``EASE``, and EASE written here as a reference
(`ease_weights`: B = −P / diag(P) with P = (XᵀX + λI)⁻¹ and a zero diagonal; λ chosen by NDCG@10 on
a validation slice of train, never on test). Each library keeps its own defaults (seeded); a
library that is not installed is skipped with a note (``pip install cornac implicit scikit-surprise``).
"""

from __future__ import annotations

import importlib.metadata
import time
from typing import Any, Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch import Tensor

import benchtools as bt
import cfrec.data
from cfrec.data import Ratings
from cfrec.evaluate import evaluate, ranking_metrics
from cfrec.models.base import Recommender

from .data import fit_fresh

EASE_LAMBDAS = (50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0)
CFREC_MODELS = ("cf", "cf_fast", "cf_weighted")  # the cfrec presets interleaved with the peers


class PeerModel(Recommender):
    """A peer's fitted model in cfrec's codes, for cfrec's evaluator: factors and biases
    (score = θ_u·x_i + b_u + b_i + μ), or a function giving the score rows of some users."""

    name = "peer"

    def __init__(
        self, train: Ratings, label: str, *, user_factors: np.ndarray | None = None, item_factors: np.ndarray | None = None,
        user_bias: np.ndarray | None = None, item_bias: np.ndarray | None = None, global_bias: float = 0.0,
        rows: Callable[[np.ndarray], np.ndarray] | None = None, predicts_ratings: bool = True,
    ):
        self._remember_shape(train)
        self.label, self.predicts_ratings = label, predicts_ratings
        if not predicts_ratings:
            self.rating_range = None  # scores: nothing to clip
        as_tensor = lambda a: None if a is None else torch.as_tensor(np.asarray(a, dtype=np.float32))  # noqa: E731
        self.user_vectors, self.item_vectors = as_tensor(user_factors), as_tensor(item_factors)
        self.user_bias = as_tensor(user_bias if user_bias is not None else np.zeros(self.n_users))
        self.item_bias = as_tensor(item_bias if item_bias is not None else np.zeros(self.n_items))
        self.global_bias, self.rows = float(global_bias), rows

    def config(self) -> dict[str, Any]:
        return {"peer": self.label}

    def score(self, users: Tensor) -> Tensor:
        """(len(users), n_items) scores."""
        if self.rows is not None:
            return torch.as_tensor(np.asarray(self.rows(users.cpu().numpy()), dtype=np.float32))
        scores = self.user_vectors[users] @ self.item_vectors.T if self.user_vectors is not None else \
            torch.zeros(len(users), self.n_items)
        return scores + self.user_bias[users, None] + self.item_bias[None, :] + self.global_bias

    def predict(self, users: Tensor, items: Tensor) -> Tensor:
        """One score per pair (clipped into the rating range for rating peers)."""
        if self.rows is not None:  # score rows of the distinct users, then gather
            distinct, where = torch.unique(users, return_inverse=True)
            return self.score(distinct)[where, items]
        dot = (self.user_vectors[users] * self.item_vectors[items]).sum(1) if self.user_vectors is not None else 0.0
        return self.clip(dot + self.user_bias[users] + self.item_bias[items] + self.global_bias)


# -- the peers ----------------------------------------------------------------------------------------
def seen_matrix(train: Ratings, binary: bool = True) -> sp.csr_matrix:
    """Users × items CSR of ``train``: 1 per rating (``binary``) or the rating."""
    values = np.ones(len(train), np.float32) if binary else train.values.astype(np.float32)
    return sp.csr_matrix((values, (train.users, train.items)), shape=(train.n_users, train.n_items))


def _codes(mapping: dict[Any, int], size: int) -> tuple[np.ndarray, np.ndarray]:
    """(cfrec codes, the library's inner indices) of a raw-id → inner-index dict whose raw ids are cfrec codes."""
    raw = np.fromiter(mapping.keys(), dtype=np.int64, count=len(mapping))
    inner = np.fromiter(mapping.values(), dtype=np.int64, count=len(mapping))
    return raw, inner


def _scatter(values: np.ndarray, raw: np.ndarray, inner: np.ndarray, size: int) -> np.ndarray:
    """Rows of ``values`` (indexed by the library's inner index) placed at cfrec codes; zeros elsewhere."""
    out = np.zeros((size, *values.shape[1:]), dtype=np.float32)
    out[raw] = values[inner]
    return out


def surprise_trainset(surprise: Any, train: Ratings) -> Any:
    """Surprise's Trainset of ``train``, cfrec's codes as raw ids."""
    frame = pd.DataFrame({"user": train.users, "item": train.items, "rating": train.values.astype(np.float64)})
    scale = train.scale or (float(train.values.min()), float(train.values.max()))
    return surprise.Dataset.load_from_df(frame, surprise.Reader(rating_scale=scale)).build_full_trainset()


def fit_surprise_svd(train: Ratings, threads: int) -> PeerModel:
    import surprise

    trainset = surprise_trainset(surprise, train)
    algo = surprise.SVD(random_state=0).fit(trainset)
    users, items = _codes(trainset._raw2inner_id_users, train.n_users), _codes(trainset._raw2inner_id_items, train.n_items)
    return PeerModel(train, "Surprise SVD", user_factors=_scatter(algo.pu, *users, train.n_users),
                     item_factors=_scatter(algo.qi, *items, train.n_items), user_bias=_scatter(algo.bu, *users, train.n_users),
                     item_bias=_scatter(algo.bi, *items, train.n_items), global_bias=trainset.global_mean)


def _cornac_dataset(train: Ratings) -> Any:
    import cornac

    return cornac.data.Dataset.from_uir(list(zip(train.users.tolist(), train.items.tolist(), train.values.tolist())), seed=0)


def fit_cornac_mf(train: Ratings, threads: int) -> PeerModel:
    from cornac.models import MF

    data = _cornac_dataset(train)
    model = MF(seed=0, num_threads=threads).fit(data)
    users, items = _codes(data.uid_map, train.n_users), _codes(data.iid_map, train.n_items)
    return PeerModel(train, "cornac MF", user_factors=_scatter(model.u_factors, *users, train.n_users),
                     item_factors=_scatter(model.i_factors, *items, train.n_items),
                     user_bias=_scatter(model.u_biases, *users, train.n_users),
                     item_bias=_scatter(model.i_biases, *items, train.n_items), global_bias=model.global_mean)


def fit_cornac_ease(train: Ratings, threads: int) -> PeerModel:
    from cornac.models import EASE

    data = _cornac_dataset(train)
    model = EASE(verbose=False, seed=0).fit(data)
    items, item_inner = _codes(data.iid_map, train.n_items)
    weights = np.zeros((train.n_items, train.n_items), np.float32)
    weights[np.ix_(items, items)] = model.B[np.ix_(item_inner, item_inner)]
    x = seen_matrix(train, binary=False)  # cornac's EASE reads the rating matrix
    return PeerModel(train, "cornac EASE", rows=lambda u: x[u] @ weights, predicts_ratings=False)


def fit_implicit(kind: str) -> Callable[[Ratings, int], PeerModel]:
    def fitter(train: Ratings, threads: int) -> PeerModel:
        from implicit.cpu.als import AlternatingLeastSquares
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        cls = AlternatingLeastSquares if kind == "ALS" else BayesianPersonalizedRanking
        model = cls(random_state=0, num_threads=threads)
        model.fit(seen_matrix(train), show_progress=False)
        return PeerModel(train, f"implicit {kind}", user_factors=model.user_factors, item_factors=model.item_factors,
                         predicts_ratings=False)
    return fitter


def ease_weights(x: sp.csr_matrix, lam: float, gram: np.ndarray | None = None) -> np.ndarray:
    """EASE's item-item weights (Steck 2019): P = (XᵀX + λI)⁻¹, B = −P / diag(P) column by column, diag(B) = 0."""
    g = (x.T @ x).toarray().astype(np.float64) if gram is None else gram.copy()
    g[np.diag_indices_from(g)] += lam
    p = np.linalg.inv(g)
    weights = p / -np.diag(p)[None, :]
    weights[np.diag_indices_from(weights)] = 0.0
    return weights.astype(np.float32)


def ease_model(train: Ratings, lam: float, gram: np.ndarray | None = None) -> PeerModel:
    x = seen_matrix(train)
    weights = ease_weights(x, lam, gram)
    return PeerModel(train, f"EASE λ={lam:g}", rows=lambda u: x[u] @ weights, predicts_ratings=False)


def choose_ease_lambda(train: Ratings, lambdas: tuple[float, ...] = EASE_LAMBDAS) -> dict[str, Any]:
    """λ of the reference EASE with the best NDCG@10 on a validation slice of ``train`` (10 % of each
    user's train ratings, per-user split seed 1): the test set is never seen."""
    start = time.perf_counter()
    fit_part, valid = cfrec.data.per_user_split(train, test_ratio=0.1, seed=1, method="vectorized")
    x = seen_matrix(fit_part)
    gram = (x.T @ x).toarray().astype(np.float64)
    scores = {lam: ranking_metrics(ease_model(fit_part, lam, gram), fit_part, valid, ks=(10,))["ndcg@10"] for lam in lambdas}
    best = max(scores, key=scores.get)
    return {"lambda": best, "valid_ndcg@10": {f"{lam:g}": s for lam, s in scores.items()},
            "seconds": time.perf_counter() - start}


PEERS: dict[str, tuple[str, str, Callable[[Ratings, int], PeerModel]]] = {  # name: (kind, package, fitter)
    "Surprise SVD": ("rating", "scikit-surprise", fit_surprise_svd),
    "cornac MF": ("rating", "cornac", fit_cornac_mf),
    "implicit ALS": ("ranking", "implicit", fit_implicit("ALS")),
    "implicit BPR": ("ranking", "implicit", fit_implicit("BPR")),
    "cornac EASE": ("ranking", "cornac", fit_cornac_ease),
    "EASE (reference)": ("ranking", "numpy", None),  # the fitter needs λ: built in measure_peers
}
IMPORTS = {"scikit-surprise": "surprise", "cornac": "cornac", "implicit": "implicit", "numpy": "numpy"}


def available(package: str) -> str | None:
    """The installed version of ``package``, or None when it does not import."""
    try:
        __import__(IMPORTS[package])
        return importlib.metadata.version(package)
    except Exception:  # noqa: BLE001 - a broken install is as good as none
        return None


def measure_peers(
    train: Ratings, test: Ratings, *, device: str, repeats: int, warmup: int, k: int = 50,
    peers: list[str] | None = None, cfrec_models: list[str] | None = None,
) -> dict[str, Any]:
    """Every peer and cfrec model fitted in turn, ``warmup + repeats`` rounds (timings: the repeats),
    then each last fit scored by `cfrec.evaluate.evaluate` on the test set."""
    threads = torch.get_num_threads()
    rows: dict[str, dict[str, Any]] = {}
    fitters: dict[str, Callable[[], Recommender]] = {}
    for name in cfrec_models if cfrec_models is not None else CFREC_MODELS:
        fitters[f"cfrec {name}"] = lambda name=name: fit_fresh({"model": name}, train, device)
        rows[f"cfrec {name}"] = {"library": "cfrec", "kind": None}  # known once fitted
    for name in peers if peers is not None else PEERS:
        kind, package, fitter = PEERS[name]
        version = available(package)
        rows[name] = {"library": package, "version": version, "kind": kind}
        if version is None:
            rows[name]["skipped"] = f"{package} is not installed (pip install {package})"
        elif fitter is None:  # the reference EASE: λ on validation first, off the clock
            choice = choose_ease_lambda(train)
            rows[name]["lambda"] = choice
            fitters[name] = lambda lam=choice["lambda"]: ease_model(train, lam)
        else:
            fitters[name] = lambda fitter=fitter: fitter(train, threads)
    seconds: dict[str, list[float]] = {name: [] for name in fitters}
    models: dict[str, Recommender] = {}
    for repeat in range(warmup + repeats):  # interleaved: peer, cfrec, peer, cfrec… so load drift hits all
        for name, fitter in list(fitters.items()):
            try:
                elapsed, models[name] = bt.timed(fitter, device)
            except Exception as err:  # noqa: BLE001 - one peer failing must not stop the others
                rows[name]["error"] = f"{type(err).__name__}: {err}"
                fitters.pop(name)
                continue
            print(f"  round {repeat + 1}: {name} {elapsed:.1f} s", flush=True)
            if repeat >= warmup:
                seconds[name].append(elapsed)
    for name, model in models.items():
        if "error" in rows[name]:
            continue
        quality = evaluate(model, train, test, ks=sorted({10, k}), device=device)
        keys = ("rmse", "mae", "accuracy", "recall@10", f"recall@{k}", "ndcg@10", f"ndcg@{k}", "n_ranking_users")
        if rows[name]["kind"] is None:
            rows[name]["kind"] = "rating" if model.predicts_ratings else "ranking"
        rows[name].update(fit=bt.summarize(seconds[name]), predicts_ratings=bool(model.predicts_ratings),
                          quality={key: quality[key] for key in keys if key in quality})
    return {"threads": threads, "k": k, "rows": rows}
