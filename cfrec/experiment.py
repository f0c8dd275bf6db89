"""From config sections to objects: data, split, model, device. Shared by every app.

Each function takes one plain mapping (a Hydra config group, or a dict in Python) and
validates it before any heavy work, naming the offending key in a `ConfigError`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from cfrec.data import Ratings, Split, kfold_split, per_user_split, random_split, temporal_split
from cfrec.data.sources import check_data as check_data_source  # the data-source registry decides
from cfrec.data.sources import load_data
from cfrec.data.sources import section_options as _options
from cfrec.data.split import kfold_fold, no_split
from cfrec.device import resolve_device  # the one device rule, re-exported (__all__)
from cfrec.errors import ConfigError
from cfrec.validation import check_int, check_keys

__all__ = ["SPLITS", "check_data_source", "describe_split", "load_data", "make_split", "resolve_device"]


SPLITS: dict[str, Callable[..., Any]] = {
    "per_user": per_user_split, "random": random_split, "temporal": temporal_split, "kfold": kfold_split,
    "none": no_split,  # no test set: fitted on every rating, nothing evaluated
}
"""Split names (``split.name``) → functions; a split's options are its function's arguments after
the ratings, and ``kfold`` adds ``fold`` (which of its folds is the test set)."""


def split_defaults(name: str) -> dict[str, Any]:
    """The options of split ``name`` and their defaults: its function's arguments after the ratings
    (``kfold`` adds ``fold``: 0, the first fold is the test set)."""
    params = list(inspect.signature(SPLITS[name]).parameters.values())[1:]
    return {p.name: p.default for p in params} | ({"fold": 0} if name == "kfold" else {})


def make_split(ratings: Ratings, section: Mapping[str, Any]) -> Split:
    """The train/test split of a ``split`` config section (see ``conf/split/``)."""
    name, options = _options(section, "split")
    if name not in SPLITS:
        raise ConfigError("split.name", f"unknown split {name!r}; known: {', '.join(SPLITS)}")
    defaults = split_defaults(name)
    check_keys("split", options, defaults)
    options = {**defaults, **options}
    fold = check_int("split.fold", options.pop("fold"), 0) if name == "kfold" else None
    try:
        return SPLITS[name](ratings, **options) if fold is None else kfold_fold(ratings, fold, **options)
    except ConfigError as err:
        raise err.under("split") from None


def describe_split(section: Mapping[str, Any]) -> str:
    """What a model trained on the train part of this ``split`` section saw, in words (model.json)."""
    name = str(section.get("name"))
    o = {**split_defaults(name), **section} if name in SPLITS else dict(section)
    if name == "none":
        return "all ratings (split=none, nothing held out)"
    if name == "per_user":
        return (f"train split ({100 * (1 - float(o['test_ratio'])):g}% of each user's ratings; users with fewer than "
                f"{o['min_ratings']} ratings whole)")
    if name == "random":
        return f"train split ({100 * (1 - float(o['test_ratio'])):g}% of all ratings, at random)"
    if name == "temporal":
        return f"train split (all but each user's last {o['n_last']} rating(s))"
    if name == "kfold":
        return f"train split (fold {o['fold']} of {o['n_folds']} held out: the other folds of each user's ratings)"
    return f"train split ({name})"
