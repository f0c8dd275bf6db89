"""Objectives: each loss against a brute-force sum on tiny data, and what each declares."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import cfrec
from cfrec.checkpoint import save_model
from cfrec.data import Ratings, per_user_split, synthetic
from cfrec.errors import CfrecError, ConfigError
from cfrec.models import CollaborativeFiltering, ContentBased
from cfrec.models.registry import build_model
from cfrec.objectives import NotSupported, make_objective
from cfrec.train.batches import DenseLayout, IndexLayout


@pytest.fixture(scope="module")
def tiny() -> Ratings:
    """12 users × 9 items, about half rated."""
    return synthetic(n_users=12, n_items=9, n_ratings=62, rank=2, seed=3).ratings


def prepared(ratings: Ratings, objective, **options) -> CollaborativeFiltering:
    """A model initialised for ``ratings`` with random (not zero) biases, as after some training."""
    model = CollaborativeFiltering(rank=3, objective=objective, init_scale=0.5, **options)
    model.prepare(ratings, torch.Generator().manual_seed(0), torch.device("cpu"))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "bias" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


def cells(ratings: Ratings) -> tuple[np.ndarray, np.ndarray]:
    Y = np.zeros((ratings.n_users, ratings.n_items))
    R = np.zeros_like(Y, dtype=bool)
    Y[ratings.users, ratings.items] = ratings.values
    R[ratings.users, ratings.items] = True
    return Y, R


def head_numpy(model: CollaborativeFiltering, preference: bool) -> dict[str, np.ndarray]:
    f = model.preference_factors() if preference else model.factors()
    return {name: None if t is None else t.detach().double().numpy() for name, t in
            (("theta", f.theta), ("x", f.x), ("mean", f.mean), ("bu", f.user_bias), ("bi", f.item_bias))}


def prediction(h: dict, u: int, i: int) -> float:
    value = float(h["theta"][u] @ h["x"][i])
    if h["bu"] is not None:
        value += float(h["mean"]) + h["bu"][u] + h["bi"][i]
    return value


def penalty(h: dict, l2: float, l2_bias: float) -> float:
    """λ/2 (‖Θ‖² + ‖X‖²) + λ_b/2 (‖b_u‖² + ‖b_i‖²), every row weighted 1 (α = 0)."""
    total = 0.5 * l2 * (np.sum(h["theta"] ** 2) + np.sum(h["x"] ** 2))
    if h["bu"] is not None:
        total += 0.5 * l2_bias * (np.sum(h["bu"] ** 2) + np.sum(h["bi"] ** 2))
    return total


def squared_j(h: dict, Y: np.ndarray, R: np.ndarray, l2: float, l2_bias: float) -> float:
    data = sum(0.5 * (prediction(h, u, i) - Y[u, i]) ** 2 for u, i in zip(*np.nonzero(R)))
    return data + penalty(h, l2, l2_bias)


def popularity(R: np.ndarray, exponent: float) -> np.ndarray:
    """Each movie's target factor (n_i / median n)^−γ, the median over movies with ratings."""
    counts = R.sum(axis=0)
    return (np.maximum(counts, 1) / np.median(counts[counts > 0])) ** -exponent


def weighted_j(h: dict, Y: np.ndarray, R: np.ndarray, w0: float, l2: float, l2_bias: float, binary: bool,
               exponent: float = 0.0) -> float:
    scale = popularity(R, exponent)
    data = 0.0
    for u in range(Y.shape[0]):
        for i in range(Y.shape[1]):
            target = (1.0 if binary else Y[u, i]) * scale[i] if R[u, i] else 0.0
            data += 0.5 * (1.0 if R[u, i] else w0) * (prediction(h, u, i) - target) ** 2
    return data + penalty(h, l2, l2_bias)


def full_batch_loss(model: CollaborativeFiltering, ratings: Ratings, layout: str) -> float:
    source = DenseLayout(ratings) if layout == "dense" else IndexLayout(ratings)
    batch = next(iter(model.training_batches(source, None, torch.Generator().manual_seed(0))))
    return float(model(batch).total.detach())


@pytest.mark.parametrize("layout", ["dense", "index"])
def test_squared_objective_is_the_brute_force_j(tiny: Ratings, layout: str) -> None:
    model = prepared(tiny, "squared", l2=0.7, l2_bias=0.2, l2_exponent=0.0)
    expected = squared_j(head_numpy(model, False), *cells(tiny), 0.7, 0.2)
    assert full_batch_loss(model, tiny, layout) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("exponent", [0.0, 0.3])
@pytest.mark.parametrize("target", ["rating", "binary"])
@pytest.mark.parametrize("layout", ["dense", "index"])
def test_weighted_objective_sums_every_cell(tiny: Ratings, layout: str, target: str, exponent: float) -> None:
    objective = {"name": "weighted", "w0": 0.2, "target": target, "popularity_exponent": exponent}
    model = prepared(tiny, objective, l2=0.7, l2_bias=0.2, l2_exponent=0.0)
    expected = weighted_j(head_numpy(model, False), *cells(tiny), 0.2, 0.7, 0.2, target == "binary", exponent)
    assert full_batch_loss(model, tiny, layout) == pytest.approx(expected, rel=1e-5)
    if exponent:  # the popular movies' targets shrink: J differs from the unscaled one
        assert expected != pytest.approx(weighted_j(head_numpy(model, False), *cells(tiny), 0.2, 0.7, 0.2,
                                                    target == "binary"), rel=1e-3)


@pytest.mark.parametrize("layout", ["dense", "index"])
def test_joint_objective_is_both_heads(tiny: Ratings, layout: str) -> None:
    objective = {"name": "joint", "rank": 2, "l2": 1.5, "l2_bias": 0.4, "w0": 0.25, "weight": 0.6,
                 "popularity_exponent": 0.2}
    model = prepared(tiny, objective, l2=0.7, l2_bias=0.2, l2_exponent=0.0)
    Y, R = cells(tiny)
    expected = (squared_j(head_numpy(model, False), Y, R, 0.7, 0.2)  # the rating head's targets stay the ratings
                + 0.6 * weighted_j(head_numpy(model, True), Y, R, 0.25, 1.5, 0.4, binary=False, exponent=0.2))
    assert full_batch_loss(model, tiny, layout) == pytest.approx(expected, rel=1e-5)


def prescaled(ratings: Ratings, exponent: float) -> Ratings:
    """``ratings`` with each value × its movie's popularity factor: what γ does to the targets."""
    _, R = cells(ratings)
    values = (ratings.values * popularity(R, exponent)[ratings.items]).astype(np.float32)
    return Ratings(ratings.users, ratings.items, values, ratings.user_map, ratings.item_map)


@pytest.mark.parametrize("optimizer", ["als", "adam", "sparse_adam"])
def test_popularity_exponent_trains_as_prescaled_targets(split, optimizer: str) -> None:
    """γ > 0 fits exactly the γ = 0 model of ratings × (n_i / median n)^−γ, on every optimizer path;
    a user folded in answers the same as one whose ratings were scaled the same way."""
    train = {"optimizer": optimizer, "epochs": 2, "val_fraction": 0.0, "progress": False}
    scaled = CollaborativeFiltering(rank=4, objective={"name": "weighted", "popularity_exponent": 0.4}).fit(split.train, train)
    plain = CollaborativeFiltering(rank=4, objective={"name": "weighted", "popularity_exponent": 0.0}).fit(
        prescaled(split.train, 0.4), train)
    torch.testing.assert_close(scaled.score(torch.arange(20)), plain.score(torch.arange(20)), rtol=1e-4, atol=1e-4)
    items, ratings = np.array([1, 2, 5, 40]), np.array([5.0, 3.0, 4.0, 1.0])
    factor = popularity(cells(split.train)[1], 0.4)[items]
    torch.testing.assert_close(scaled.fold_in(items, ratings).score(), plain.fold_in(items, ratings * factor).score(),
                               rtol=1e-4, atol=1e-4)


def test_target_scale_is_saved_checked_and_absent_without_exponent(split, tmp_path) -> None:
    model = CollaborativeFiltering(rank=4, objective="weighted").fit(split.train, {"epochs": 1, "progress": False})
    assert model.objective.popularity_exponent == 0.05 and model.target_scale.shape == (split.train.n_items,)
    save_model(model, split.train, tmp_path / "run", config_name="cf_weighted")
    loaded = cfrec.load(tmp_path / "run")
    torch.testing.assert_close(loaded.model.target_scale, model.target_scale)
    first, second = loaded.item_map.to_ids(np.array([3, 7])).tolist()
    torch.testing.assert_close(loaded.fold_in({first: 5.0, second: 2.0}).folded.score(),
                               model.fold_in([3, 7], [5.0, 2.0]).score())  # fold-in scales its targets after loading too
    tensors = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    tensors["model.target_scale"] = tensors["model.target_scale"][:-1]
    torch.save(tensors, tmp_path / "run" / "model.pt")
    with pytest.raises(CfrecError, match="target_scale"):
        cfrec.load(tmp_path / "run")
    plain = CollaborativeFiltering(rank=4, objective={"name": "weighted", "popularity_exponent": 0})
    assert plain.target_scale is None and "target_scale" not in plain.state_dict()


def test_a_weighted_model_saved_before_popularity_scaling_loads_as_trained(split, tmp_path) -> None:
    """model.json of a cf_weighted saved before the option existed has no popularity_exponent: it
    was trained with none, so it loads with 0 (not today's default) and scores as saved."""
    model = CollaborativeFiltering(rank=4, objective={"name": "weighted", "popularity_exponent": 0}).fit(
        split.train, {"epochs": 1, "progress": False})
    save_model(model, split.train, tmp_path, config_name="cf_weighted")
    meta = json.loads((tmp_path / "model.json").read_text())
    del meta["config"]["objective"]["popularity_exponent"]
    (tmp_path / "model.json").write_text(json.dumps(meta))
    loaded = cfrec.load(tmp_path)
    assert loaded.model.objective.popularity_exponent == 0.0 and loaded.model.target_scale is None
    torch.testing.assert_close(loaded.model.score(torch.arange(5)), model.score(torch.arange(5)))


def test_bpr_objective_is_the_brute_force_pairwise_loss(tiny: Ratings) -> None:
    model = prepared(tiny, {"name": "bpr", "negatives": 3, "candidates": 1}, l2=0.7, l2_bias=0.2, l2_exponent=0.0)
    layout = IndexLayout(tiny)
    batch = next(iter(model.training_batches(layout, None, torch.Generator().manual_seed(4))))
    h = head_numpy(model, False)
    assert batch.negatives.shape == (len(tiny), 3)
    rated_items = set(np.flatnonzero(tiny.item_counts() > 0).tolist())
    assert set(batch.negatives.flatten().tolist()) <= rated_items  # drawn among movies with ratings
    data = 0.0
    for u, i, negatives in zip(batch.users.tolist(), batch.items.tolist(), batch.negatives.tolist()):
        for j in negatives:
            d = (h["theta"][u] @ h["x"][i] + h["bi"][i]) - (h["theta"][u] @ h["x"][j] + h["bi"][j])
            data += math.log1p(math.exp(-d))  # −log σ(d)
    expected = data + penalty(h, 0.7, 0.2)
    assert float(model(batch).total.detach()) == pytest.approx(expected, rel=1e-5)
    other = next(iter(model.training_batches(layout, None, torch.Generator().manual_seed(5))))
    assert not torch.equal(other.negatives, batch.negatives)  # the generator, not a global RNG, draws them


def test_bpr_hard_negatives_are_the_highest_scored_candidates(tiny: Ratings) -> None:
    """candidates = c: each of the m negatives is the best-scored of its c draws (the layout draws m·c)."""
    model = prepared(tiny, {"name": "bpr", "negatives": 2, "candidates": 3}, l2=0.7, l2_bias=0.2, l2_exponent=0.0)
    batch = next(iter(model.training_batches(IndexLayout(tiny), None, torch.Generator().manual_seed(4))))
    assert batch.negatives.shape == (len(tiny), 6)
    h = head_numpy(model, False)

    def score(u: int, i: int) -> float:
        return float(h["theta"][u] @ h["x"][i] + h["bi"][i])

    data = 0.0
    for u, i, drawn in zip(batch.users.tolist(), batch.items.tolist(), batch.negatives.tolist()):
        for group in (drawn[:3], drawn[3:]):
            j = max(group, key=lambda c: score(u, c))
            data += math.log1p(math.exp(-(score(u, i) - score(u, j))))
    expected = data + penalty(h, 0.7, 0.2)
    assert float(model(batch).total.detach()) == pytest.approx(expected, rel=1e-5)
    assert model.objective.config() == {"name": "bpr", "negatives": 2, "candidates": 3}


def test_bpr_refuses_the_dense_layout(tiny: Ratings) -> None:
    with pytest.raises(ConfigError, match="^train.layout:.*index"):
        CollaborativeFiltering(rank=2, objective="bpr").fit(tiny, {"layout": "dense", "epochs": 1})


def test_objective_options_are_checked_and_named() -> None:
    for options, key in (({"objective": "nope"}, "model.objective.name"),
                         ({"objective": {"name": "weighted", "w0": 2}}, "model.objective.w0"),
                         ({"objective": {"name": "bpr", "negatives": 0}}, "model.objective.negatives"),
                         ({"objective": {"name": "bpr", "candidates": 1.5}}, "model.objective.candidates"),
                         ({"objective": {"name": "joint", "bogus": 1}}, "model.objective.bogus"),
                         ({"objective": {"name": "weighted", "popularity_exponent": -0.1}},
                          "model.objective.popularity_exponent"),
                         ({"objective": {"name": "joint", "popularity_exponent": 1.5}}, "model.objective.popularity_exponent")):
        with pytest.raises(ConfigError) as caught:
            build_model("cf", options)
        assert caught.value.key == key
    with pytest.raises(ConfigError, match="^objective.name: joint needs learned movie factors"):
        ContentBased(objective="joint")
    assert make_objective({"name": "weighted", "w0": 0.5}).config() == {
        "name": "weighted", "w0": 0.5, "target": "rating", "popularity_exponent": 0.05}


@pytest.fixture(scope="module")
def split():
    ratings = synthetic(n_users=150, n_items=80, n_ratings=5000, rank=3, seed=11).ratings
    return per_user_split(ratings, test_ratio=0.2, seed=2)


@pytest.mark.parametrize("objective, predicts", [("squared", True), ("joint", True), ("weighted", False), ("bpr", False)])
def test_declared_properties_and_retrieval_vectors(split, objective: str, predicts: bool) -> None:
    model = CollaborativeFiltering(rank=4, objective=objective).fit(split.train, {"epochs": 2, "progress": False})
    assert model.predicts_ratings is predicts
    # squared ranks by its rating; with a fitted KNN blend, by the factors' share of it (the blend is predict-only)
    assert model.ranks_by == ("factor_rating" if objective == "squared" else "preference")
    users, items = model.retrieval_vectors()  # inner products over the bias-augmented factors = the scores
    torch.testing.assert_close(users[:7] @ items.T, model.score(torch.arange(7)), rtol=1e-5, atol=1e-5)
    if not predicts:
        with pytest.raises(NotSupported, match="does not predict ratings"):
            model.predict(torch.tensor([0]), torch.tensor([0]))


def test_joint_folds_in_both_heads(split) -> None:
    model = CollaborativeFiltering(rank=4, objective={"name": "joint", "rank": 3}).fit(
        split.train, {"epochs": 2, "progress": False})
    folded = model.fold_in([1, 2, 5], [5.0, 3.0, 4.0])
    assert folded.rating[0].shape == (1, 4) and folded.ranking[0].shape == (1, 3)
    rating = model.predict_vectors(folded.rating[0], folded.rating[1], torch.tensor([7]))
    assert torch.allclose(folded.predict(torch.tensor([0]), torch.tensor([7])), rating)
    top, _ = folded.recommend(k=5)
    assert not {1, 2, 5} & set(top[0].tolist())
    with pytest.raises(NotSupported, match="cannot fold in"):
        CollaborativeFiltering(rank=2, objective="bpr").fit(split.train, {"epochs": 1}).fold_in([1], [4.0])


@pytest.mark.parametrize("optimizer", ["adamw", "sparse_adam", "als"])
def test_joint_preference_head_trains_packed_and_saves_its_four_tensors(split, optimizer: str) -> None:
    """The preference head trains as two augmented tables whose ones and zero padding stay fixed
    (adamw's weight decay included); its state dict names φ, z and the biases, `load_state_dict`
    packs them back in place, and `load_state` into a model that scores and predicts the same."""
    options = {"epochs": 2, "progress": False, "optimizer": optimizer}
    if optimizer == "adamw":
        options["weight_decay"] = 0.5
    model = CollaborativeFiltering(rank=4, objective={"name": "joint", "rank": 5}).fit(split.train, options)
    users, items = model.pref_users.detach(), model.pref_items.detach()
    assert users.shape == (split.train.n_users, 8) and items.shape == (split.train.n_items, 8)
    assert bool((users[:, 6] == 1).all() and (items[:, 5] == 1).all())
    assert not users[:, 7:].any() and not items[:, 7:].any()
    assert users[:, 5].abs().sum() > 0 and items[:, 6].abs().sum() > 0  # the biases trained
    f = model.preference_factors()
    assert f.theta.data_ptr() == users.data_ptr() and f.augmented(align=8)[1] is model.pref_items

    state = model.state()
    head = {"pref_theta", "pref_x", "pref_user_bias", "pref_item_bias"}
    assert head <= set(state) and head <= set(model.state_dict())
    assert not {"pref_users", "pref_items"} & (set(state) | set(model.state_dict()))
    before = model.pref_users
    model.pref_users.data.zero_()
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith("knn.")})  # in place, into the packed tables: the optimizer's parameters stay
    assert model.pref_users is before and bool((model.pref_users[:, 6] == 1).all())
    torch.testing.assert_close(model.pref_users.detach(), users)
    torch.testing.assert_close(state["pref_user_bias"], users[:, 5])
    loaded = CollaborativeFiltering(rank=4, objective={"name": "joint", "rank": 5}).load_state(state)
    loaded.restore_shape(model.shape_meta())
    codes = torch.arange(6)
    torch.testing.assert_close(loaded.score(codes), model.score(codes))
    torch.testing.assert_close(loaded.predict(codes, codes), model.predict(codes, codes))

    state["pref_theta"] = state["pref_theta"][:, :3]
    with pytest.raises(ValueError, match=r"pref_theta \(\d+, 3\).*objective.rank = 5"):
        CollaborativeFiltering(rank=4, objective={"name": "joint", "rank": 5}).load_state(state)


def test_unbiased_model_falls_back_to_its_global_mean(split, tmp_path) -> None:
    model = CollaborativeFiltering(rank=3, bias=False, objective="squared").fit(split.train, {"epochs": 2, "val_fraction": 0})
    save_model(model, split.train, tmp_path)
    loaded = cfrec.load(tmp_path, unknown="fallback")
    movie = int(split.train.item_map.ids[0])
    value = loaded.predict(999_999, movie)
    assert value == pytest.approx(float(np.mean(split.train.values)), rel=1e-6)  # not 1.0, the scale's floor


def test_ranking_model_checkpoint_names_its_preset_and_refuses_ratings(split, tmp_path) -> None:
    model = CollaborativeFiltering(rank=3, objective="weighted").fit(split.train, {"epochs": 1})
    save_model(model, split.train, tmp_path, config_name="cf_weighted")
    meta = json.loads((tmp_path / "model.json").read_text())
    assert (meta["model"], meta["class"], meta["predicts_ratings"], meta["ranks_by"]) == (
        "cf_weighted", "cf", False, "preference")
    loaded = cfrec.load(tmp_path)
    user, movie = split.train.user_map.ids[0], split.train.item_map.ids[0]
    with pytest.raises(CfrecError, match="does not predict ratings"):
        loaded.predict(user, movie)
    assert len(loaded.recommend(user, k=5)) == 5
