"""Model checkpoints: plain tensors (``model.pt``) plus JSON metadata (``model.json``).

``model.pt`` holds only tensors and loads with ``torch.load(..., weights_only=True)``, so a
checkpoint can never run code. ``model.json`` names the model class and its constructor
arguments, the raw ids of users and items, the item titles, and the SHA-256 of
``model.pt``; loading refuses a checkpoint whose format, version or checksum is wrong.
"""

from __future__ import annotations

import inspect
import json
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from cfrec.data.idmap import IdMap
from cfrec.data.ratings import ItemInfo, Ratings
from cfrec.errors import CheckpointError
from cfrec.checkpoint_schema import check_meta, check_model, check_tensors
from cfrec.io import remove_stale_temps, save_tensors, sha256, write_json
from cfrec.shared_tensors import resolve_shared, share_tensors
from cfrec.models.base import Recommender
from cfrec.models.registry import model_class
from cfrec.objectives import saved_objective

log = logging.getLogger(__name__)

FORMAT = "cfrec.model"
VERSION = 1
TRAIN_STATE_VERSION = 2  # 2: Adam's moments of a preference head are those of its packed tables
TENSORS, META = "model.pt", "model.json"
TRAIN_STATE, TRAIN_STATE_FORMAT = "train_state.pt", "cfrec.train_state"


@dataclass
class Checkpoint:
    """A loaded checkpoint: the fitted model and what it needs to speak raw ids."""

    model: Recommender
    user_map: IdMap
    item_map: IdMap
    item_info: ItemInfo | None
    seen: sp.csr_matrix  # users × items the model was trained on
    meta: dict[str, Any]


def save_model(model: Recommender, train: Ratings, folder: str | Path, config_name: str | None = None,
               trained_on: str | None = None) -> Path:
    """Write ``model.pt`` and ``model.json`` for a fitted ``model`` into ``folder``.

    ``model.json`` names the model by ``config_name`` (the preset it was configured by, e.g.
    ``cf_weighted``; default: its class's registered name, kept under ``class``) and records what
    it declares: whether it predicts ratings and what its ranking scores are. ``trained_on``
    (e.g. "train split (90% of each user's ratings; ...)") says what it saw; the checkpoint's
    ``seen`` matrix is ``train``, so recommendations exclude exactly those ratings.

    A ``train_state.pt`` already in ``folder`` is rewritten to refer to the tensors of the new
    ``model.pt`` it repeats instead of holding a second copy (`save_train_state`).
    """
    folder = Path(folder)
    state_path = folder / TRAIN_STATE
    pending = _full_train_state(folder) if state_path.is_file() else None
    if pending is not None and pending.pop("shared", None):  # inline again before model.pt changes under it
        save_tensors(state_path, pending)
    seen = train.to_csr()
    tensors: dict[str, torch.Tensor] = {f"model.{k}": v.detach().cpu() for k, v in model.state().items()}
    tensors["seen.indptr"] = torch.as_tensor(seen.indptr.astype(np.int64))
    tensors["seen.indices"] = torch.as_tensor(seen.indices.astype(_code_dtype(train.n_items)))
    meta: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "model": config_name or model.name,
        "class": model.name,
        "predicts_ratings": bool(model.predicts_ratings),
        "ranks_by": model.ranks_by,
        "config": model.config(),
        "shape": model.shape_meta(),
        "data": train.name,
        "trained_on": trained_on or train.name,
        "n_train": len(train),
        "user_ids": train.user_map.ids.tolist(),
        "item_ids": train.item_map.ids.tolist(),
    }
    if train.item_info is not None:
        info = train.item_info
        tensors["items.genres"] = torch.as_tensor(info.genres.astype(np.uint8))
        meta["items"] = {"titles": info.titles.tolist(), "years": [None if np.isnan(y) else y for y in info.years],
                         "genre_names": list(info.genre_names)}
    save_tensors(folder / TENSORS, tensors)
    meta["sha256"] = sha256(folder / TENSORS)
    write_json(folder / META, meta)
    if pending is not None:
        save_tensors(state_path, {**pending, "trainer": share_tensors(pending["trainer"], tensors),
                                  "shared": {"file": TENSORS, "sha256": meta["sha256"]}})
    return folder


def load_model(folder: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint written by `save_model`, every tensor mapped to ``device``.

    The folder is untrusted: ``model.json`` is schema-checked and cross-checked against the
    tensors (`cfrec.checkpoint_schema`); anything off is a `CheckpointError` naming the file
    and the key. Models built with a device (KNN) are built on ``device`` whatever the saving
    run used, so a checkpoint saved on a GPU loads on a CPU-only machine.
    """
    folder = Path(folder)
    remove_stale_temps(folder)
    meta_path, tensor_path = folder / META, folder / TENSORS
    meta = _read_meta(meta_path)
    check_meta(meta, meta_path)
    if not tensor_path.is_file():
        raise CheckpointError(f"{tensor_path}: missing")
    if sha256(tensor_path) != meta["sha256"]:
        raise CheckpointError(f"{tensor_path}: checksum differs from {META}; the file is truncated or was altered")
    tensors = _load_tensors(tensor_path, device)
    check_tensors(tensors, meta, tensor_path)
    model = _restore(meta, tensors, device, folder)
    user_map, item_map = IdMap(meta["user_ids"], "user"), IdMap(meta["item_ids"], "item")
    seen = sp.csr_matrix(
        (np.ones(len(tensors["seen.indices"]), dtype=bool), tensors["seen.indices"].cpu().numpy().astype(np.int64),
         tensors["seen.indptr"].cpu().numpy().astype(np.int64)),
        shape=(len(user_map), len(item_map)),
    )
    info = None
    if "items" in meta:
        items = meta["items"]
        years = np.array([np.nan if y is None else y for y in items["years"]], dtype=np.float64)
        info = ItemInfo(np.array(items["titles"], dtype=object), years,
                        tensors["items.genres"].cpu().numpy().astype(bool), tuple(items["genre_names"]))
    return Checkpoint(model, user_map, item_map, info, seen, meta)


def _load_tensors(path: Path, device: str | torch.device) -> Any:
    try:
        return torch.load(path, map_location=torch.device(device), weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{path}: not a plain-tensor checkpoint ({err})") from None


def _restore(meta: dict[str, Any], tensors: dict[str, torch.Tensor], device: str | torch.device, folder: Path) -> Recommender:
    """The model of ``meta`` with the ``model.*`` tensors loaded, checked against ``meta``'s sizes."""
    meta_path = folder / META
    key = "class" if "class" in meta else "model"  # "model" may name a preset of the class
    try:
        cls = model_class(meta[key])
    except KeyError as err:
        raise CheckpointError(f"{meta_path}: {key}: {err.args[0]}") from None
    config = dict(meta["config"])
    if "objective" in config:
        config["objective"] = saved_objective(config["objective"])
    if "device" in inspect.signature(cls).parameters:
        config["device"] = str(device)
    try:
        model = cls(**config)
    except (TypeError, ValueError) as err:  # ConfigError is a ValueError
        raise CheckpointError(f"{meta_path}: config: {err}") from None
    model.restore_shape(meta["shape"])
    try:
        model.load_state({k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")})
    except CheckpointError as err:
        raise CheckpointError(f"{folder / TENSORS}: {err}") from None
    except (KeyError, RuntimeError, ValueError, IndexError, TypeError) as err:
        raise CheckpointError(f"{folder / TENSORS}: the model's tensors do not fit {meta['model']} ({err})") from None
    if isinstance(model, torch.nn.Module):
        model.to(device)
    check_model(model, meta, meta_path)
    return model


def _code_dtype(n: int) -> np.dtype:
    """The smallest signed integer type that holds codes 0..n-1 (the seen matrix's movie codes)."""
    return np.dtype(np.int16 if n <= np.iinfo(np.int16).max else np.int32 if n <= np.iinfo(np.int32).max else np.int64)


def _read_meta(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; is {path.parent} a cfrec run folder?")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({type(err).__name__}: {str(err)[:80]})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} checkpoint")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {meta.get('version')!r}, this cfrec reads {VERSION}")
    return meta


def save_train_state(folder: str | Path, trainer_state: dict[str, Any], meta: dict[str, Any]) -> Path:
    """The trainer's full state after an epoch (model, optimizer, schedule, epoch, RNG), atomically.

    ``meta`` (JSON types) says what was being trained, so a resume can check it continues the
    same model on the same data. Once the run's `save_model` writes ``model.pt`` beside it, the
    tensors they have in common (the final parameters, the best epoch's) are kept only there:
    ``train_state.pt`` refers to them by name and ``model.pt``'s checksum.
    """
    path = Path(folder) / TRAIN_STATE
    save_tensors(path, {"format": TRAIN_STATE_FORMAT, "version": TRAIN_STATE_VERSION, "meta": meta, "trainer": trainer_state})
    return path


def load_train_state(folder: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(trainer state, meta) saved by `save_train_state` in a run folder; `CheckpointError` if unusable."""
    folder = Path(folder)
    path = folder / TRAIN_STATE
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; {folder} holds no training state to resume from")
    remove_stale_temps(folder)
    saved = _read_train_state(path)
    if saved.get("shared"):
        shared = saved["shared"]
        source = folder / TENSORS
        if not isinstance(shared, dict) or not source.is_file() or sha256(source) != shared.get("sha256"):
            raise CheckpointError(f"{path}: refers to tensors of {source}, which is missing or was rewritten")
        saved["trainer"] = resolve_shared(saved["trainer"], _load_tensors(source, "cpu"), path)
    if not isinstance(saved.get("trainer"), dict) or not isinstance(saved.get("meta"), dict):
        raise CheckpointError(f"{path}: trainer state or meta is not a mapping")
    return saved["trainer"], saved["meta"]


def _full_train_state(folder: Path) -> dict[str, Any] | None:
    """The whole saved training state of ``folder`` (shared tensors still marked), or None when unusable."""
    try:
        return {**_read_train_state(folder / TRAIN_STATE), "trainer": load_train_state(folder)[0]}
    except CheckpointError as err:
        log.warning("%s; left as it is", err)
        return None


def _read_train_state(path: Path) -> dict[str, Any]:
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{path}: unreadable or not a plain-tensor training state ({err})") from None
    if not isinstance(saved, dict) or saved.get("format") != TRAIN_STATE_FORMAT:
        raise CheckpointError(f"{path}: not a {TRAIN_STATE_FORMAT} file")
    if saved.get("version") != TRAIN_STATE_VERSION:
        raise CheckpointError(f"{path}: training state version {saved.get('version')!r}, this cfrec reads "
                              f"{TRAIN_STATE_VERSION}; train again instead of resuming")
    return saved
