"""Checks of an untrusted checkpoint: ``model.json``'s schema, and its agreement with ``model.pt``.

A run folder may come from someone else. Every key `cfrec.checkpoint.load_model` reads is
checked for presence, type and range here, and the tensors against the sizes the JSON states,
so a wrong file is one `CheckpointError` naming the file and the key, never a KeyError,
TypeError or a model that silently predicts garbage.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from cfrec.errors import CheckpointError
from cfrec.models.base import Recommender


def check_meta(meta: dict[str, Any], path: Path) -> None:
    """``model.json``'s keys and types (format and version are checked by the reader)."""

    def need(key: str, kind: type | tuple[type, ...], where: dict[str, Any] = meta, prefix: str = "") -> Any:
        if key not in where:
            raise CheckpointError(f"{path}: {prefix}{key}: missing")
        value = where[key]
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            raise CheckpointError(f"{path}: {prefix}{key}: expected {_kind_name(kind)}, got {_short(value)}")
        return value

    need("model", str)
    for key, kind in (("class", str), ("predicts_ratings", bool), ("ranks_by", str)):  # optional
        if key in meta:
            need(key, kind)
    need("config", dict)
    need("data", str)
    need("sha256", str)
    shape = need("shape", dict)
    counts = {key: need(key, int, shape, "shape.") for key in ("n_users", "n_items")}
    for key, value in counts.items():
        if value < 0:
            raise CheckpointError(f"{path}: shape.{key}: must be non-negative, got {value}")
    if "train_mean" in shape and not _is_number(shape["train_mean"]):
        raise CheckpointError(f"{path}: shape.train_mean: expected a finite number, got {_short(shape['train_mean'])}")
    rating_range = need("rating_range", (list, type(None)), shape, "shape.")
    if rating_range is not None:
        if (len(rating_range) != 2 or not all(_is_number(v) for v in rating_range)
                or not rating_range[0] <= rating_range[1]):
            raise CheckpointError(f"{path}: shape.rating_range: must be [low, high] with finite low <= high, "
                                  f"got {_short(rating_range)}")
    for key, n in (("user_ids", counts["n_users"]), ("item_ids", counts["n_items"])):
        _check_ids(need(key, list), n, f"{path}: {key}")
    if "items" in meta:
        items = need("items", dict)
        n = counts["n_items"]
        titles = need("titles", list, items, "items.")
        years = need("years", list, items, "items.")
        names = need("genre_names", list, items, "items.")
        if len(titles) != n or not all(isinstance(t, str) for t in titles):
            raise CheckpointError(f"{path}: items.titles: must be {n} strings (one per movie), got {len(titles)} entries")
        if len(years) != n or not all(y is None or _is_number(y) for y in years):
            raise CheckpointError(f"{path}: items.years: must be {n} numbers or nulls, got {len(years)} entries")
        if not all(isinstance(g, str) for g in names) or len(set(names)) != len(names):
            raise CheckpointError(f"{path}: items.genre_names: must be distinct strings")


def check_tensors(tensors: Any, meta: dict[str, Any], path: Path) -> None:
    """``model.pt`` holds tensors only, the seen matrix fits the id maps, the genres the titles."""
    if not isinstance(tensors, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in tensors.items()):
        raise CheckpointError(f"{path}: must map names to tensors")
    n_users, n_items = meta["shape"]["n_users"], meta["shape"]["n_items"]
    for key in ("seen.indptr", "seen.indices"):
        if key not in tensors:
            raise CheckpointError(f"{path}: {key}: missing")
        if tensors[key].dim() != 1 or tensors[key].dtype.is_floating_point or tensors[key].dtype == torch.bool:
            raise CheckpointError(f"{path}: {key}: must be a 1-D integer tensor")
    indptr, indices = tensors["seen.indptr"].cpu().long(), tensors["seen.indices"].cpu().long()
    if (len(indptr) != n_users + 1 or (len(indptr) and (indptr[0] != 0 or indptr[-1] != len(indices)))
            or bool((indptr.diff() < 0).any())):
        raise CheckpointError(f"{path}: seen.indptr: not the row pointer of {n_users} users over {len(indices)} ratings")
    if len(indices) and (indices.min() < 0 or indices.max() >= n_items):
        raise CheckpointError(f"{path}: seen.indices: movie codes outside [0, {n_items})")
    if "items" in meta:
        genres = tensors.get("items.genres")
        want = (n_items, len(meta["items"]["genre_names"]))
        if genres is None or tuple(genres.shape) != want:
            raise CheckpointError(f"{path}: items.genres: must be a {want} tensor, "
                                  f"got {None if genres is None else tuple(genres.shape)}")
    for key, tensor in tensors.items():
        if key.startswith("model.") and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path}: {key}: holds NaN or infinite values")


def check_model(model: Recommender, meta: dict[str, Any], path: Path) -> None:
    """The restored model's sizes agree with ``model.json``: counts, vector shapes, rank, a scoring probe."""
    n_users, n_items = meta["shape"]["n_users"], meta["shape"]["n_items"]
    if (model.n_users, model.n_items) != (n_users, n_items):
        raise CheckpointError(f"{path}: shape: model.json says {n_users} users x {n_items} movies, "
                              f"the tensors hold {model.n_users} x {model.n_items}")
    for side, vectors, n in (("user", model.user_vectors, n_users), ("item", model.item_vectors, n_items)):
        if vectors is not None and (vectors.dim() != 2 or len(vectors) != n):
            raise CheckpointError(f"{path}: the {side} vectors are {tuple(vectors.shape)}, model.json implies {n} rows")
    theta, rank = getattr(model, "theta", None), getattr(model, "rank", None)
    if isinstance(theta, Tensor) and isinstance(rank, int) and tuple(theta.shape) != (n_users, rank):
        raise CheckpointError(f"{path}: theta is {tuple(theta.shape)}, model.json implies ({n_users}, {rank}) "
                              "(shape.n_users, config.rank)")
    if n_users and n_items:
        users = torch.tensor([0, n_users - 1])
        try:
            scores = model.score(users)
            pred = model.predict(users, torch.tensor([0, n_items - 1])) if model.predicts_ratings else users
        except (IndexError, RuntimeError, ValueError) as err:
            raise CheckpointError(f"{path}: its tensors do not fit shape in model.json ({err})") from None
        if tuple(scores.shape) != (2, n_items) or tuple(pred.shape) != (2,):
            raise CheckpointError(f"{path}: scores come out {tuple(scores.shape)}, not (2, {n_items}): "
                                  "the tensors do not fit shape.n_items")


def _check_ids(ids: list, n: int, where: str) -> None:
    if len(ids) != n:
        raise CheckpointError(f"{where}: {len(ids)} ids, but shape says {n}")
    ints = all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
    if not ints and not all(isinstance(i, str) for i in ids):
        raise CheckpointError(f"{where}: ids must be all integers or all strings")
    if len(set(ids)) != len(ids):
        seen: set = set()
        dup = next(i for i in ids if i in seen or seen.add(i))
        raise CheckpointError(f"{where}: id {dup!r} appears twice")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {"dict": "an object", "list": "a list", "str": "a string", "int": "an integer", "NoneType": "null"}
    return " or ".join(names.get(k.__name__, k.__name__) for k in kinds)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
