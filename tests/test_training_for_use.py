"""split=none: a model fitted on every rating, nothing evaluated, and it never recommends a
movie its user rated; an evaluation run's model says it saw the train split only."""

from __future__ import annotations

import json

import numpy as np
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

import cfrec
from cfrec.apps.pipeline import load_split, run
from cfrec.apps.train import objective

TINY = ["data=synthetic", "data.n_users=120", "data.n_items=80", "data.n_ratings=3000", "run.progress=false",
        "run.tensorboard=false", "model=cf", "model.rank=8", "train.epochs=2"]


def config(*overrides: str) -> dict:
    with initialize_config_module("cfrec.conf", version_base="1.3"):
        return OmegaConf.to_container(compose("config", overrides=[*TINY, *overrides]), resolve=True)


def test_split_none_trains_on_everything_and_never_recommends_a_rated_movie(tmp_path):
    cfg = config("split=none")
    train, test = load_split(cfg)
    ratings = train  # split=none: train is every rating
    assert len(test) == 0 and len(train) == 3000
    metrics = run(cfg, tmp_path, label="cf")
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["test"] is None and saved["n_train"] == 3000 and saved["fit_seconds"] > 0
    assert "rmse" not in saved and metrics == saved
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["trained_on"].startswith("all ratings") and meta["n_train"] == 3000
    assert {p.name for p in tmp_path.glob("*.png")} == {"rating_distribution.png", "training_curves.png"}
    model = cfrec.load(tmp_path)
    raw_users = ratings.user_map.to_ids(ratings.users)
    raw_items = ratings.item_map.to_ids(ratings.items)
    for user in np.unique(raw_users):  # brute force over every user: the full list of unseen movies
        top = model.recommend(int(user), k=ratings.n_items)
        rated = set(raw_items[raw_users == user].tolist())
        assert not rated & set(top.movie_id.tolist())
        assert len(top) == ratings.n_items - len(rated)


def test_an_evaluation_runs_model_says_it_saw_the_train_split(tmp_path):
    run(config("split.test_ratio=0.2", "run.plots=false", "run.build_index=false"), tmp_path, label="cf")
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["trained_on"].startswith("train split (80% of each user's ratings")
    assert meta["n_train"] == json.loads((tmp_path / "metrics.json").read_text())["n_train"] < 3000


def test_hydra_gets_the_monitored_validation_metric_never_a_test_metric():
    assert objective({"valid_rmse": 0.8, "rmse": 0.9, "monitor": "valid_rmse"}) == 0.8
    assert objective({"valid_ndcg@10": 0.3, "monitor": "valid_ndcg@10"}) == 0.3
    assert objective({"rmse": 0.9}) is None and objective(None) is None


def test_compare_refuses_split_none_before_any_fit(tmp_path):
    import pytest

    from cfrec.apps.compare import compare
    from cfrec.errors import ConfigError

    with initialize_config_module("cfrec.conf", version_base="1.3"):
        cfg = OmegaConf.to_container(compose("compare", overrides=[*TINY[:5], "split=none"]), resolve=True)
    with pytest.raises(ConfigError, match="split"):
        compare(cfg, tmp_path)
    assert not list(tmp_path.iterdir())
