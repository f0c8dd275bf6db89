"""TensorBoard logging for runs: scalars per epoch, histograms, hyper-parameters, embeddings.

The training loop calls `TensorBoardLogger.on_epoch_end` with the metrics dict it computed;
models never write logs themselves. A run's events go to ``tb/<run name>/``, the name carrying
the model and the command line's key overrides (`run_name`), so ``tensorboard --logdir runs``
tells runs apart. Final metrics appear once, in the HParams tab (``hparam/…``), beside the
run's hyper-parameters; TensorBoard ticks the hyper-parameters whose values differ between the
runs it shows (a sweep's keys) before the constant ones.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import yaml
from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
from tensorboard.plugins.hparams import metadata as hp_metadata
from tensorboard.plugins.hparams.api_pb2 import Status
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData, SessionEndInfo, SessionStartInfo
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from cfrec.data.ratings import ItemInfo

# Per-epoch values written only if they change during training (a constant learning rate is clutter).
LOGGED_IF_CHANGING = ("lr",)
# Overrides that do not name a hyper-parameter (paths, run plumbing): left out of run names.
_NOT_IN_NAME = ("hydra.", "run.", "data.root=", "data.path=", "train.resume=", "train.progress=", "eval.reuse=",
                "device=", "train.device=")
# metrics.json keys shown in HParams (one chart each in Time Series too, so only the main ones;
# precision, hit rate, coverage, counts and timings stay in metrics.json).
HPARAM_METRICS = re.compile(r"^(rmse|mae|accuracy|recall@\d+|ndcg@\d+|valid_(rmse|recall@\d+|ndcg@\d+)|fit_seconds)$")
# train keys that steer the run rather than the optimisation: not hyper-parameters.
_RUN_KEYS = {"resume", "progress", "device", "distributed"}


def run_name(label: str, overrides: Sequence[str] = ()) -> str:
    """``cf model.rank=32 model.l2=0.9``: the model and the command line's key overrides, as a
    folder name (paths and run plumbing left out, characters no OS allows in a name replaced by
    ``_``, at most 120 characters)."""
    roots = [Path(o.split("=", 1)[1]).name for o in overrides if o.startswith("data.root=")]
    kept = [o for o in overrides if not o.startswith(_NOT_IN_NAME) and not o.startswith("model=")]
    if roots:  # data=movielens data.root=/path/ml-100k → data=ml-100k
        kept = [f"data={roots[-1]}", *[o for o in kept if not o.startswith("data=")]]
    name = re.sub(r'[<>:"|?*/\\]', "_", " ".join([label, *kept]))  # a folder name on every OS
    return name[:120].strip() or "run"


def overrides_of(run_dir: str | Path) -> list[str]:
    """The command line overrides Hydra saved for a run (``.hydra/overrides.yaml``), or []."""
    path = Path(run_dir) / ".hydra" / "overrides.yaml"
    return list(yaml.safe_load(path.read_text()) or []) if path.is_file() else []


def run_hparams(cfg: Mapping[str, Any], label: str, learned: bool) -> dict[str, bool | float | int | str]:
    """The hyper-parameters of a run, flat: ``model`` (its label), ``model.*``, ``train.*``
    (learned models; not the run-steering keys), ``split.*`` and ``data`` (the data set's name)."""
    flat: dict[str, Any] = {"model": label}
    flat.update({f"model.{k}": v for k, v in _flatten(cfg.get("model", {})).items() if k != "name"})
    if learned:
        flat.update({f"train.{k}": v for k, v in _flatten(cfg.get("train") or {}).items() if k not in _RUN_KEYS})
    flat.update({f"split.{k}": v for k, v in _flatten(cfg.get("split", {})).items()})
    data = cfg.get("data", {})
    flat["data"] = Path(str(data["root"])).name if data.get("name") == "movielens" and data.get("root") else data.get("name")
    return {k: _hparam_value(v) for k, v in flat.items() if v is not None}


def _hparam_value(value: Any) -> bool | float | int | str:
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(list(value) if isinstance(value, tuple) else value)


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class TensorBoardLogger:
    """Writes event files under ``folder`` (a run's ``tb/``), in ``folder/name`` when a run name is given."""

    def __init__(self, folder: str | Path, name: str | None = None):
        self.folder = Path(folder) / name if name else Path(folder)
        self.writer = SummaryWriter(log_dir=str(self.folder))
        self._held: dict[str, list[tuple[int, float]]] = {}

    def on_epoch_end(self, epoch: int, metrics: Mapping[str, float], model: nn.Module | None = None) -> None:
        """The trainer's epoch metrics as ``train/…`` and ``valid/…`` scalars (``train/loss`` is J
        summed over the training ratings, ``train/loss_per_rating`` its mean); parameter histograms."""
        for key, value in metrics.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value):
                tag = f"valid/{key[4:]}" if key.startswith("val_") else f"train/{key}"
                if key in LOGGED_IF_CHANGING:
                    self._held.setdefault(tag, []).append((epoch, float(value)))
                else:
                    self.writer.add_scalar(tag, value, epoch)
        if isinstance(model, nn.Module):
            for name, param in model.named_parameters():
                self.writer.add_histogram(f"params/{name}", param.detach().cpu(), epoch)

    def log_metrics(self, metrics: Mapping[str, Any], step: int = 0, prefix: str = "test/") -> None:
        """Metrics as scalars under ``prefix`` (runs do not call this: their final metrics go to
        HParams only, see `log_hparams`)."""
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value):
                self.writer.add_scalar(prefix + key, value, step)

    def log_hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, Any]) -> None:
        """The run's hyper-parameters (booleans as booleans, strings as strings) and its final
        main metrics (``hparam/<key>``, `HPARAM_METRICS`), for the HParams tab.

        Only the session records are written, not an experiment record: TensorBoard then builds
        the table from every run it reads and ticks the hyper-parameters that differ first.
        """
        start = SessionStartInfo()
        for key, value in hparams.items():
            if value is None:
                continue
            if isinstance(value, bool):
                start.hparams[key].bool_value = value
            elif isinstance(value, (int, float)):
                start.hparams[key].number_value = float(value)
            else:
                start.hparams[key].string_value = str(value)
        self._write_plugin_data(hp_metadata.SESSION_START_INFO_TAG, HParamsPluginData(session_start_info=start))
        for key, value in metrics.items():
            if (isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
                    and HPARAM_METRICS.match(key)):
                self.writer.add_scalar(f"hparam/{key}", value, 0)
        end = SessionEndInfo(status=Status.Value("STATUS_SUCCESS"))
        self._write_plugin_data(hp_metadata.SESSION_END_INFO_TAG, HParamsPluginData(session_end_info=end))

    def _write_plugin_data(self, tag: str, data: HParamsPluginData) -> None:
        data.version = hp_metadata.PLUGIN_DATA_VERSION
        plugin = SummaryMetadata.PluginData(plugin_name=hp_metadata.PLUGIN_NAME, content=data.SerializeToString())
        summary = Summary(value=[Summary.Value(tag=tag, metadata=SummaryMetadata(plugin_data=plugin))])
        self.writer._get_file_writer().add_summary(summary)

    def log_item_embeddings(self, vectors: torch.Tensor, info: ItemInfo | None, item_ids: np.ndarray) -> None:
        """Item vectors in the projector, labelled with id, title and genres."""
        if info is None:
            metadata, header = [str(i) for i in item_ids], None
        else:
            genres = info.to_frame()["genres"].tolist()
            metadata = [[str(i), t or "-", g or "-"] for i, t, g in zip(item_ids, info.titles, genres)]
            header = ["id", "title", "genres"]
        self.writer.add_embedding(vectors.detach().cpu().float(), metadata=metadata, metadata_header=header,
                                  tag="items")

    def close(self) -> None:
        """Write the held-back per-epoch values that changed (e.g. a scheduled learning rate), then close."""
        for tag, points in self._held.items():
            if len({value for _, value in points}) > 1:
                for step, value in points:
                    self.writer.add_scalar(tag, value, step)
        self._held.clear()
        self.writer.close()
