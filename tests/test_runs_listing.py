"""cfrec-runs: every run folder, newest first, with model, data, main metrics and status."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from cfrec.apps.runs import list_runs, main


def make_run(folder: Path, started: float, metrics: dict | None = None, failed: str | None = None,
             model: str = "cf") -> Path:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(f"model:\n  name: {model}\ndata:\n  name: ml-1m\n")
    (folder / "train.log").write_text("log\n")
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    if failed is not None:
        (folder / "FAILED").write_text(failed + "\n")
    (folder / "tb" / "cf").mkdir(parents=True)  # never listed as a run of its own
    for path in [folder / ".hydra" / "config.yaml", folder / "train.log", *folder.glob("*")]:
        os.utime(path, (started, started))
    return folder


def test_runs_are_listed_newest_first_with_metrics_and_status(tmp_path, capsys):
    now = time.time()
    make_run(tmp_path / "2026-11-01" / "10-00-00", now - 9000,
             {"model": "cf", "data": "ml-1m", "rmse": 0.8416, "recall@50": 0.11, "ndcg@10": 0.02})
    make_run(tmp_path / "2026-11-01" / "11-00-00", now - 8000, failed="ConfigError: model.rank: must be positive")
    make_run(tmp_path / "2026-11-01" / "12-00-00", now - 7000)  # killed long ago
    make_run(tmp_path / "multirun" / "2026-11-02" / "09-00-00" / "0", now - 60, model="cf_weighted")  # still writing
    make_run(tmp_path / "multirun" / "2026-11-02" / "09-00-00" / "1", now - 30,
             {"model": "cf_weighted", "data": "ml-1m", "recall@50": 0.55, "ndcg@10": 0.31})
    table = list_runs(tmp_path, now=now)
    assert table.run.tolist() == ["multirun/2026-11-02/09-00-00/1", "multirun/2026-11-02/09-00-00/0",
                                  "2026-11-01/12-00-00", "2026-11-01/11-00-00", "2026-11-01/10-00-00"]
    assert table.status.tolist() == ["ok", "running", "incomplete", "FAILED: ConfigError: model.rank: must be positive", "ok"]
    assert table.model.tolist() == ["cf_weighted", "cf_weighted", "cf", "cf", "cf"]
    assert np.isnan(table["rmse"][0]) and table["recall@50"][0] == 0.55  # ranking-only: no rmse
    assert table["rmse"][4] == 0.8416
    assert len(list_runs(tmp_path, limit=2, now=now)) == 2
    assert main([str(tmp_path), "-n", "1"]) == 0
    out = capsys.readouterr().out
    assert "multirun/2026-11-02/09-00-00/1" in out and "0.5500" in out and "10-00-00" not in out


def test_missing_folder_is_a_one_line_error(tmp_path, capsys):
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err
