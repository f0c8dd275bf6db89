"""Model checkpoints: plain tensors (``model.pt``) plus JSON metadata (``model.json``).

``model.pt`` holds only tensors and loads with ``torch.load(..., weights_only=True)``, so a
checkpoint can never run code. ``model.json`` names the model class and its constructor
arguments, the raw ids of users and items, the item titles, and the SHA-256 of
``model.pt``; loading refuses a checkpoint whose format, version or checksum is wrong.
"""

from __future__ import annotations

import json
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
from cfrec.io import save_tensors, sha256, write_json
from cfrec.models.base import Recommender
from cfrec.models.registry import model_class

FORMAT = "cfrec.model"
VERSION = 1
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
    """
    folder = Path(folder)
    seen = train.to_csr()
    tensors: dict[str, torch.Tensor] = {f"model.{k}": v.detach().cpu() for k, v in model.state().items()}
    tensors["seen.indptr"] = torch.as_tensor(seen.indptr.astype(np.int64))
    tensors["seen.indices"] = torch.as_tensor(seen.indices.astype(np.int64))
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
    return folder


def load_model(folder: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint written by `save_model`; `CheckpointError` if anything is off."""
    folder = Path(folder)
    meta = _read_meta(folder / META)
    tensor_path = folder / TENSORS
    if not tensor_path.is_file():
        raise CheckpointError(f"{tensor_path}: missing")
    if sha256(tensor_path) != meta.get("sha256"):
        raise CheckpointError(f"{tensor_path}: checksum differs from {META}; the file is truncated or was altered")
    try:
        tensors = torch.load(tensor_path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        raise CheckpointError(f"{tensor_path}: not a plain-tensor checkpoint ({err})") from None
    try:
        cls = model_class(meta.get("class", meta["model"]))
    except KeyError as err:
        raise CheckpointError(f"{folder / META}: {err.args[0]}") from None
    model = cls(**meta["config"])
    model.restore_shape(meta["shape"])
    model.load_state({k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")})
    user_map, item_map = IdMap(meta["user_ids"], "user"), IdMap(meta["item_ids"], "item")
    seen = sp.csr_matrix(
        (np.ones(len(tensors["seen.indices"]), dtype=bool), tensors["seen.indices"].cpu().numpy(),
         tensors["seen.indptr"].cpu().numpy()),
        shape=(len(user_map), len(item_map)),
    )
    info = None
    if "items" in meta:
        items = meta["items"]
        years = np.array([np.nan if y is None else y for y in items["years"]], dtype=np.float64)
        info = ItemInfo(np.array(items["titles"], dtype=object), years,
                        tensors["items.genres"].cpu().numpy().astype(bool), tuple(items["genre_names"]))
    return Checkpoint(model, user_map, item_map, info, seen, meta)


def _read_meta(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; is {path.parent} a cfrec run folder?")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} checkpoint")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {meta.get('version')!r}, this cfrec reads {VERSION}")
    return meta


def save_train_state(folder: str | Path, trainer_state: dict[str, Any], meta: dict[str, Any]) -> Path:
    """The trainer's full state after an epoch (model, optimizer, schedule, epoch, RNG), atomically.

    ``meta`` (JSON types) says what was being trained, so a resume can check it continues the
    same model on the same data.
    """
    path = Path(folder) / TRAIN_STATE
    save_tensors(path, {"format": TRAIN_STATE_FORMAT, "version": VERSION, "meta": meta, "trainer": trainer_state})
    return path


def load_train_state(folder: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(trainer state, meta) saved by `save_train_state` in a run folder; `CheckpointError` if unusable."""
    path = Path(folder) / TRAIN_STATE
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; {Path(folder)} holds no training state to resume from")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable or not a plain-tensor training state ({err})") from None
    if not isinstance(saved, dict) or saved.get("format") != TRAIN_STATE_FORMAT:
        raise CheckpointError(f"{path}: not a {TRAIN_STATE_FORMAT} file")
    if saved.get("version") != VERSION:
        raise CheckpointError(f"{path}: training state version {saved.get('version')!r}, this cfrec reads {VERSION}")
    return saved["trainer"], saved["meta"]
