"""Collaborative filtering and content-based models: contract, planted structure, fold-in, cold start."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cfrec.data import Ratings, SyntheticData, per_user_split, synthetic
from cfrec.evaluate import evaluate
from cfrec.models import BiasBaseline, CollaborativeFiltering, ContentBased
from cfrec.models.features import item_features
from cfrec.train.batches import DenseLayout
from contract import ModelContract

CONVERGE = {"epochs": 200, "batch_size": None, "lr": 0.05, "schedule": "cosine", "val_fraction": 0.0}


class TestCollaborativeFiltering(ModelContract):  # the default: the joint objective
    def make_model(self):
        return CollaborativeFiltering(rank=8, l2=5.0, l2_exponent=0.0, objective={"name": "joint", "rank": 8})


class TestSquaredCollaborativeFiltering(ModelContract):  # the factors alone: score is predict
    def make_model(self):
        return CollaborativeFiltering(rank=8, l2=5.0, l2_exponent=0.0, objective="squared", knn_blend=None)


class TestBlendedCollaborativeFiltering(ModelContract):  # the factors and an item-KNN (cfrec.models.blend)
    def make_model(self):
        return CollaborativeFiltering(rank=8, l2=5.0, l2_exponent=0.0, objective="squared", knn_blend=10)


class TestWeightedCollaborativeFiltering(ModelContract):
    def make_model(self):
        return CollaborativeFiltering(rank=8, l2=5.0, l2_exponent=0.0, objective={"name": "weighted", "w0": 0.05})


class TestBPR(ModelContract):
    def make_model(self):
        return CollaborativeFiltering(rank=8, l2=0.1, l2_exponent=0.0, objective="bpr")


class TestContentBased(ModelContract):
    def make_model(self):
        return ContentBased()


class TestPureContentBased(ModelContract):
    def make_model(self):
        return ContentBased(bias=False)


@pytest.fixture(scope="module")
def planted() -> SyntheticData:
    """Pure rank-4 structure plus biases (no genre term), 600 users × 200 items, a third rated."""
    return synthetic(n_users=600, n_items=200, n_ratings=40_000, rank=4, genre_scale=0.0, seed=7)


@pytest.fixture(scope="module")
def tiny() -> SyntheticData:
    return synthetic(n_users=100, n_items=60, n_ratings=2500, rank=3, seed=2)


@pytest.mark.parametrize("layout", ["dense", "index"])
def test_cf_reaches_the_noise_floor_on_planted_data(planted: SyntheticData, layout: str) -> None:
    train, test = per_user_split(planted.ratings, test_ratio=0.1, seed=1)
    model = CollaborativeFiltering(rank=4, l2=5.0, l2_exponent=0.0)  # the notes' J
    options = {"epochs": 60, "lr": 0.05, "schedule": "cosine", "layout": layout}
    model.fit(train, {**options, "batch_size": None} if layout == "dense" else {**options, "batch_size": 4096, "epochs": 30})
    rmse = evaluate(model, train, test, ranking=False)["rmse"]
    assert rmse <= 1.10 * planted.noise_floor
    assert rmse < 0.9 * evaluate(BiasBaseline().fit(train), train, test, ranking=False)["rmse"]


@pytest.mark.parametrize("l2_exponent", [0.0, 0.5])
def test_fold_in_of_a_training_user_reproduces_the_fitted_theta(tiny: SyntheticData, l2_exponent: float) -> None:
    """At a converged model, the closed-form fold-in of every user's ratings is their θ and bias."""
    ratings = tiny.ratings
    l2 = 2.0 if l2_exponent == 0 else 0.5
    model = CollaborativeFiltering(rank=3, l2=l2, l2_exponent=l2_exponent).fit(ratings, CONVERGE)
    folded = model.fold_in(ratings.items, ratings.values, users=ratings.users)
    torch.testing.assert_close(folded.theta, model.theta.detach(), rtol=0, atol=1e-3)
    torch.testing.assert_close(folded.bias, model.user_bias.detach(), rtol=0, atol=1e-3)
    one = ratings.users == 5
    single = model.fold_in(ratings.items[one], ratings.values[one])  # one new user
    torch.testing.assert_close(single.theta[0], model.theta.detach()[5], rtol=0, atol=1e-3)


def test_fold_in_of_the_content_model_reproduces_the_fitted_theta(tiny: SyntheticData) -> None:
    ratings = tiny.ratings
    model = ContentBased(l2=1.0).fit(ratings, CONVERGE)
    folded = model.fold_in(ratings.items, ratings.values, users=ratings.users)
    torch.testing.assert_close(folded.theta, model.theta.detach(), rtol=0, atol=1e-3)


def test_weighted_fold_in_zeroes_the_gradient_of_j(tiny: SyntheticData) -> None:
    """With the weighted mask (every cell counts), the folded-in θ is J's stationary point in θ."""
    ratings = tiny.ratings
    model = CollaborativeFiltering(rank=3, l2=2.0, w0=0.05, l2_exponent=0.0).fit(ratings, {"epochs": 30, "batch_size": None})
    folded = model.fold_in(ratings.items, ratings.values, users=ratings.users)
    with torch.no_grad():
        model.theta.copy_(folded.theta)
        model.user_bias.copy_(folded.bias)
    model.zero_grad()
    model(next(DenseLayout(ratings).batches(None, torch.Generator()))).total.backward()
    assert model.theta.grad.abs().max() < 1e-3 and model.user_bias.grad.abs().max() < 1e-3
    assert model.x.grad.abs().max() > 1e-2  # the item side was not at its optimum: the check can fail


def test_folded_users_predict_and_recommend(tiny: SyntheticData) -> None:
    ratings = tiny.ratings
    model = CollaborativeFiltering(rank=3, l2=2.0, l2_exponent=0.0, objective="squared").fit(
        ratings, {"epochs": 20, "batch_size": None})
    items, values = torch.tensor([3, 7, 11]), torch.tensor([5.0, 1.0, 4.0])
    folded = model.fold_in(items, values)
    top, scores = folded.recommend(k=5)
    assert top.shape == (1, 5) and not set(top[0].tolist()) & {3, 7, 11}
    pred = folded.predict(torch.zeros(3, dtype=torch.long), torch.tensor([0, 1, 2]))
    torch.testing.assert_close(pred, model.clip(folded.score()[0, :3]))
    with pytest.raises(ValueError, match="item codes"):
        model.fold_in([ratings.n_items], [3.0])


def test_items_without_ratings_predict_the_bias_baseline(small_split) -> None:
    train = small_split.train
    dropped = train.subset(train.items != 0)  # item 0 keeps its code but loses its ratings
    model = CollaborativeFiltering(rank=4, knn_blend=None).fit(dropped, {"epochs": 3})
    assert torch.all(model.x[0] == 0) and model.item_bias[0].item() == 0.0
    users = torch.arange(5)
    expected = model.clip(model.mean + model.user_bias[:5]).detach()
    torch.testing.assert_close(model.predict(users, torch.zeros(5, dtype=torch.long)), expected)


def test_content_recovers_planted_theta_from_true_features() -> None:
    rng = np.random.default_rng(0)
    n_users, n_items, f = 150, 80, 5
    features = rng.normal(0, 1.0, (n_items, f))
    features[:, 0] = 1.0  # the notes' constant feature
    theta = rng.normal(0, 1.0, (n_users, f))
    users, items = np.nonzero(rng.random((n_users, n_items)) < 0.5)
    values = np.einsum("nf,nf->n", theta[users], features[items]) + rng.normal(0, 0.1, len(users))
    ratings = Ratings.from_arrays(users, items, values)
    model = ContentBased(item_features=features, bias=False, l2=0.01, clip=False).fit(ratings, {**CONVERGE, "epochs": 400})
    # the fitted θ is the per-user ridge solution (what the notes fit one user at a time) ...
    for u in (0, 77, 149):
        rated = items[users == u]
        A = features[rated]
        ridge = np.linalg.solve(A.T @ A + 0.01 * np.eye(f), A.T @ values[users == u])
        np.testing.assert_allclose(model.theta[u].detach().numpy(), ridge, atol=1e-3)
    # ... and recovers the planted θ up to the noise
    error = np.abs(model.theta.detach().numpy() - theta)
    assert error.mean() < 0.03 and error.max() < 0.15


def test_content_predicts_cold_start_movies_from_their_genres() -> None:
    data = synthetic(n_users=400, n_items=150, n_ratings=20_000, rank=2, factor_scale=0.2, genre_scale=1.2, seed=3)
    ratings = data.ratings
    cold = np.isin(ratings.items, np.arange(10))  # items 0..9: nobody rated them yet
    train, test = ratings.subset(~cold), ratings.subset(cold)
    content = ContentBased().fit(train)
    baseline = BiasBaseline().fit(train)
    cf = CollaborativeFiltering(rank=4).fit(train, {"epochs": 5})
    rmse = {name: evaluate(m, train, test, ranking=False)["rmse"] for name, m in
            (("content", content), ("bias", baseline), ("cf", cf))}
    assert rmse["content"] < 0.95 * rmse["bias"]
    assert rmse["cf"] == pytest.approx(rmse["bias"], rel=0.05)  # CF has nothing but biases for them


def test_ratings_from_a_dense_matrix_with_nan() -> None:
    Y = np.array([[4.0, np.nan, 2.0], [np.nan, np.nan, np.nan], [1.0, 5.0, np.nan]])
    ratings = Ratings.from_dense(Y, user_ids=["a", "b", "c"])
    assert (ratings.n_users, ratings.n_items, len(ratings)) == (3, 3, 4)  # user "b" kept without ratings
    np.testing.assert_array_equal(ratings.users, [0, 0, 2, 2])
    np.testing.assert_array_equal(ratings.items, [0, 2, 0, 1])
    np.testing.assert_array_equal(ratings.values, [4.0, 2.0, 1.0, 5.0])
    assert ratings.user_map.code("c") == 2 and list(ratings.item_map.ids) == [0, 1, 2]
    dense, mask = ratings.to_dense()
    np.testing.assert_array_equal(mask.numpy(), ~np.isnan(Y))
    with pytest.raises(ValueError, match="user ids"):
        Ratings.from_dense(Y, user_ids=["a"])
    with pytest.raises(ValueError, match="inf"):
        Ratings.from_dense([[1.0, np.inf]])


def test_item_features_builder() -> None:
    info = synthetic(n_users=20, n_items=12, n_ratings=100, seed=1).ratings.item_info
    matrix, names = item_features(info, year_width=10)
    n_decades = len(np.unique(info.years // 10))
    assert matrix.shape == (12, 18 + n_decades + 1) and len(names) == matrix.shape[1]
    np.testing.assert_array_equal(matrix[:, :18], info.genres)
    assert np.all(matrix[:, 18:-1].sum(axis=1) == 1) and np.all(matrix[:, -1] == 1)
    decade = matrix[:, 18:-1].argmax(axis=1)
    assert all(names[18 + d].startswith(f"year:{int(y // 10 * 10)}-") for d, y in zip(decade, info.years))


def test_content_refuses_features_of_the_wrong_size(small_split) -> None:
    from cfrec.errors import ConfigError

    with pytest.raises(ConfigError, match="^item_features:.*rows"):
        ContentBased(item_features=np.ones((3, 2))).fit(small_split.train)


def test_user_and_item_vectors(small_split) -> None:
    model = CollaborativeFiltering(rank=6, objective="squared").fit(small_split.train, {"epochs": 2})
    assert model.user_vectors.shape == (small_split.train.n_users, 6)
    assert model.item_vectors.shape == (small_split.train.n_items, 6)
    joint = CollaborativeFiltering(rank=6, objective={"name": "joint", "rank": 5}).fit(small_split.train, {"epochs": 1})
    assert joint.item_vectors.shape == (small_split.train.n_items, 5)  # the preference head ranks and compares
    assert CollaborativeFiltering().user_vectors is None
