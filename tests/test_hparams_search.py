"""Hyper-parameter search with Hydra's Optuna sweeper (the optional ``tune`` extra) on tiny data."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason='needs pip install -e ".[tune]"')

TINY = ["data=synthetic", "data.n_users=120", "data.n_items=80", "data.n_ratings=3000", "run.progress=false",
        "run.plots=false", "run.tensorboard=false", "train.epochs=2", "train.val_fraction=0.1"]


def test_optuna_search_minimises_the_validation_rmse(tmp_path):
    sweep = tmp_path / "sweep"
    result = subprocess.run(
        [sys.executable, "-m", "cfrec.apps.train", "hparams_search=cf_optuna", "hydra.sweeper.n_trials=3",
         *TINY, f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, env={**os.environ, "MPLBACKEND": "Agg"}, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    trials = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json"))]
    assert len(trials) == 3
    assert best["best_value"] == pytest.approx(min(t["valid_rmse"] for t in trials))
    assert set(best["best_params"]) == {"model.rank", "model.l2", "model.l2_exponent", "train.lr"}
    assert (sweep / "summary.md").is_file()
    assert not list(sweep.glob("*/items.hnsw"))  # the preset's run.build_index=false wins over config.yaml
