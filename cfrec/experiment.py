"""From config sections to objects: data, split, model, device. Shared by every app.

Each function takes one plain mapping (a Hydra config group, or a dict in Python) and
validates it before any heavy work, naming the offending key in a `ConfigError`.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from cfrec.data import Ratings, Split, kfold_split, per_user_split, random_split, temporal_split
from cfrec.data.sources import check_data as check_data_source  # the data-source registry decides
from cfrec.data.sources import check_keys as _check_keys
from cfrec.data.sources import load_data
from cfrec.data.sources import section_options as _options
from cfrec.data.split import no_split
from cfrec.errors import ConfigError

__all__ = ["check_data_source", "describe_split", "load_data", "make_split", "resolve_device"]


def make_split(ratings: Ratings, section: Mapping[str, Any]) -> Split:
    """The train/test split of a ``split`` config section (see ``conf/split/``)."""
    name, options = _options(section, "split")
    if name == "per_user":
        _check_keys(options, {"test_ratio", "min_ratings", "seed", "method"}, "split")
        return per_user_split(ratings, **options)
    if name == "random":
        _check_keys(options, {"test_ratio", "seed"}, "split")
        return random_split(ratings, **options)
    if name == "temporal":
        _check_keys(options, {"n_last", "min_ratings"}, "split")
        return temporal_split(ratings, **options)
    if name == "kfold":
        _check_keys(options, {"n_folds", "fold", "seed", "min_ratings"}, "split")
        fold = int(options.pop("fold", 0))
        if not 0 <= fold < int(options.get("n_folds", 5)):
            raise ConfigError("split.fold", f"must lie in 0..n_folds-1, got {fold}")
        return kfold_split(ratings, **options)[fold]
    if name == "none":
        _check_keys(options, set(), "split")
        return no_split(ratings)
    raise ConfigError("split.name", f"unknown split {name!r}; known: per_user, random, temporal, kfold, none")


def describe_split(section: Mapping[str, Any]) -> str:
    """What a model trained on the train part of this ``split`` section saw, in words (model.json)."""
    name = str(section.get("name"))
    if name == "none":
        return "all ratings (split=none, nothing held out)"
    if name == "per_user":
        share = 100 * (1 - float(section.get("test_ratio", 0.1)))
        return (f"train split ({share:g}% of each user's ratings; users with fewer than "
                f"{section.get('min_ratings', 5)} ratings whole)")
    if name == "random":
        return f"train split ({100 * (1 - float(section.get('test_ratio', 0.1))):g}% of all ratings, at random)"
    if name == "temporal":
        return f"train split (all but each user's last {section.get('n_last', 1)} rating(s))"
    if name == "kfold":
        return (f"train split (fold {section.get('fold', 0)} of {section.get('n_folds', 5)} held out: "
                f"the other folds of each user's ratings)")
    return f"train split ({name})"


def resolve_device(device: str) -> torch.device:
    """``auto`` → cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError("device", f"must be auto, cpu or cuda, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device", "cuda was asked for but no GPU is available")
    return torch.device(device)
