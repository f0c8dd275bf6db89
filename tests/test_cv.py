"""Cross-validation: every fold is the run `cfrec-train split=kfold split.fold=f` makes, and the
summary is their mean ± sample standard deviation."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from cfrec.apps.cv import cross_validate, summarize_folds
from cfrec.apps.pipeline import run
from cfrec.apps.runs import list_runs
from cfrec.errors import ConfigError

TINY = ["data=synthetic", "data.n_users=120", "data.n_items=80", "data.n_ratings=3000", "run.progress=false",
        "run.tensorboard=false", "run.plots=false", "model=bias", "split.n_folds=3"]


def config(*overrides: str, name: str = "cv") -> dict:
    with initialize_config_module("cfrec.conf", version_base="1.3"):
        kfold = ["split=kfold"] if name == "config" else []  # cfrec-train's config needs the split chosen
        return OmegaConf.to_container(compose(name, overrides=[*kfold, *TINY, *overrides]), resolve=True)


def test_cv_config_is_the_train_config_with_the_kfold_split():
    cfg = config()
    assert cfg["split"]["name"] == "kfold" and cfg["run"]["build_index"] is False
    assert set(cfg) == set(config(name="config"))


def test_every_fold_and_mean_and_std(tmp_path, capsys):
    summary = cross_validate(config(), tmp_path, label="bias", overrides=["model=bias"])
    folds = summary["folds"]
    assert len(folds) == 3
    single = run(config("split.fold=1", name="config"), tmp_path / "single", label="bias")
    assert folds[1]["rmse"] == pytest.approx(single["rmse"])  # fold 1 is cfrec-train's split.fold=1
    rmses = np.array([f["rmse"] for f in folds])
    assert summary["mean"]["rmse"] == pytest.approx(rmses.mean())
    assert summary["std"]["rmse"] == pytest.approx(rmses.std(ddof=1))
    assert len(set(rmses.tolist())) == 3  # three different test sets
    saved = json.loads((tmp_path / "cv.json").read_text())
    assert saved["mean"]["rmse"] == pytest.approx(rmses.mean())
    assert json.loads((tmp_path / "metrics.json").read_text())["rmse_std"] == pytest.approx(rmses.std(ddof=1))
    assert "mean ± std" in (tmp_path / "cv.md").read_text() and "mean ± std" in capsys.readouterr().out
    assert (tmp_path / "fold_2" / ".hydra" / "overrides.yaml").read_text().strip().endswith("split.fold=2")
    listed = list_runs(tmp_path)
    status = dict(zip(listed.run, listed.status))
    assert status.pop(str(tmp_path)) == "ok (3-fold cv, means)"
    assert status == {"fold_0": "ok", "fold_1": "ok", "fold_2": "ok", "single": "ok"}


def test_summary_statistics_and_wrong_split():
    mean, std = summarize_folds([{"rmse": 1.0, "model": "x"}, {"rmse": 3.0, "model": "x"}])
    assert mean == {"rmse": 2.0} and std["rmse"] == pytest.approx(np.sqrt(2.0))
    with pytest.raises(ConfigError, match="split"):
        cross_validate({**config(), "split": {"name": "per_user"}}, "unused")


@pytest.mark.parametrize("n_folds", [0, 1])
def test_too_few_folds_are_refused_before_any_fold(tmp_path, n_folds):
    with pytest.raises(ConfigError, match=f"split.n_folds: must be an integer >= 2, got {n_folds}"):
        cross_validate(config(f"split.n_folds={n_folds}"), tmp_path)
    assert not list(tmp_path.iterdir())


def test_a_folds_overrides_rerun_it_with_cfrec_train(tmp_path):
    """A fold's overrides.yaml is what `cfrec-train` needs for that fold (and its resume hint):
    split=kfold included, which cfrec-cv's config chooses by default."""
    cross_validate(config(), tmp_path, label="bias", overrides=["model=bias", "data=synthetic"])
    overrides = yaml.safe_load((tmp_path / "fold_1" / ".hydra" / "overrides.yaml").read_text())
    assert overrides == ["split=kfold", "model=bias", "data=synthetic", "split.fold=1"]
    with initialize_config_module("cfrec.conf", version_base="1.3"):
        again = OmegaConf.to_container(compose("config", overrides=[*overrides, *TINY[1:]]), resolve=True)
    assert again["split"]["name"] == "kfold" and again["split"]["fold"] == 1


def test_the_app_reports_a_mistake_in_one_line_and_marks_the_run_failed(tmp_path):
    folder = tmp_path / "cv"
    done = subprocess.run([sys.executable, "-m", "cfrec.apps.cv", *TINY, "split.n_folds=0", f"hydra.run.dir={folder}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "MPLBACKEND": "Agg"})
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == ["cfrec-cv: split.n_folds: must be an integer >= 2, got 0"]
    assert "split.n_folds" in (folder / "FAILED").read_text()
