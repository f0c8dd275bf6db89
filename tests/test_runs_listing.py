"""cfrec-runs: every run folder, newest first, with model, data, main metrics and status."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

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


GOOD_METRICS = {"model": "cf", "data": "ml-1m", "rmse": 0.84, "recall@50": 0.11, "ndcg@10": 0.02}


@pytest.mark.parametrize(("name", "content"), [
    (".hydra/config.yaml", b"garbage: [\n"),      # not YAML
    (".hydra/config.yaml", b"- a\n- list\n"),     # YAML, but no mapping
    (".hydra/hydra.yaml", b"hydra: [\n"),
    ("metrics.json", b"{bad"),                    # not JSON
    ("metrics.json", b"[1, 2]"),                  # JSON, but no object
    ("metrics.json", b"\xff\xfe{}"),              # not UTF-8
    ("cv.json", b"{bad"),
], ids=["config-not-yaml", "config-no-mapping", "hydra-not-yaml", "metrics-not-json", "metrics-a-list",
        "metrics-not-utf8", "cv-not-json"])
def test_a_damaged_run_is_listed_with_the_damage_named(tmp_path, capsys, name, content):
    now = time.time()
    make_run(tmp_path / "good", now - 9000, GOOD_METRICS)
    damaged = make_run(tmp_path / "damaged", now - 8000, GOOD_METRICS)
    (damaged / name).write_bytes(content)
    rows = list_runs(tmp_path, now=now).set_index("run")
    assert rows.status.to_dict() == {"good": "ok", "damaged": f"unreadable {name}"}
    assert rows.loc["good", "rmse"] == 0.84
    if name != "metrics.json":  # what can still be read is still shown
        assert rows.loc["damaged", "rmse"] == 0.84
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "good" in out and f"unreadable {name}" in out


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_limit_must_be_positive(tmp_path, capsys, limit):
    make_run(tmp_path / "old", time.time() - 9000, GOOD_METRICS)
    make_run(tmp_path / "new", time.time() - 8000, GOOD_METRICS)
    assert main([str(tmp_path), "-n", limit]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"cfrec-runs: -n must be a positive number of runs, got {limit}\n"
    with pytest.raises(ValueError, match="positive"):
        list_runs(tmp_path, limit=int(limit))


def test_a_config_of_an_odd_shape_leaves_blanks(tmp_path):
    now = time.time()
    run = make_run(tmp_path / "odd", now - 9000, {"rmse": 0.84})
    (run / ".hydra" / "config.yaml").write_text("model: cf\ndata: ml-1m\n")  # names, not mappings
    (run / ".hydra" / "hydra.yaml").write_text("hydra: 3\n")
    row = list_runs(tmp_path, now=now).iloc[0]
    assert (row.model, row.data, row.rmse, row.status) == ("", "", 0.84, "ok")
