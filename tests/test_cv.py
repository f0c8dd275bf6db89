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
from cfrec.errors import ConfigError, RunStopped

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


def test_a_resumed_cross_validation_keeps_finished_folds_and_fits_the_rest(tmp_path):
    first = cross_validate(config(), tmp_path / "a", label="bias", overrides=["model=bias"])
    (tmp_path / "a" / "fold_2" / "metrics.json").unlink()  # as if stopped before fold 2 ended
    kept_model = (tmp_path / "a" / "fold_0" / "model.pt").read_bytes()
    again = cross_validate(config(f"train.resume={tmp_path / 'a'}"), tmp_path / "b", label="bias", overrides=["model=bias"])
    assert [f["rmse"] for f in again["folds"]] == [f["rmse"] for f in first["folds"]]
    assert (tmp_path / "b" / "fold_0" / "model.pt").read_bytes() == kept_model  # copied, not refitted
    assert (tmp_path / "b" / "fold_2" / "metrics.json").is_file() and (tmp_path / "b" / "cv.json").is_file()


def test_a_fold_stopped_mid_training_resumes_from_its_state(tmp_path, caplog):
    cf = ["model=cf", "model.rank=4", "train.epochs=2", "train.batch_size=512", "model.knn_blend=null"]
    first = cross_validate(config(*cf), tmp_path / "a", label="cf")
    (tmp_path / "a" / "fold_1" / "metrics.json").unlink()  # its train_state.pt stays
    again = cross_validate(config(*cf, f"train.resume={tmp_path / 'a'}"), tmp_path / "b", label="cf")
    assert f"{tmp_path / 'a' / 'fold_1'} is already at epoch 2" in caplog.text  # fold 1 went on from its state
    assert again["folds"][1]["rmse"] == pytest.approx(first["folds"][1]["rmse"])


def test_resuming_with_other_options_names_them(tmp_path):
    cross_validate(config(), tmp_path / "a", label="bias")
    with pytest.raises(ConfigError, match=r"train.resume: .*fold_0 was cross-validated with other options \(seed: 42 → 7\)"):
        cross_validate(config("seed=7", f"train.resume={tmp_path / 'a'}"), tmp_path / "b", label="bias")


def test_ctrl_c_in_a_fold_says_how_to_resume_the_cross_validation(tmp_path, monkeypatch):
    import cfrec.apps.cv as cv_app

    fitted = []

    def stopped_in_fold_1(cfg, folder, label=None):
        if cfg["split"]["fold"] == 1:
            raise KeyboardInterrupt
        fitted.append(run(cfg, folder, label=label))
        return fitted[-1]

    monkeypatch.setattr(cv_app, "run", stopped_in_fold_1)
    with pytest.raises(RunStopped) as stop:
        cross_validate(config(), tmp_path / "a", label="bias", overrides=["model=bias", f"hydra.run.dir={tmp_path / 'a'}"])
    assert stop.value.code == 130 and len(fitted) == 1
    assert str(stop.value) == (f"interrupted in fold 2 of 3 (fold_1): resume the cross-validation (finished folds are kept) with: "
                               f"cfrec-cv model=bias train.resume={tmp_path / 'a'}")


def test_a_cross_validation_resumes_in_place(tmp_path):
    first = cross_validate(config(), tmp_path, label="bias")
    (tmp_path / "fold_1" / "metrics.json").unlink()
    kept = (tmp_path / "fold_0" / "metrics.json").stat().st_mtime_ns
    again = cross_validate(config(f"train.resume={tmp_path}"), tmp_path, label="bias")
    assert [f["rmse"] for f in again["folds"]] == [f["rmse"] for f in first["folds"]]
    assert (tmp_path / "fold_0" / "metrics.json").stat().st_mtime_ns == kept  # not fitted again
