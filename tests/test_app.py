"""The Hydra apps, driven for real (console scripts in subprocesses, compose API) on tiny data."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from cfrec.apps.pipeline import load_split, prepare
from cfrec.errors import ConfigError
from cfrec.evaluate import evaluate
from cfrec.models import BiasBaseline
from cfrec.models.registry import MODELS
from cfrec.objectives import make_objective

DEPRECATED = ("w0",)  # constructor arguments kept for old code, not in the presets

CONF = Path(__file__).resolve().parents[1] / "cfrec" / "conf"
TINY = ["data=synthetic", "data.n_users=120", "data.n_items=80", "data.n_ratings=3000", "run.progress=false"]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run an app as a user would: ``python -m cfrec.apps.<name> ...``."""
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def composed(*overrides: str, resolve: bool = False):
    with initialize_config_module("cfrec.conf", version_base="1.3"):
        return OmegaConf.to_container(compose("config", overrides=list(overrides)), resolve=resolve)


@pytest.mark.parametrize("group", ["data", "split", "model", "train", "eval", "index"])
def test_every_config_of_every_group_composes(group):
    for option in sorted(p.stem for p in (CONF / group).glob("*.yaml")):
        cfg = composed(f"{group}={option}")
        assert cfg[group] is not None


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONF / "model").glob("*.yaml")))
def test_model_presets_compose_to_constructor_arguments(option):
    """model=<option> composes to the constructor's arguments (``device`` comes from the run's
    top-level ``device``; deprecated arguments are left out), each with the code's default unless
    the preset sets it, and the model builds from it."""
    section = composed(f"model={option}")["model"]
    name = section.pop("name")
    params = {k: v for k, v in inspect.signature(MODELS[name]).parameters.items() if k not in ("device", *DEPRECATED)}
    assert set(section) == set(params)
    if option == name:  # the model's own preset: the code's defaults exactly
        for key, value in section.items():
            default = params[key].default
            if key == "objective":  # a preset of conf/model/objective/, equal to the code's default objective
                assert value == make_objective(default).config(), f"{option}.objective"
                continue
            assert value == (list(default) if isinstance(default, tuple) else default), f"{option}.{key}"
    MODELS[name](**section)


@pytest.mark.parametrize("objective", sorted(p.stem for p in (CONF / "model" / "objective").glob("*.yaml")))
def test_objective_presets_compose_to_the_objectives(objective):
    """model/objective=<name> lists every option of that objective with its default."""
    section = composed("model=cf", f"model/objective={objective}")["model"]["objective"]
    assert section == make_objective(objective).config()


@pytest.mark.parametrize("path", sorted(CONF.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONF)))
def test_no_preset_repeats_a_default(path):
    """A default is written once, in the library code its schema is read from
    (cfrec.apps.schema): a group preset names its schema first and sets only what differs."""
    from cfrec.apps import schema

    preset = OmegaConf.to_container(OmegaConf.load(path))
    group = path.parent.relative_to(CONF).as_posix()
    if group == ".":  # an app's primary config: the top-level keys (AppConfig) only where they differ
        base = OmegaConf.to_container(OmegaConf.structured(schema.AppConfig))
        for key in ("seed", "device", "threads", "run"):
            assert key not in preset or preset[key] != base[key], f"{path.name} repeats {key}"
        for key, value in (preset.get("run") or {}).items():
            assert value != base["run"][key], f"{path.name} repeats run.{key}"
        return
    if group == "hparams_search":
        return
    defaults = preset.pop("defaults")
    if not defaults[0].startswith("/schema/"):  # a preset over another of its group (train/als over default)
        base = schema.preset(group, defaults[0])
    else:
        assert defaults[0].startswith(f"/schema/{group}/") and defaults[0].endswith("@_here_"), defaults
        name = defaults[0][len(f"/schema/{group}/"):-len("@_here_")]
        tables = {"model": schema.MODEL_SCHEMAS, "model/objective": schema.OBJECTIVE_SCHEMAS,
                  "data": schema.DATA_SCHEMAS, "split": schema.SPLIT_SCHEMAS}
        node = tables[group][name] if group in tables else schema.GROUP_SCHEMAS[group]
        base = OmegaConf.to_container(OmegaConf.structured(node))
    repeated = {k: v for k, v in preset.items() if k != "name" and base.get(k) == v}
    assert not repeated, f"{path.name} repeats defaults {repeated}"


def test_cf_rank_default_is_written_once():
    """The default model's rank: the constructor's default, and no yaml file names it."""
    assert composed()["model"]["rank"] == inspect.signature(MODELS["cf"]).parameters["rank"].default
    assert not any("rank: 64" in p.read_text() for p in CONF.rglob("*.yaml"))


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
    assert list((run_dir / "tb").rglob("events.out.tfevents.*"))  # tb/<run name>/


def test_compare_writes_the_table_metrics_and_plots(tmp_path):
    run_dir = tmp_path / "compare"
    models = ["user_knn_reference", "hnsw_knn_reference", "bias", "cf", "cf_weighted"]
    data = ["data=synthetic", "data.n_users=200", "data.n_items=150", "data.n_ratings=5000", "run.progress=false"]
    done = cli("cfrec.apps.compare", *data, f"compare.only=[{','.join(models)}]", "compare.head=100",
               f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(run_dir / "comparison.csv")
    assert table["model"].tolist() == models
    assert {"accuracy@first100", "rmse@first100", "accuracy", "rmse", "mae", "recall@50", "fit_seconds",
            "eval_seconds"} <= set(table.columns)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    split = load_split(composed(*data, resolve=True))  # the same split, rebuilt here: the bias row checks out
    bias = BiasBaseline().fit(split.train)
    for key, value in evaluate(bias, split.train, split.test, ks=(10, 20, 50)).items():
        if not key.endswith("seconds"):
            assert metrics["bias"][key] == pytest.approx(value, rel=1e-5), key
    first = evaluate(bias, split.train, split.test, limit=100, ranking=False)
    assert metrics["bias"]["rmse@first100"] == pytest.approx(first["rmse"], rel=1e-5)
    for name in ["comparison.md", "rating_distribution.png", "prediction_errors.png", "metrics.png",
                 *(f"true_vs_predicted_{m}.png" for m in models if m != "cf_weighted")]:
        assert (run_dir / name).stat().st_size > 0, name
    assert metrics["cf_weighted"]["predicts_ratings"] is False and metrics["cf"]["predicts_ratings"] is True
    assert not (run_dir / "true_vs_predicted_cf_weighted.png").exists()  # ranking scores have no rating error
    assert "cf_weighted: ranking models (their scores are not ratings)" in (run_dir / "comparison.md").read_text()
    assert "rmse" not in metrics["cf_weighted"] and table.set_index("model")["rmse"].isna()["cf_weighted"]


@pytest.mark.parametrize(
    ("overrides", "named"),
    [(["compare.only=[cf,svdpp]"], "compare.only: no entries named ['svdpp']"),
     (["compare.only=[bias,user_knn]", "+compare.models.user_knn.dim=500"], "compare.models.user_knn.dim: asks for 500"),
     (["compare.only=[x]", "+compare.models.x={model: cf, rank: -1}"], "compare.models.x.rank: must be an integer >= 1")],
)
def test_compare_config_errors_name_the_key_before_any_fit(tmp_path, overrides, named):
    done = cli("cfrec.apps.compare", *TINY, *overrides, f"hydra.run.dir={tmp_path / 'c'}", cwd=tmp_path)
    assert done.returncode != 0 and named in done.stderr
    assert "bias: rmse" not in done.stderr  # nothing was fitted
    assert not (tmp_path / "c" / "comparison.csv").exists()


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


def test_train_group_is_train_config():
    """The train group composes to TrainConfig's fields (but the run's device) and ``resume``."""
    import dataclasses

    from cfrec.train.config import TrainConfig

    section = composed("train=default")["train"]
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.name != "device"}
    assert section == {**defaults, "resume": None}


def test_the_package_ships_every_preset():
    """pyproject's package data for cfrec.conf matches every yaml file under it (model/objective/ too):
    an installed (not editable) cfrec composes the same configs."""
    import glob

    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((CONF.parents[1] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["cfrec.conf"]
    shipped = {Path(p) for pattern in patterns for p in glob.glob(pattern, root_dir=CONF, recursive=True)}
    assert shipped == {p.relative_to(CONF) for p in CONF.rglob("*.yaml")}


def test_the_deprecated_w0_key_still_works_with_a_warning():
    """+model.w0=0.3 (the weighted mask before objectives existed) passes the schema and warns."""
    from cfrec.apps.pipeline import make_model

    cfg = composed(*TINY, "model=cf_rating", "+model.w0=0.3")
    with pytest.warns(DeprecationWarning, match="w0 is deprecated"):
        model, _, _ = prepare(cfg)
    assert model.objective.name == "weighted" and model.objective.w0 == 0.3
    with pytest.warns(DeprecationWarning):
        make_model({"name": "cf", "w0": 0.5}, "cpu")
