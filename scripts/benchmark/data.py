"""Data of the benchmark: MovieLens or synthetic splits, synthetic shapes, and cfrec models built from
their config presets (``cfrec/conf/model/*.yaml``) with cfrec's public API alone."""

from __future__ import annotations

import inspect
import math
from importlib.resources import files
from pathlib import Path
from typing import Any, Callable, Sequence

import cfrec.data
from cfrec.apps.schema import model_preset, preset
from cfrec.data import Ratings
from cfrec.errors import ConfigError
from cfrec.experiment import make_split
from cfrec.models.base import Recommender
from cfrec.models.registry import build_model

ANCHOR = (1_000_000, 6040, 3706)  # MovieLens 1M: ratings, users, movies
ML25M = (25_000_095, 162_541, 59_047)  # MovieLens 25M
SYNTHETIC_DEFAULT = 1_000_000  # ``--data synthetic``: ML-1M's size and shape
# how users and movies grow with the number of ratings
SHAPES = {
    "ml1m": "users = 6040·√(ratings/1M), movies = 3706·√(ratings/1M) (ML-1M's shape and density at every size)",
    "ml25m": "users = 6040·(ratings/1M)^{:.3f}, movies = 3706·(ratings/1M)^{:.3f} (the power laws through ML-1M "
             "and ML-25M: 162,541 users × 59,047 movies at 25M ratings; density falls as the data grows)",
}
# preferred order of the models table; presets not listed follow in name order
MODEL_ORDER = ("global_mean", "bias", "popularity", "user_knn", "item_knn", "cf", "cf_fast", "cf_weighted", "content")


def shape_exponents(shape: str) -> tuple[float, float]:
    """(users, movies) exponents of ratings/1M for a synthetic ``shape`` (`SHAPES`)."""
    if shape == "ml1m":
        return 0.5, 0.5
    if shape == "ml25m":
        growth = math.log(ML25M[0] / ANCHOR[0])
        return math.log(ML25M[1] / ANCHOR[1]) / growth, math.log(ML25M[2] / ANCHOR[2]) / growth
    raise ValueError(f"unknown synthetic shape {shape!r}; known: {', '.join(SHAPES)}")


def shape_law(shape: str) -> str:
    """The sentence describing ``shape``."""
    return SHAPES[shape].format(*shape_exponents(shape))


def synthetic_shape(n_ratings: int, shape: str = "ml1m") -> tuple[int, int]:
    """(users, movies) of a synthetic data set with ``n_ratings`` ratings, grown by ``shape``."""
    a, b = shape_exponents(shape)
    scale = n_ratings / ANCHOR[0]
    return round(ANCHOR[1] * scale**a), round(ANCHOR[2] * scale**b)


def synthetic_ratings(n_ratings: int, seed: int = 0, shape: str = "ml1m") -> Ratings:
    """MovieLens-shaped synthetic ratings (`cfrec.data.synthetic`) of the `synthetic_shape` for ``n_ratings``."""
    n_users, n_items = synthetic_shape(n_ratings, shape)
    return cfrec.data.synthetic(n_users=n_users, n_items=n_items, n_ratings=n_ratings, seed=seed).ratings


def synthetic_split(n_ratings: int, seed: int = 0, shape: str = "ml1m") -> tuple[Ratings, Ratings]:
    """`synthetic_ratings` with 10 % of each user's ratings held out (the vectorized per-user split)."""
    split = cfrec.data.per_user_split(synthetic_ratings(n_ratings, seed, shape), method="vectorized")
    return split.train, split.test


def data_label(data: str) -> str:
    """A short name for a ``--data`` value: the folder or file name, ``synthetic-N``, or the release name."""
    if data == "synthetic" or data.startswith("synthetic:"):
        n = SYNTHETIC_DEFAULT if data == "synthetic" else int(float(data.split(":", 1)[1]))
        return f"synthetic-{n}"
    return Path(data).name or data


def load_split(data: str, split: str) -> tuple[Ratings, Ratings]:
    """(train, test) of ``data`` (a MovieLens folder, ratings file, release name, ``synthetic`` or
    ``synthetic:N``) under the split ``conf/split/<split>.yaml`` with its defaults."""
    if data == "synthetic" or data.startswith("synthetic:"):
        n = SYNTHETIC_DEFAULT if data == "synthetic" else int(float(data.split(":", 1)[1]))
        ratings = synthetic_ratings(n)
    else:
        ratings = cfrec.data.load(data)
    result = make_split(ratings, _conf("split", split))
    return result.train, result.test


def scaling_sizes(low: int, high: int) -> list[int]:
    """Two sizes a decade from ``low`` up to ``high`` (1e5, 3.16e5, 1e6, ...)."""
    count = int(math.floor(2 * math.log10(high / low) + 1e-9)) + 1 if high >= low else 0
    return [round(low * 10 ** (j / 2)) for j in range(count)]


# -- models from their presets --------------------------------------------------------------------
def _conf(group: str, name: str) -> dict[str, Any]:
    """``<group>=<name>`` as cfrec's apps compose it (schema and preset)."""
    try:
        return preset(group, name)
    except ConfigError as err:
        raise SystemExit(str(err)) from None


def presets() -> list[str]:
    """Every model preset (``cfrec/conf/model/*.yaml``), in `MODEL_ORDER` then name order: a model
    added to the registry with a preset appears here without editing the benchmark."""
    names = sorted(p.name.removesuffix(".yaml") for p in files("cfrec.conf").joinpath("model").iterdir()
                   if p.name.endswith(".yaml"))
    return [n for n in MODEL_ORDER if n in names] + [n for n in names if n not in MODEL_ORDER]


def train_options(name: str) -> dict[str, Any]:
    """The training options of a preset: ``conf/train/<name>.yaml`` if there is one, else the
    train section ``model=<name>`` composes to (the default, or the train preset the model preset
    chooses); run-only keys (``resume``) dropped, no progress bar."""
    if files("cfrec.conf").joinpath("train", f"{name}.yaml").is_file():
        options = _conf("train", name)
    else:
        options = {**_conf("train", "default"), **model_preset(name, "model")[1]}
    options.pop("resume", None)
    return {**options, "progress": False}




def new_model(entry: dict[str, Any], device: str) -> tuple[Recommender, dict[str, Any]]:
    """An unfitted model from ``{"model": preset, **overrides}`` (the preset's defaults, overridden;
    a dict override of a group such as ``objective`` updates its keys) and its training options."""
    entry = dict(entry)
    preset = entry.pop("model")
    try:
        options = model_preset(preset, "model")[0]  # composed in the full config: a preset may choose a train preset
    except ConfigError as err:
        raise SystemExit(str(err)) from None
    for key, value in entry.items():
        options[key] = {**options[key], **value} if isinstance(value, dict) and isinstance(options.get(key), dict) else value
    name = str(options.pop("name", preset))
    return build_model(name, options, device=device), train_options(preset)


def learns(model: Recommender) -> bool:
    """Whether ``model.fit`` takes training options (the learned models)."""
    return "config" in inspect.signature(model.fit).parameters


def fit(model: Recommender, train: Ratings, options: dict[str, Any], device: str,
        callbacks: Sequence[Callable[..., Any]] = ()) -> Recommender:
    """Fit ``model``: learned models with ``options`` (a `cfrec.train.TrainConfig` dict) on ``device``."""
    if learns(model):
        return model.fit(train, {**options, "device": device}, callbacks=callbacks)
    return model.fit(train)


def fit_fresh(entry: dict[str, Any], train: Ratings, device: str, overrides: dict[str, Any] | None = None) -> Recommender:
    """A `new_model` fitted on ``train``, its training options updated by ``overrides``."""
    model, options = new_model(entry, device)
    return fit(model, train, {**options, **(overrides or {})}, device)
