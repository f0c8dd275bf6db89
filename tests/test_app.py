"""The Hydra apps, driven for real (console scripts in subprocesses, compose API) on tiny data."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from cfrec.apps.pipeline import prepare
from cfrec.errors import ConfigError
from cfrec.models.registry import MODELS

CONF = Path(__file__).resolve().parents[1] / "cfrec" / "conf"
TINY = ["data=synthetic", "data.n_users=120", "data.n_items=80", "data.n_ratings=3000", "run.progress=false"]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run an app as a user would: ``python -m cfrec.apps.<name> ...``."""
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def composed(*overrides: str):
    with initialize_config_module("cfrec.conf", version_base="1.3"):
        return OmegaConf.to_container(compose("config", overrides=list(overrides)), resolve=False)


@pytest.mark.parametrize("group", ["data", "split", "model", "train", "eval", "index"])
def test_every_config_of_every_group_composes(group):
    for option in sorted(p.stem for p in (CONF / group).glob("*.yaml")):
        cfg = composed(f"{group}={option}")
        assert cfg[group] is not None


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONF / "model").glob("*.yaml")))
def test_model_configs_mirror_constructor_defaults(option):
    """conf/model/<name>.yaml lists exactly the constructor's arguments with the code's defaults
    (``device`` comes from the run's top-level ``device``); a variant (e.g. cf_weighted, name: cf)
    may only set existing arguments."""
    section = OmegaConf.to_container(OmegaConf.load(CONF / "model" / f"{option}.yaml"))
    name = section.pop("name")
    params = {k: v for k, v in inspect.signature(MODELS[name]).parameters.items() if k != "device"}
    assert set(section) <= set(params), f"{option}.yaml has keys {set(section) - set(params)} the constructor lacks"
    if option == name:
        assert set(section) == set(params), f"{option}.yaml lacks {set(params) - set(section)}"
        for key, value in section.items():
            default = params[key].default
            assert value == (list(default) if isinstance(default, tuple) else default), f"{option}.{key}"


def test_train_writes_a_complete_run_folder(tmp_path):
    run_dir = tmp_path / "run"
    done = cli("cfrec.apps.train", *TINY, "model=bias", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for name in ["metrics.json", "model.pt", "model.json", "train.log", ".hydra/config.yaml",
                 "rating_distribution.png", "prediction_errors.png", "true_vs_predicted.png"]:
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ["rmse", "mae", "accuracy", "recall@10", "recall@20", "recall@50", "n_test", "fit_seconds",
                "eval_seconds", "model", "data"]:
        assert key in metrics
    assert metrics["model"] == "bias" and metrics["data"].startswith("synthetic")
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))


def test_unknown_model_fails_before_any_work(tmp_path):
    done = cli("cfrec.apps.train", *TINY, "model=bias", "+model.nonsense=3", f"hydra.run.dir={tmp_path / 'r'}",
               cwd=tmp_path)
    assert done.returncode != 0 and "model.nonsense" in done.stderr
    assert not (tmp_path / "r" / "metrics.json").exists()


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["model.name=nope"], "model.name"),
        (["eval.tolerance=0"], "eval.tolerance"),
        (["eval.ks=[0]"], "eval.ks"),
        (["data=movielens", "data.root=/nonexistent"], "data.root"),
        (["device=tpu"], "device"),
        (["split.test_ratio=1.5"], "test_ratio"),
    ],
)
def test_config_errors_name_the_key(overrides, key):
    data = [] if any(o.startswith("data=") for o in overrides) else TINY
    cfg = composed(*data, "model=bias", *overrides)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        prepare(cfg)


def test_train_config_mirrors_train_config_dataclass():
    import dataclasses

    from cfrec.train.config import TrainConfig

    from cfrec.apps.fitting import RUN_KEYS

    section = OmegaConf.to_container(OmegaConf.load(CONF / "train" / "default.yaml"))
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.name != "device"}
    assert {k: v for k, v in section.items() if k not in RUN_KEYS} == defaults
    assert all(section[k] is None for k in RUN_KEYS)
