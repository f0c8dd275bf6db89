"""Model names (as used in configs and checkpoints) → model classes."""

from __future__ import annotations

import inspect
from typing import Any

from cfrec.errors import ConfigError
from cfrec.models.base import Recommender
from cfrec.models.baseline import BiasBaseline, GlobalMean, Popularity
from cfrec.models.collaborative import CollaborativeFiltering
from cfrec.models.content import ContentBased
from cfrec.models.knn import ItemKNN, UserKNN

MODELS: dict[str, type[Recommender]] = {
    cls.name: cls
    for cls in (GlobalMean, BiasBaseline, Popularity, UserKNN, ItemKNN, CollaborativeFiltering, ContentBased)
}


def model_class(name: str) -> type[Recommender]:
    """The class registered as ``name``; `KeyError` listing the known names otherwise."""
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}") from None


def build_model(name: str, options: dict[str, Any], key: str = "model", device: str | None = None) -> Recommender:
    """Instantiate model ``name`` from constructor ``options``; unknown options name their key.

    ``device`` goes to models that take one (the run's device, not a model setting).
    """
    try:
        cls = model_class(name)
    except KeyError as err:
        raise ConfigError(f"{key}.name", err.args[0]) from None
    accepted = inspect.signature(cls).parameters
    if device is not None and "device" in accepted:
        options = {**options, "device": device}
    for option in options:
        if option not in accepted:
            raise ConfigError(f"{key}.{option}", f"not an option of {name}; options: {', '.join(accepted) or 'none'}")
    try:
        return cls(**options)
    except ConfigError as err:  # the model names its own argument: make it a config key
        raise err.under(key) from None
