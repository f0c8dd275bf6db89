"""Hydra callback: after a multirun, one table of every job's overrides and metrics."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from cfrec.io import atomic_path
from cfrec.tables import to_markdown

log = logging.getLogger(__name__)

COLUMNS = ["valid_rmse", "valid_ndcg@10", "rmse", "mae", "accuracy", "recall@10", "recall@50", "ndcg@10", "fit_seconds"]


def summarize(sweep_dir: str | Path) -> pd.DataFrame:
    """Jobs of ``sweep_dir``, best first by each job's validation metric (``monitor`` in its
    metrics.json: ``valid_rmse`` ascending, ``valid_ndcg@10`` descending…). Jobs without a
    validation metric come last in job order: a test metric never ranks a sweep."""
    rows = []
    for metrics_file in sorted(Path(sweep_dir).glob("*/metrics.json"), key=lambda p: _job_number(p.parent.name)):
        job = metrics_file.parent
        metrics: dict[str, Any] = json.loads(metrics_file.read_text())
        overrides_file = job / ".hydra" / "overrides.yaml"
        overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
        row = {"job": job.name, "overrides": " ".join(overrides or [])}
        monitor = metrics.get("monitor")
        if monitor in metrics:
            row.update({"monitor": monitor, "validation": metrics[monitor]})
            sign = 1.0 if metrics.get("monitor_mode", "min") == "min" else -1.0
            row["_key"] = sign * float(metrics[monitor])
        row.update({key: metrics[key] for key in COLUMNS if key in metrics})
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    if "_key" not in table:
        return table.reset_index(drop=True)
    return table.sort_values("_key", kind="stable", na_position="last").drop(columns="_key").reset_index(drop=True)


def _job_number(name: str) -> tuple[int, str]:
    return (int(name), name) if name.isdigit() else (1 << 30, name)


class SweepSummary(Callback):
    """Writes ``summary.csv`` and ``summary.md`` into the sweep folder when all jobs are done."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        table = summarize(sweep_dir)
        if table.empty:
            log.warning("no metrics.json under %s: no sweep summary written", sweep_dir)
            return
        with atomic_path(sweep_dir / "summary.csv") as tmp:
            table.to_csv(tmp, index=False)
        with atomic_path(sweep_dir / "summary.md") as tmp:
            tmp.write_text(to_markdown(table))
        log.info("sweep summary (best first):\n%s", table.to_string(index=False))
