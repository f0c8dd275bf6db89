"""Runs of ranking and joint models: what metrics.json, model.json, the plots and sweeps say."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cfrec.apps.sweep import summarize

TINY = ["data=synthetic", "data.n_users=120", "data.n_items=80", "data.n_ratings=3000", "run.progress=false",
        "train.epochs=2"]


def train(tmp_path: Path, *overrides: str, multirun: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "MPLBACKEND": "Agg"}
    command = [sys.executable, "-m", "cfrec.apps.train", *(["-m"] if multirun else []), *TINY, *overrides]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_a_ranking_model_run_reports_no_rating_metric(tmp_path: Path) -> None:
    run_dir = tmp_path / "bpr"
    done = train(tmp_path, "model=bpr", f"hydra.run.dir={run_dir}")
    assert done.returncode == 0, done.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert not {"rmse", "mae", "accuracy"} & set(metrics)
    assert metrics["monitor"] == "valid_ndcg@10" and metrics["monitor_mode"] == "max"
    assert {"valid_recall@50", "valid_ndcg@10", "recall@50", "ndcg@10"} <= set(metrics)
    model = json.loads((run_dir / "model.json").read_text())
    assert (model["model"], model["predicts_ratings"], model["ranks_by"]) == ("bpr", False, "preference")
    assert not (run_dir / "true_vs_predicted.png").exists() and not (run_dir / "prediction_errors.png").exists()
    assert "rmse" not in done.stderr.split("bpr:")[-1].split("\n")[0]  # the run's summary line


def test_the_default_model_reports_both_questions(tmp_path: Path) -> None:
    run_dir = tmp_path / "cf"
    done = train(tmp_path, f"hydra.run.dir={run_dir}")
    assert done.returncode == 0, done.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"rmse", "accuracy", "recall@50", "ndcg@10", "valid_rmse", "valid_ndcg@10"} <= set(metrics)
    assert metrics["monitor"] == "valid_rmse"
    model = json.loads((run_dir / "model.json").read_text())
    assert model["config"]["objective"]["name"] == "joint" and model["predicts_ratings"] is True


def write_job(folder: Path, job: int, metrics: dict) -> None:
    (folder / str(job) / ".hydra").mkdir(parents=True)
    (folder / str(job) / "metrics.json").write_text(json.dumps(metrics))
    (folder / str(job) / ".hydra" / "overrides.yaml").write_text(f"- model.l2={job}\n")


def test_sweeps_sort_on_the_validation_metric_never_on_test(tmp_path: Path) -> None:
    """Ranking jobs: the highest valid_ndcg@10 first, whatever their test metrics say; a job
    without validation last."""
    write_job(tmp_path, 0, {"monitor": "valid_ndcg@10", "monitor_mode": "max", "valid_ndcg@10": 0.20, "ndcg@10": 0.9})
    write_job(tmp_path, 1, {"monitor": "valid_ndcg@10", "monitor_mode": "max", "valid_ndcg@10": 0.30, "ndcg@10": 0.1})
    write_job(tmp_path, 2, {"rmse": 0.1})  # no validation: never ranked by its test RMSE
    write_job(tmp_path, 3, {"monitor": "valid_ndcg@10", "monitor_mode": "max", "valid_ndcg@10": 0.25, "ndcg@10": 0.5})
    assert summarize(tmp_path)["job"].tolist() == ["1", "3", "0", "2"]
    for job in range(4):
        (tmp_path / str(job) / "metrics.json").unlink()
    write_job(tmp_path / "rmse", 0, {"monitor": "valid_rmse", "monitor_mode": "min", "valid_rmse": 0.90, "rmse": 0.1})
    write_job(tmp_path / "rmse", 1, {"monitor": "valid_rmse", "monitor_mode": "min", "valid_rmse": 0.85, "rmse": 0.9})
    assert summarize(tmp_path / "rmse")["job"].tolist() == ["1", "0"]


@pytest.mark.slow
def test_a_real_sweep_returns_and_sorts_on_validation(tmp_path: Path) -> None:
    done = train(tmp_path, "model=cf_weighted", "model.l2=5,80", f"hydra.sweep.dir={tmp_path / 'sweep'}", multirun=True)
    assert done.returncode == 0, done.stderr
    table = summarize(tmp_path / "sweep")
    values = table["validation"].tolist()
    assert len(values) == 2 and values == sorted(values, reverse=True) and set(table["monitor"]) == {"valid_ndcg@10"}
