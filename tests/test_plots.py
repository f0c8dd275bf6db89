"""Plots a user reads: shares that sum to 1, ranking plots for ranking-only models, no empty panels."""

from __future__ import annotations

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from cfrec import plots
from cfrec.apps.pipeline import run

TINY = ["data=synthetic", "data.n_users=120", "data.n_items=80", "data.n_ratings=3000", "run.progress=false",
        "run.tensorboard=false", "run.build_index=false", "run.save_model=false"]


def config(*overrides: str) -> dict:
    with initialize_config_module("cfrec.conf", version_base="1.3"):
        return OmegaConf.to_container(compose("config", overrides=[*TINY, *overrides]), resolve=True)


@pytest.mark.parametrize("step", [1.0, 0.5])
def test_rating_distribution_bars_are_shares_summing_to_one(step):
    rng = np.random.default_rng(0)
    values = np.arange(step, 5.0 + step / 2, step)
    train, test = rng.choice(values, 997), rng.choice(values, 101)
    fig = plots.rating_distribution_figure(train, test)
    ax = fig.axes[0]
    assert len(ax.containers) == 2
    for bars, part in zip(ax.containers, (train, test)):
        heights = np.array([b.get_height() for b in bars])
        assert heights.sum() == pytest.approx(1.0)
        # brute force: bar b covers the half-star bin [0.25 + 0.5 b, 0.75 + 0.5 b)
        expected = [np.mean((part >= lo) & (part < lo + 0.5)) for lo in plots._STAR_BINS[:-1]]
        assert heights == pytest.approx(expected)
    assert ax.get_ylabel() == "share of ratings"


def test_rating_distribution_without_a_test_set_has_one_part():
    fig = plots.rating_distribution_figure(np.array([1.0, 2.0, 2.0, 5.0]), None)
    (bars,) = fig.axes[0].containers
    assert sum(b.get_height() for b in bars) == pytest.approx(1.0)
    assert "all ratings" in fig.axes[0].get_title()


def test_training_curves_put_the_per_rating_loss_in_its_own_panel(tmp_path):
    history = [{"epoch": e, "loss": 100.0 / e, "loss_data": 80.0 / e, "loss_reg": 20.0 / e,
                "loss_per_rating": 1.0 / e, "val_rmse": 1.0 - e / 10} for e in (1, 2, 3)]
    path = plots.training_curves(history, tmp_path / "curves.png")
    assert path.stat().st_size > 0


def test_training_curves_star_the_returned_models_validation(tmp_path):
    """The KNN blend changes the model after the last epoch: its validation RMSE is starred there."""
    history = [{"epoch": e, "loss": 10.0 / e, "val_rmse": 1.0 - e / 10, "val_mae": 0.8 - e / 10} for e in (1, 2, 3)]
    fig = plots.training_curves_figure(history, {"val_rmse": 0.5, "knn_blend_weight": 0.4})
    rating_axis = fig.axes[-1]
    starred = [line for line in rating_axis.get_lines() if line.get_label() == "val_rmse, returned model"]
    assert len(starred) == 1 and list(starred[0].get_xdata()) == [3] and list(starred[0].get_ydata()) == [0.5]
    assert len(rating_axis.get_lines()) == 3  # val_mae, val_rmse and the star: nothing for keys not plotted
    assert len(plots.training_curves_figure(history).axes[-1].get_lines()) == 2


def test_a_ranking_only_model_gets_ranking_plots_instead_of_rating_plots(tmp_path):
    run(config("model=cf_weighted", "model.rank=8", "train.epochs=2", "train.val_fraction=0.0"), tmp_path, label="w")
    written = {p.name for p in tmp_path.glob("*.png")}
    assert {"recall_at_k.png", "score_distribution.png", "rating_distribution.png"} <= written
    assert not {"true_vs_predicted.png", "prediction_errors.png"} & written


def test_ranking_plots_show_the_evaluators_recall(tmp_path, small_split):
    from cfrec.evaluate import evaluate
    from cfrec.models import BiasBaseline

    train, test = small_split
    model = BiasBaseline().fit(train)  # float scores: no ties, so every K reads the same ranking
    paths = plots.ranking_plots(model, train, test, tmp_path, "bias")
    assert [p.name for p in paths] == ["recall_at_k.png", "score_distribution.png"]
    ks, curves, n_users = plots.ranking_curves(model, train, test)
    assert ks == [k for k in plots.CURVE_KS if k <= train.n_items] and np.all(np.diff(curves["recall@K"]) >= 0)
    metrics = evaluate(model, train, test, ks=(10, 50))
    assert curves["recall@K"][ks.index(10)] == pytest.approx(metrics["recall@10"])
    assert curves["recall@K"][ks.index(50)] == pytest.approx(metrics["recall@50"])
    assert n_users == metrics["n_ranking_users"]
