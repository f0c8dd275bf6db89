"""Fitting a model inside a run: learned models save their training state every epoch, resume
from it (``train.resume=RUN_DIR``), and stop cleanly on Ctrl-C or divergence."""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from cfrec.checkpoint import TRAIN_STATE, load_train_state, save_train_state
from cfrec.data import Ratings
from cfrec.errors import CheckpointError, ConfigError, RunStopped, TrainingDiverged
from cfrec.models.base import Recommender
from cfrec.models.factor import FactorModel
from cfrec.train import distributed
from cfrec.train.config import TrainConfig
from cfrec.train.trainer import EpochCallback, Trainer

log = logging.getLogger(__name__)

RUN_KEYS = ("resume",)  # keys of the train group that steer the run, not the optimisation
RESUMABLE = ("epochs", "progress", "patience", "min_delta", "restore_best", "fold_back", "device", "distributed")
"""Training options a resume may change; every other one must match the saved state's."""

__all__ = ["RunStopped", "fit_model", "resume_command"]  # RunStopped lives in cfrec.errors


def fit_model(
    model: Recommender, train: Ratings, train_options: Mapping[str, Any] | None,
    callbacks: Sequence[EpochCallback] = (), *, device: torch.device | None = None,
    progress: bool = True, run_dir: str | Path | None = None, describe: Mapping[str, Any] | None = None,
) -> float:
    """Fit ``model`` and return the seconds taken.

    Learned models train with ``train_options`` (the ``train`` config group) and ``callbacks``;
    with a ``run_dir`` their training state is saved there after every epoch, and
    ``train_options["resume"]`` names a run folder to continue from. ``describe`` (model and
    data config) is stored with the state and checked on resume.
    """
    start = time.perf_counter()
    if not isinstance(model, FactorModel):
        model.fit(train)
        return time.perf_counter() - start
    options = dict(train_options or {})
    resume = options.pop("resume", None)
    options["device"] = str(device) if device is not None else options.get("device", "auto")
    if options.get("progress") is None:
        options["progress"] = progress
    config = TrainConfig.from_dict(options)
    keeps_state = run_dir is not None or bool(resume)  # the digest is only for saved states to be checked
    meta = {"describe": dict(describe or {}), "n_users": train.n_users, "n_items": train.n_items,
            "data": data_fingerprint(train) if keeps_state else None, "train": _fixed_options(config)}
    trainer = Trainer(config)
    saved = {"epoch": 0}  # the epoch whose state is on disk (a Ctrl-C may land mid-save)

    def save(epoch: int, metrics: Mapping[str, float], _: Any) -> None:
        save_train_state(run_dir, trainer.state_dict(), meta)
        saved["epoch"] = epoch

    if run_dir is not None:
        trainer.callbacks.append(save)
    trainer.callbacks.extend(callbacks)
    if resume:
        state = _resume_state(resume, meta)
        if state["epoch"] >= config.epochs:
            log.warning("%s is already at epoch %d, train.epochs is %d: nothing is left to train (raise "
                        "train.epochs to train on)", resume, state["epoch"], config.epochs)
        trainer.load_state_dict(state)
    try:
        trainer.fit(model, train)
    except KeyboardInterrupt:
        raise _interrupted(saved["epoch"], run_dir) from None
    except TrainingDiverged as err:
        raise _diverged(err, saved["epoch"], run_dir) from None
    finally:
        model.history = trainer.history
    return time.perf_counter() - start


def data_fingerprint(train: Ratings) -> str:
    """A digest of the training ratings and their ids: a resume on other data (even of the same
    shape, e.g. ids renumbered) would continue each row from another user's or movie's state."""
    digest = hashlib.blake2b(digest_size=16)
    for array in (train.users, train.items, train.values):
        digest.update(np.ascontiguousarray(array).tobytes())
    for id_map in (train.user_map, train.item_map):
        ids = id_map.ids
        digest.update(ids.tobytes() if ids.dtype != object else "\x1f".join(map(str, ids)).encode())
    return digest.hexdigest()


def _fixed_options(config: TrainConfig) -> dict[str, Any]:
    """The training options a resume must keep (all but `RESUMABLE`)."""
    return {k: v for k, v in config.to_dict().items() if k not in RESUMABLE}


def _check_resumable(folder: str, saved: Mapping[str, Any], now: Mapping[str, Any]) -> None:
    """Refuse a resume whose training options differ from the saved run's, naming them."""
    changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if changed:
        diffs = ", ".join(f"train.{k} {saved.get(k)!r} → {now.get(k)!r}" for k in changed)
        raise ConfigError(f"train.{changed[0]}", f"changed since {folder} was saved ({diffs}); a resume continues "
                          f"the same training, where only {', '.join(RESUMABLE)} may change: keep the others, "
                          "or start afresh without train.resume")


def _resume_state(folder: str, meta: Mapping[str, Any]) -> dict[str, Any]:
    """The saved trainer state of ``folder``, after checking it trained this model on this data
    with the same training options (but those a resume may change)."""
    meta_train = meta["train"]
    try:
        state, saved = load_train_state(folder)
    except (CheckpointError, OSError) as err:  # a config problem from the user's side
        raise ConfigError("train.resume", str(err)) from None
    options = saved.get("train")  # states written before the options or the data digest were stored have none
    changed = changed_keys(saved.get("describe", {}), meta["describe"])
    if changed:
        raise ConfigError("train.resume", f"{folder} trained another model or data ({'; '.join(changed)}); "
                          "resume with the same model and data options, or start afresh without train.resume")
    if (saved["n_users"], saved["n_items"]) != (meta["n_users"], meta["n_items"]) or saved.get("data", meta["data"]) != meta["data"]:
        raise ConfigError("train.resume", f"the training data changed since {folder} was saved ({saved['n_users']} users × "
                          f"{saved['n_items']} movies then, {meta['n_users']} × {meta['n_items']} now, and other "
                          "ratings or ids): its state belongs to other users and movies; start afresh without train.resume")
    if options is not None:
        _check_resumable(folder, options, meta_train)
    log.info("resuming from %s after epoch %d", Path(folder) / TRAIN_STATE, state["epoch"])
    return state


def changed_keys(saved: Any, now: Any, prefix: str = "") -> list[str]:
    """``key: old → new`` for every leaf that differs between two nested option dicts."""
    if isinstance(saved, Mapping) and isinstance(now, Mapping):
        return [change for key in sorted(set(saved) | set(now), key=str)
                for change in changed_keys(saved.get(key), now.get(key), f"{prefix}{key}.")]
    return [] if saved == now else [f"{prefix.rstrip('.')}: {saved!r} → {now!r}"]


def _interrupted(saved_epoch: int, run_dir: str | Path | None) -> RunStopped:
    """What to say after Ctrl-C (exit code 130, as shells use for SIGINT): where the state is, how to resume; logged."""
    if distributed.launched_rank() != 0:
        message = "interrupted: rank 0 keeps the training state and prints how to resume"
    elif run_dir is None or saved_epoch == 0:
        message = "interrupted before the first epoch ended: nothing to resume from"
    else:
        message = (f"interrupted: the state after epoch {saved_epoch} is in {Path(run_dir) / TRAIN_STATE}; "
                   f"resume with: {resume_command(run_dir)}")
    log.warning("%s", message)
    return RunStopped(message, 130)


def _diverged(err: TrainingDiverged, saved_epoch: int, run_dir: str | Path | None) -> RunStopped:
    """The divergence and where the last good state is (exit code 1), logged."""
    kept = (f"; the last good state (epoch {saved_epoch}) is kept in {Path(run_dir) / TRAIN_STATE}"
            if run_dir is not None and saved_epoch else "")
    log.error("%s%s", err, kept)
    return RunStopped(f"{err}{kept}", 1)


def resume_command(run_dir: str | Path) -> str:
    """The command line that continues the run of ``run_dir`` (its own overrides + train.resume);
    under torchrun, the torchrun command with the same number of processes."""
    overrides_file = Path(run_dir) / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
    kept = [o for o in overrides or [] if not o.startswith(("train.resume=", "hydra.run.dir="))]
    return shlex.join([*launcher(), *kept, f"train.resume={run_dir}"])


def launcher() -> list[str]:
    """How this process was started: ``cfrec-train``, or the torchrun command of its job."""
    world = distributed.launched_world_size()
    if world <= 1:
        return ["cfrec-train"]
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    nodes = ["--standalone"] if local == world else [f"--nnodes={world // local}", "--rdzv-endpoint=HOST:PORT"]
    return ["torchrun", *nodes, f"--nproc_per_node={local}", "-m", "cfrec.apps.train"]
