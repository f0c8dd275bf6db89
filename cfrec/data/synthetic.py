"""MovieLens-shaped synthetic ratings with planted structure and a known noise floor.

rating = clip(round(μ + b_u + b_i + θ_uᵀx_i + g_uᵀ genres_i / |genres_i| + ε)),  ε ~ N(0, noise²)

Item popularity is Zipf-like and user activity log-normal, so the matrix is as skewed as
MovieLens. ``noise_floor`` is the RMSE of the best possible predictor E[rating | planted
signal], computed exactly from the normal CDF, so tests can ask a model to come within x%.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import ndtr

from cfrec.data.idmap import IdMap
from cfrec.data.ratings import ItemInfo, Ratings
from cfrec.errors import ConfigError

GENRES = (
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)


@dataclass(frozen=True)
class SyntheticData:
    """Generated ratings and the truth behind them, arrays aligned with the ratings' codes."""

    ratings: Ratings
    global_mean: float
    user_bias: np.ndarray  # (n_users,)
    item_bias: np.ndarray  # (n_items,)
    user_factors: np.ndarray  # (n_users, rank)  θ
    item_factors: np.ndarray  # (n_items, rank)  x
    genre_affinity: np.ndarray  # (n_users, n_genres)
    signal: np.ndarray  # (n_ratings,) the noise-free planted value of each rating
    noise: float
    step: float  # rating resolution: 1 stars, 0.5 half stars, 0 continuous
    noise_floor: float  # RMSE of E[rating | signal]: no model can beat it on average

    def expected_rating(self, signal: np.ndarray) -> np.ndarray:
        """E[rating | signal], the optimal prediction (accounts for rounding and clipping)."""
        return _rating_moments(signal, self.noise, self.ratings.scale, self.step)[0]


def synthetic(
    n_users: int = 1000,
    n_items: int = 500,
    n_ratings: int = 50_000,
    rank: int = 8,
    *,
    noise: float = 0.5,
    factor_scale: float = 0.6,
    user_bias_scale: float = 0.35,
    item_bias_scale: float = 0.45,
    genre_scale: float = 0.3,
    global_mean: float = 3.6,
    min_user_ratings: int = 5,
    zipf: float = 0.9,
    scale: tuple[float, float] = (1.0, 5.0),
    step: float = 1.0,
    seed: int = 0,
) -> SyntheticData:
    """Generate ``n_ratings`` distinct (user, item) ratings with planted rank-``rank`` structure.

    ``step`` 1.0 gives integer stars, 0.5 half stars, 0 continuous values (no rounding or
    clipping; the noise floor is then exactly ``noise``). Every user gets at least
    ``min_user_ratings`` ratings. Raw ids are 1..n_users and 1..n_items; items no one
    rated are absent from the item map, as in MovieLens.
    """
    check_synthetic(
        n_users=n_users, n_items=n_items, n_ratings=n_ratings, rank=rank, noise=noise, step=step, seed=seed,
        min_user_ratings=min_user_ratings, scale=scale,
    )
    rng = np.random.default_rng(seed)
    popularity = rng.permutation(1.0 / np.arange(1, n_items + 1) ** zipf)
    popularity /= popularity.sum()
    activity = rng.lognormal(0.0, 1.0, n_users)
    activity /= activity.sum()
    users, items = _sample_pairs(rng, n_users, n_items, n_ratings, popularity, activity, min_user_ratings)

    genres = _sample_genres(rng, n_items)
    years = np.clip(np.round(2000 - rng.gamma(2.0, 8.0, n_items)), 1919, 2020)
    theta = rng.normal(0, factor_scale / np.sqrt(np.sqrt(rank)), (n_users, rank))
    x = rng.normal(0, factor_scale / np.sqrt(np.sqrt(rank)), (n_items, rank))
    b_u = rng.normal(0, user_bias_scale, n_users)
    b_i = rng.normal(0, item_bias_scale, n_items)
    affinity = rng.normal(0, genre_scale, (n_users, len(GENRES)))
    genre_share = genres / genres.sum(axis=1, keepdims=True)
    signal = (
        global_mean + b_u[users] + b_i[items]
        + np.einsum("nk,nk->n", theta[users], x[items])
        + np.einsum("ng,ng->n", affinity[users], genre_share[items])
    )
    values = signal + rng.normal(0, noise, len(signal))
    if step > 0:
        values = np.clip(np.round((values - scale[0]) / step) * step + scale[0], *scale)
    floor = float(np.sqrt(_rating_moments(signal, noise, scale, step)[1].mean()))

    user_map, user_codes = IdMap.from_values(users + 1, "user")
    item_map, item_codes = IdMap.from_values(items + 1, "item")
    u_rows, i_rows = user_map.ids - 1, item_map.ids - 1  # code order → generator row
    titles = np.array([f"Movie {i + 1} ({int(years[i])})" for i in i_rows], dtype=object)
    info = ItemInfo(titles, years[i_rows].astype(np.float64), genres[i_rows].astype(bool), GENRES)
    timestamps = np.sort(rng.uniform(9.5e8, 1.05e9, len(users)))  # increasing, like a log
    ratings = Ratings(
        user_codes, item_codes, values.astype(np.float32), user_map, item_map, timestamps=timestamps,
        item_info=info, scale=scale if step > 0 else None, name=f"synthetic-{seed}",
        meta={"source": "synthetic", "step": step, "seed": seed},
    )
    return SyntheticData(
        ratings, global_mean, b_u[u_rows], b_i[i_rows], theta[u_rows], x[i_rows], affinity[u_rows],
        signal, noise, step, floor,
    )


def check_synthetic(**options: Any) -> None:
    """`ConfigError` naming the first impossible option of `synthetic`, before any work; options
    left out take `synthetic`'s own defaults (written once, in its signature)."""
    defaults = {name: p.default for name, p in inspect.signature(synthetic).parameters.items()}
    o = {**defaults, **options}
    n_users, n_items, n_ratings, rank = o["n_users"], o["n_items"], o["n_ratings"], o["rank"]
    noise, step, seed, min_user_ratings, scale = o["noise"], o["step"], o["seed"], o["min_user_ratings"], o["scale"]
    for key, value, low in (("n_users", n_users, 1), ("n_items", n_items, 1), ("n_ratings", n_ratings, 1),
                            ("rank", rank, 1), ("min_user_ratings", min_user_ratings, 0), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ConfigError(key, f"must be an integer ≥ {low}, got {value!r}")
    for key, value in (("noise", noise), ("step", step)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not np.isfinite(value) or value < 0:
            raise ConfigError(key, f"must be a finite number ≥ 0, got {value!r}")
    if noise == 0 and step > 0:
        raise ConfigError("noise", "must be > 0 when ratings are rounded (step > 0); use step=0 for noise-free values")
    low, high = scale
    if not low < high or (step > 0 and step > high - low):
        raise ConfigError("step", f"{step} does not fit the rating scale {low:g}–{high:g}")
    if n_ratings > n_users * n_items:
        raise ConfigError("n_ratings", f"{n_ratings} exceeds the {n_users * n_items} possible (user, item) pairs")
    if min_user_ratings * n_users > n_ratings:
        raise ConfigError("n_ratings", f"{n_ratings} is below min_user_ratings × n_users = {min_user_ratings * n_users}")
    if min_user_ratings > n_items:
        raise ConfigError("n_items", f"{n_items} is below min_user_ratings = {min_user_ratings}")


def _sample_pairs(rng, n_users, n_items, n_ratings, popularity, activity, min_user_ratings):
    """Distinct (user, item) pairs: ``min_user_ratings`` per user, the rest by activity × popularity."""
    users = np.repeat(np.arange(n_users), min_user_ratings)
    keys = np.empty(0, dtype=np.int64)
    while True:
        items = rng.choice(n_items, size=len(users), p=popularity)
        keys = np.concatenate([keys, users.astype(np.int64) * n_items + items])
        _, first = np.unique(keys, return_index=True)
        keys = keys[np.sort(first)]  # distinct pairs, in draw order
        per_user = np.bincount(keys // n_items, minlength=n_users)
        short = np.repeat(np.arange(n_users), np.maximum(0, min_user_ratings - per_user))
        if len(short) == 0 and len(keys) >= n_ratings:
            break
        extra = max(0, n_ratings - len(keys))
        users = np.concatenate([short, rng.choice(n_users, size=int(extra * 1.1) + 16, p=activity)])
    # every user's first min_user_ratings pairs, then the others in draw order up to n_ratings
    base = _rank_within(keys // n_items) < min_user_ratings
    rest = np.flatnonzero(~base)[: n_ratings - int(base.sum())]
    chosen = np.sort(np.concatenate([np.flatnonzero(base), rest]))
    return keys[chosen] // n_items, keys[chosen] % n_items


def _rank_within(groups: np.ndarray) -> np.ndarray:
    """0-based occurrence number of each element among equal values, in array order."""
    order = np.argsort(groups, kind="stable")
    sorted_groups = groups[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_groups)) + 1]
    rank = np.empty(len(groups), dtype=np.int64)
    rank[order] = np.arange(len(groups)) - np.repeat(starts, np.diff(np.r_[starts, len(groups)]))
    return rank


def _sample_genres(rng: np.random.Generator, n_items: int) -> np.ndarray:
    """(n_items, 18) multi-hot: 1–3 genres per item, Drama and Comedy most common."""
    weight = rng.dirichlet(np.full(len(GENRES), 0.8))
    weight[[GENRES.index("Drama"), GENRES.index("Comedy")]] += 0.25
    weight /= weight.sum()
    counts = rng.choice([1, 2, 3], size=n_items, p=[0.5, 0.35, 0.15])
    keys = rng.random((n_items, len(GENRES))) ** (1.0 / weight)  # weighted sampling without replacement
    ranks = np.argsort(-keys, axis=1)
    multi_hot = np.zeros((n_items, len(GENRES)), dtype=bool)
    rows = np.repeat(np.arange(n_items), counts)
    cols = ranks[rows, _rank_within(rows)]
    multi_hot[rows, cols] = True
    return multi_hot


def _rating_moments(
    signal: np.ndarray, noise: float, scale: tuple[float, float] | None, step: float
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of the observed rating given its planted signal."""
    if step <= 0 or scale is None:
        return signal, np.full_like(signal, noise**2)
    levels = np.arange(scale[0], scale[1] + step / 2, step)
    edges = (levels[:-1] + levels[1:]) / 2  # a value rounds to level k between edges k-1 and k
    cdf = ndtr((edges[None, :] - signal[:, None]) / noise)  # (n, L-1)
    prob = np.diff(np.concatenate([np.zeros((len(signal), 1)), cdf, np.ones((len(signal), 1))], axis=1), axis=1)
    mean = prob @ levels
    var = prob @ levels**2 - mean**2
    return mean, np.maximum(var, 0.0)
