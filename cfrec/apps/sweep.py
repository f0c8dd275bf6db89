"""Hydra callback: after a multirun, one table of every job's overrides and metrics.

Every job of the sweep folder has a row: ``status`` ``ok`` with its metrics, ``failed`` with
its one-line ``error`` (the job's ``FAILED`` file), or ``unfinished`` (neither file: killed).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from cfrec.apps.guard import FAILED, SUMMARY_KEYS, report
from cfrec.io import atomic_path
from cfrec.tables import to_markdown

log = logging.getLogger(__name__)

COLUMNS = ["valid_rmse", "valid_ndcg@10", "rmse", "mae", "accuracy", "recall@10", "recall@50", "ndcg@10", "fit_seconds"]


def job_folders(sweep_dir: str | Path) -> list[Path]:
    """The job folders of a sweep (Hydra's ``.hydra/`` marks them), in job order."""
    jobs = [p.parent for p in Path(sweep_dir).glob("*/.hydra")]
    return sorted(jobs, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))


def summarize(sweep_dir: str | Path) -> pd.DataFrame:
    """Jobs of ``sweep_dir``: finished ones best first by each job's validation metric (``monitor``
    in its metrics.json: ``valid_rmse`` ascending, ``valid_ndcg@10`` descending…; jobs without
    one after them, in job order: a test metric never ranks a sweep), then the failed and
    unfinished ones with their error."""
    rows = []
    for job in job_folders(sweep_dir):
        overrides_file = job / ".hydra" / "overrides.yaml"
        overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
        row: dict[str, Any] = {"job": job.name, "overrides": " ".join(overrides or [])}
        failed, metrics_file = job / FAILED, job / "metrics.json"
        if failed.is_file():
            row.update(status="failed", error=failed.read_text().strip())
        elif metrics_file.is_file():
            metrics: dict[str, Any] = json.loads(metrics_file.read_text())
            row["status"] = "ok"
            monitor = metrics.get("monitor")
            if monitor in metrics and metrics[monitor] is not None:
                row.update({"monitor": monitor, "validation": metrics[monitor]})
                sign = 1.0 if metrics.get("monitor_mode", "min") == "min" else -1.0
                row["_key"] = sign * float(metrics[monitor])
            row.update({key: metrics[key] for key in COLUMNS if key in metrics})
        else:
            row.update(status="unfinished", error="no metrics.json and no FAILED: the job was killed or is running")
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    if "_key" not in table:
        table["_key"] = float("nan")
    table = table.assign(_ok=table["status"] != "ok")
    table = table.sort_values(["_ok", "_key"], kind="stable", na_position="last")
    table = table.drop(columns=["_ok", "_key"]).reset_index(drop=True)
    front = ["job", "overrides", "status"]
    return table[front + [c for c in table.columns if c not in front]]


def write_summary(sweep_dir: str | Path) -> pd.DataFrame:
    """``summary.csv`` and ``summary.md`` of every job of ``sweep_dir``; prints the table and the folder."""
    sweep_dir = Path(sweep_dir)
    table = summarize(sweep_dir)
    if table.empty:
        log.warning("no job folders under %s: no sweep summary written", sweep_dir)
        return table
    with atomic_path(sweep_dir / "summary.csv") as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(sweep_dir / "summary.md") as tmp:
        tmp.write_text(to_markdown(table))
    failed = table[table["status"] != "ok"]
    if len(failed):
        log.warning("%d of %d sweep jobs did not finish: %s", len(failed), len(table),
                    "; ".join(f"job {r.job}: {r.error}" for r in failed.itertuples()))
    report(sweep_dir, table.to_dict("records"), first="job", keys=("status", "validation", *SUMMARY_KEYS))
    return table


class SweepSummary(Callback):
    """Writes ``summary.csv`` and ``summary.md`` into the sweep folder when all jobs are done."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        write_summary(config.hydra.sweep.dir)
