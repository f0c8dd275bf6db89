"""Fitting a model inside a run: learned models save their training state every epoch, resume
from it (``train.resume=RUN_DIR``), and stop cleanly on Ctrl-C or divergence."""

from __future__ import annotations

import logging
import shlex
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import yaml

from cfrec.checkpoint import TRAIN_STATE, load_train_state, save_train_state
from cfrec.data import Ratings
from cfrec.errors import CheckpointError, ConfigError, TrainingDiverged
from cfrec.models.base import Recommender
from cfrec.models.factor import FactorModel
from cfrec.train.config import TrainConfig
from cfrec.train.trainer import EpochCallback, Trainer

log = logging.getLogger(__name__)

RUN_KEYS = ("resume",)  # keys of the train group that steer the run, not the optimisation


class RunStopped(SystemExit):
    """Training stopped early, its reason logged: Ctrl-C (exit code 130) or divergence (1)."""


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
    meta = {"describe": dict(describe or {}), "n_users": train.n_users, "n_items": train.n_items}
    trainer = Trainer(config)
    saved = {"epoch": 0}  # the epoch whose state is on disk (a Ctrl-C may land mid-save)

    def save(epoch: int, metrics: Mapping[str, float], _: Any) -> None:
        save_train_state(run_dir, trainer.state_dict(), meta)
        saved["epoch"] = epoch

    if run_dir is not None:
        trainer.callbacks.append(save)
    trainer.callbacks.extend(callbacks)
    if resume:
        trainer.load_state_dict(_resume_state(resume, meta))
    try:
        trainer.fit(model, train)
    except KeyboardInterrupt:
        raise RunStopped(_interrupted(saved["epoch"], run_dir)) from None
    except TrainingDiverged as err:
        raise RunStopped(_diverged(err, saved["epoch"], run_dir)) from None
    finally:
        model.history = trainer.history
    return time.perf_counter() - start


def _resume_state(folder: str, meta: Mapping[str, Any]) -> dict[str, Any]:
    """The saved trainer state of ``folder``, after checking it trained this model on this data."""
    try:
        state, saved = load_train_state(folder)
    except (CheckpointError, OSError) as err:  # a config problem from the user's side
        raise ConfigError("train.resume", str(err)) from None
    if saved != meta:
        raise ConfigError(
            "train.resume", f"{folder} trained another model or data ({saved['describe']}); "
            f"this run is {meta['describe']}"
        )
    log.info("resuming from %s after epoch %d", Path(folder) / TRAIN_STATE, state["epoch"])
    return state


def _interrupted(saved_epoch: int, run_dir: str | Path | None) -> int:
    """Log how to resume after Ctrl-C; the exit code (130, as shells use for SIGINT)."""
    if run_dir is None or saved_epoch == 0:
        log.warning("interrupted before the first epoch ended: nothing to resume from")
    else:
        log.warning("interrupted: the state after epoch %d is in %s; resume with:\n  %s",
                    saved_epoch, Path(run_dir) / TRAIN_STATE, resume_command(run_dir))
    return 130


def _diverged(err: TrainingDiverged, saved_epoch: int, run_dir: str | Path | None) -> int:
    """Log the divergence and where the last good state is; the exit code (1)."""
    kept = (f"; the last good state (epoch {saved_epoch}) is kept in {Path(run_dir) / TRAIN_STATE}"
            if run_dir is not None and saved_epoch else "")
    log.error("%s%s", err, kept)
    return 1


def resume_command(run_dir: str | Path) -> str:
    """The command line that continues the run of ``run_dir`` (its own overrides + train.resume)."""
    overrides_file = Path(run_dir) / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
    kept = [o for o in overrides or [] if not o.startswith(("train.resume=", "hydra.run.dir="))]
    return shlex.join(["cfrec-train", *kept, f"train.resume={run_dir}"])
