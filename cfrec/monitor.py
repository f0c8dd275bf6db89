"""TensorBoard logging for runs: scalars per epoch, histograms, hyper-parameters, embeddings.

The training loop calls `TensorBoardLogger.on_epoch_end` with the metrics dict it computed;
models never write logs themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from cfrec.data.ratings import ItemInfo


class TensorBoardLogger:
    """Writes event files under ``folder`` (a run's ``tb/``)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.writer = SummaryWriter(log_dir=str(self.folder))

    def on_epoch_end(self, epoch: int, metrics: Mapping[str, float], model: nn.Module | None = None) -> None:
        """The trainer's epoch metrics as ``train/…`` and ``valid/…`` scalars; parameter histograms."""
        for key, value in metrics.items():
            if key != "epoch" and isinstance(value, (int, float)) and np.isfinite(value):
                tag = f"valid/{key[4:]}" if key.startswith("val_") else f"train/{key}"
                self.writer.add_scalar(tag, value, epoch)
        if isinstance(model, nn.Module):
            for name, param in model.named_parameters():
                self.writer.add_histogram(f"params/{name}", param.detach().cpu(), epoch)

    def log_metrics(self, metrics: Mapping[str, Any], step: int = 0, prefix: str = "test/") -> None:
        """Final evaluation metrics as scalars (every model, KNN included)."""
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value):
                self.writer.add_scalar(prefix + key, value, step)

    def log_hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, Any]) -> None:
        """The config's hyper-parameters with the final metrics, for the HParams tab."""
        flat = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in hparams.items()}
        scores = {f"hparam/{k}": float(v) for k, v in metrics.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)}
        self.writer.add_hparams(flat, scores, run_name=".")

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
        self.writer.close()
