"""UserKNN / ItemKNN: the model contract, brute-force agreement in both modes, SVD, options, errors."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from contract import ModelContract

from cfrec.checkpoint import load_model, save_model
from cfrec.data import Ratings, Split
from cfrec.errors import CheckpointError, ConfigError
from cfrec.models import GlobalMean, ItemKNN, UserKNN
from cfrec.models import knn as knn_module
from cfrec.models.baseline import fit_biases
from cfrec.models.neighbors import rating_neighbors
from cfrec.models.svd import randomized_svd, svd_embeddings

SMALL = {"k": 15, "dim": 12}


class TestUserKNN(ModelContract):
    def make_model(self):
        return UserKNN(**SMALL, ranking="prediction")


class TestItemKNN(ModelContract):
    def make_model(self):
        return ItemKNN(**SMALL, ranking="prediction")


class TestUserKNNReference(ModelContract):
    score_is_prediction = False  # neighbour aggregation
    clips_to_scale = False  # 0.0 where no neighbour rated the item

    def make_model(self):
        return UserKNN(**SMALL, mode="reference")


class TestItemKNNReference(TestUserKNNReference):
    def make_model(self):
        return ItemKNN(**SMALL, mode="reference")


class TestUserKNNHNSW(ModelContract):
    score_is_prediction = False

    def make_model(self):
        return UserKNN(**SMALL, neighbors="hnsw", similarity="vectors", candidates=40)


# -- brute force --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def holey_train(small_split: Split) -> Ratings:
    """The small train set without any rating of user 7 or item 5 (both still in the id maps)."""
    train = small_split.train
    return train.subset((train.users != 7) & (train.items != 5))


def brute_force(train: Ratings, vectors: np.ndarray, entity: str, k: int, mode: str, pairs, shrinkage: float = 0.0,
                amplification: float = 1.0):
    """One pair at a time, straight from the formulas in `cfrec.models.knn` (vector similarity;
    improved mode with every list long enough to hold all candidates)."""
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    counts = train.user_counts() if entity == "user" else train.item_counts()
    active = np.flatnonzero((counts > 0) & (np.abs(vectors).sum(1) > 0))
    sims = unit @ unit.T
    if mode == "reference":
        return brute_force_reference(train, sims, active, entity, k, pairs)
    return brute_force_improved(train, sims, active, entity, k, pairs, shrinkage=shrinkage, amplification=amplification,
                                min_similarity=0.0)


def brute_force_reference(train, sims, active, entity, k, pairs):
    """The notebook's formula: the k most similar overall, those who rated the item."""
    ratings, rated = train.to_csr().toarray(), train.to_csr().astype(bool).toarray()
    out = []
    for u, i in pairs:
        own = u if entity == "user" else i
        num = den = 0.0
        if own in active:
            candidates = np.array([c for c in active if c != own])
            s = sims[own, candidates]
            for pos in np.argsort(-s, kind="stable")[:k]:
                v = candidates[pos]
                cell = (v, i) if entity == "user" else (u, v)
                if rated[cell]:
                    num, den = num + s[pos] * ratings[cell], den + s[pos]
        out.append(num / den if den else 0.0)
    return np.array(out)


def brute_force_improved(train, sims, active, entity, k, pairs, *, shrinkage=0.0, amplification=1.5,
                         min_similarity=0.0, min_support=1, candidates=None, clip=True):
    """LensKit's formula: among the ``candidates`` most similar (all when None) with s >
    ``min_similarity``, the k most similar that rated the item; baseline residuals, |s|^ρ weights."""
    ratings, rated = train.to_csr().toarray(), train.to_csr().astype(bool).toarray()
    mean, b_user, b_item = fit_biases(train, 15.0, 10.0, 10)
    lo, hi = train.scale or (train.values.min(), train.values.max())
    out = []
    for u, i in pairs:
        own = u if entity == "user" else i
        num = den = 0.0
        used = 0
        if own in active:
            others = np.array([c for c in active if c != own])
            s = sims[own, others]
            order = np.argsort(-s, kind="stable")[: candidates or len(others)]
            for pos in order:
                v, sim = others[pos], s[pos]
                cell = (v, i) if entity == "user" else (u, v)
                if sim <= min_similarity or not rated[cell] or used == k:
                    continue
                w = np.sign(sim) * abs(sim) ** amplification
                num += w * (ratings[cell] - mean - b_user[cell[0]] - b_item[cell[1]])
                den += abs(w)
                used += 1
        pred = mean + b_user[u] + b_item[i]
        if used >= min_support and den + shrinkage > 0:
            pred += num / (den + shrinkage)
        out.append(float(np.clip(pred, lo, hi)) if clip else pred)
    return np.array(out)


def rating_similarities(train: Ratings, entity: str, support_shrinkage: float) -> tuple[np.ndarray, np.ndarray]:
    """(n, n) cosine of baseline-residual rows, shrunk by co-support, and the rows with ratings."""
    dense, rated = train.to_csr().toarray(), train.to_csr().astype(bool).toarray()
    mean, b_user, b_item = fit_biases(train, 15.0, 10.0, 10)
    resid = np.where(rated, dense - mean - b_user[:, None] - b_item[None, :], 0.0)
    if entity == "item":
        resid, rated = resid.T, rated.T
    norms = np.linalg.norm(resid, axis=1)
    sims = resid @ resid.T / np.maximum(np.outer(norms, norms), 1e-300)
    common = rated.astype(float) @ rated.T.astype(float)
    if support_shrinkage:
        sims = sims * common / (common + support_shrinkage)
    return sims, np.flatnonzero(norms > 0)


def pairs_of(split: Split, extra=((7, 3), (2, 5), (7, 5))) -> tuple[torch.Tensor, torch.Tensor]:
    extra = np.array(extra, dtype=np.int64).reshape(-1, 2)
    users = np.r_[split.test.users[:150], extra[:, 0]]
    items = np.r_[split.test.items[:150], extra[:, 1]]
    return torch.as_tensor(users), torch.as_tensor(items)


@pytest.mark.parametrize("model_cls", [UserKNN, ItemKNN])
@pytest.mark.parametrize("mode", ["reference", "improved"])
def test_vector_predictions_match_a_brute_force_loop(model_cls, mode, holey_train, small_split):
    """Reference mode (the notebook's formula, unchanged) and the improved formula on SVD vectors."""
    model = model_cls(**SMALL, mode=mode, similarity="vectors", candidates=400, amplification=1.0).fit(holey_train)
    users, items = pairs_of(small_split)
    vectors = (model.user_vectors if model.entity == "user" else model.item_vectors).numpy()
    expected = brute_force(holey_train, vectors, model.entity, SMALL["k"], mode, zip(users.tolist(), items.tolist()))
    np.testing.assert_allclose(model.predict(users, items).numpy(), expected, rtol=1e-5, atol=1e-5)
    if mode == "reference":  # user 7 / item 5 have no train ratings: no neighbours, 0.0
        assert model.predict(torch.tensor([7, 2]), torch.tensor([3, 5])).tolist() == [0.0, 0.0]


IMPROVED_CASES = [
    {},  # the defaults: k among raters, amplification 1.5, support shrinkage 50
    {"k": 3, "min_similarity": 0.05, "shrinkage": 0.5, "amplification": 1.0, "support_shrinkage": 0.0},
    {"k": 5, "candidates": 20, "min_support": 3, "amplification": 2.0, "support_shrinkage": 10.0},
]


@pytest.mark.parametrize("model_cls", [UserKNN, ItemKNN])
@pytest.mark.parametrize("options", IMPROVED_CASES)
def test_improved_predictions_match_a_brute_force_loop(model_cls, options, holey_train, small_split):
    """Neighbours among those who rated the item, the similarity floor, the top-candidates list,
    min_support's fallback and the users/items without ratings (baseline), against a per-pair loop."""
    model = model_cls(dim=12, **options).fit(holey_train)
    sims, active = rating_similarities(holey_train, model.entity, model.support_shrinkage)
    users, items = pairs_of(small_split)
    expected = brute_force_improved(
        holey_train, sims, active, model.entity, model._k, zip(users.tolist(), items.tolist()),
        shrinkage=model.shrinkage, amplification=model.amplification, min_similarity=model.min_similarity,
        min_support=model.min_support, candidates=options.get("candidates"))
    np.testing.assert_allclose(model.predict(users, items).numpy(), expected, rtol=1e-5, atol=1e-5)
    mean, b_user, b_item = fit_biases(holey_train, 15.0, 10.0, 10)  # no ratings: the baseline
    torch.testing.assert_close(model.predict(torch.tensor([7, 2]), torch.tensor([3, 5])),
                               torch.tensor([mean + b_user[7] + b_item[3], mean + b_user[2] + b_item[5]]).float().clamp(1, 5))


@pytest.mark.parametrize("model_cls", [UserKNN, ItemKNN])
def test_improved_aggregate_score_sums_over_raw_cosine_neighbours(model_cls, holey_train, monkeypatch):
    monkeypatch.setattr(knn_module, "RANKING_NEIGHBORS", 12)
    model = model_cls(dim=12).fit(holey_train)
    dense = holey_train.to_csr().toarray()
    rows = dense if model.entity == "user" else dense.T
    unit = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    cos = unit @ unit.T
    np.fill_diagonal(cos, -np.inf)
    users = [0, 3, 7]
    scores = model.score(torch.tensor(users)).numpy()
    for row, u in enumerate(users):
        expected = np.zeros(holey_train.n_items)
        for i in range(holey_train.n_items):
            own = u if model.entity == "user" else i
            top = [j for j in np.argsort(-cos[own], kind="stable")[:12] if cos[own, j] > 0]
            cells = dense[top, i] if model.entity == "user" else dense[u, top]
            expected[i] = (cos[own, top] * cells).sum()
        np.testing.assert_allclose(scores[row], expected, rtol=1e-5, atol=1e-5)


def test_improved_prediction_ranking_is_the_unclipped_prediction(holey_train):
    model = ItemKNN(dim=12, ranking="prediction").fit(holey_train)
    sims, active = rating_similarities(holey_train, "item", model.support_shrinkage)
    expected = brute_force_improved(holey_train, sims, active, "item", model._k,
                                    [(2, i) for i in range(holey_train.n_items)], clip=False)
    np.testing.assert_allclose(model.score(torch.tensor([2]))[0].numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model_cls", [UserKNN, ItemKNN])
def test_aggregate_score_is_the_notebooks_neighbour_sum(model_cls, holey_train):
    model = model_cls(**SMALL, mode="reference").fit(holey_train)
    ratings = holey_train.to_csr().toarray()
    unit = (model.user_vectors if model.entity == "user" else model.item_vectors).numpy()
    counts = holey_train.user_counts() if model.entity == "user" else holey_train.item_counts()
    users = [0, 3, 7]
    scores = model.score(torch.tensor(users)).numpy()
    for row, u in enumerate(users):
        expected = np.zeros(holey_train.n_items)
        for i in range(holey_train.n_items):
            own = u if model.entity == "user" else i
            if counts[own] == 0:
                continue
            candidates = np.array([c for c in np.flatnonzero(counts > 0) if c != own])
            sims = unit[candidates] @ unit[own]
            top = np.argsort(-sims, kind="stable")[: SMALL["k"]]
            cells = ratings[candidates[top], i] if model.entity == "user" else ratings[u, candidates[top]]
            expected[i] = (sims[top] * cells).sum()
        np.testing.assert_allclose(scores[row], expected, rtol=1e-5, atol=1e-5)
    improved = model_cls(**SMALL, similarity="vectors", candidates=40).fit(holey_train)  # same lists' first k
    torch.testing.assert_close(improved.score(torch.tensor(users)), model.score(torch.tensor(users)))


@pytest.mark.parametrize("model_cls", [UserKNN, ItemKNN])
def test_reference_prediction_ranking_is_the_unclipped_prediction(model_cls, holey_train):
    model = model_cls(**SMALL, mode="reference", ranking="prediction").fit(holey_train)
    scores = model.score(torch.tensor([2, 7]))
    items = torch.arange(holey_train.n_items)
    for row, user in enumerate([2, 7]):
        torch.testing.assert_close(scores[row], model.predict(torch.full_like(items, user), items))


def test_improvements_help_on_planted_data(small_split):
    test = small_split.test
    users, items, truth = test.to_tensors()
    rmse = {}
    for mode in ("reference", "improved"):
        pred = UserKNN(**SMALL, mode=mode).fit(small_split.train).predict(users, items)
        rmse[mode] = float(((pred - truth) ** 2).mean().sqrt())
    assert rmse["improved"] < rmse["reference"] - 0.05


# -- options ------------------------------------------------------------------------------------
def test_sparse_lookups_and_small_chunks_agree_with_the_dense_path(small_split, monkeypatch):
    users, items = pairs_of(small_split)
    dense = ItemKNN(**SMALL).fit(small_split.train).predict(users, items)
    monkeypatch.setattr(knn_module, "PAIRS_PER_CHUNK", 64)
    sparse = ItemKNN(**SMALL, dense_mb=0).fit(small_split.train)
    assert sparse._table.dense is None
    torch.testing.assert_close(sparse.predict(users, items), dense)
    order = torch.randperm(len(users), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(sparse.predict(users[order], items[order]), dense[order])


@pytest.mark.parametrize("model_cls", [UserKNN, ItemKNN])
@pytest.mark.parametrize("mode", ["reference", "improved"])
@pytest.mark.parametrize("block_mb", [64.0, 0.0])  # 0: no block, the binary search reads every cell
def test_every_model_and_mode_predicts_alike_from_the_sparse_table(small_split, monkeypatch, model_cls, mode, block_mb):
    from cfrec.models import rating_table
    users, items = pairs_of(small_split)
    dense = model_cls(**SMALL, mode=mode).fit(small_split.train).predict(users, items)
    monkeypatch.setattr(rating_table, "BLOCK_MB", block_mb)
    sparse = model_cls(**SMALL, mode=mode, dense_mb=0).fit(small_split.train)
    assert sparse._table.dense is None
    torch.testing.assert_close(sparse.predict(users, items), dense)


def test_sparse_lookups_in_blocks_of_a_few_rows_agree_with_the_dense_path(small_split, monkeypatch):
    from cfrec.models import rating_table
    users, items = pairs_of(small_split)
    dense = ItemKNN(**SMALL).fit(small_split.train).predict(users, items)
    sparse = ItemKNN(**SMALL, dense_mb=0).fit(small_split.train)
    monkeypatch.setattr(rating_table, "BLOCK_MB", 3 * sparse._table.width * 4 / 2**20)  # 3 rows a block
    assert sparse._table.rows_per_lookup == 3
    torch.testing.assert_close(sparse.predict(users, items), dense)


@pytest.mark.parametrize(("step", "rows_per_chunk"), [(4, 2), (100, 1), (3, None), (1, 5)])
def test_chunk_bounds_respect_both_limits_and_cover_every_pair(step, rows_per_chunk):
    rows = torch.as_tensor(np.sort(np.random.default_rng(0).integers(0, 9, size=40)))
    bounds = knn_module.chunk_bounds(rows, step, rows_per_chunk)
    assert bounds[0] == 0 and bounds[-1] == 40 and all(a < b for a, b in itertools.pairwise(bounds))
    for a, b in itertools.pairwise(bounds):
        assert b - a <= step
        if rows_per_chunk is not None:
            assert len(set(rows[a:b].tolist())) <= rows_per_chunk
            if b < 40:  # greedy: the next pair would break a limit
                assert b - a == step or len(set(rows[a:b + 1].tolist())) > rows_per_chunk


@pytest.mark.parametrize(("step", "rows_per_chunk"), [(0, 2), (4, 0)])
def test_chunk_bounds_refuse_empty_chunks(step, rows_per_chunk):
    with pytest.raises(ValueError, match="step >= 1 and rows_per_chunk >= 1"):
        knn_module.chunk_bounds(torch.zeros(3, dtype=torch.long), step, rows_per_chunk)


def test_hnsw_neighbours_match_exact_ones(small_split):
    exact = UserKNN(**SMALL, mode="reference").fit(small_split.train).state()["neighbors"]
    approx = UserKNN(**SMALL, mode="reference", neighbors="hnsw", hnsw="notebook").fit(small_split.train).state()["neighbors"]
    overlap = np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(exact.tolist(), approx.tolist())])
    assert overlap >= 0.99


def test_more_neighbours_than_users_is_a_config_error(small_split):
    with pytest.raises(ConfigError, match="k: asks for 400 neighbours, but only 300 users"):
        UserKNN(k=400, dim=12).fit(small_split.train)
    with pytest.raises(ConfigError, match="k: asks for 300 neighbours"):
        ItemKNN(k=300, dim=12).fit(small_split.train)


def test_hnsw_beam_narrower_than_k_is_refused():
    with pytest.raises(ConfigError, match="hnsw: ef=20 is below k=50"):
        UserKNN(k=50, mode="reference", neighbors="hnsw", hnsw={"ef": 20})
    with pytest.raises(ConfigError, match="hnsw: ef=20 is below candidates=300"):
        UserKNN(similarity="vectors", neighbors="hnsw", hnsw={"ef": 20})
    with pytest.raises(ConfigError, match="^neighbors: hnsw searches vectors"):
        UserKNN(neighbors="hnsw")  # similarity=ratings is an exact sparse search


def test_knn_over_given_embeddings(small_split):
    rng = np.random.default_rng(3)
    train = small_split.train
    user_vecs, item_vecs = rng.normal(size=(train.n_users, 6)), rng.normal(size=(train.n_items, 6))
    options = {**SMALL, "similarity": "vectors", "candidates": 300, "amplification": 1.0}
    model = ItemKNN(**options, embeddings=(user_vecs, item_vecs)).fit(train)
    users, items = pairs_of(small_split, extra=())
    expected = brute_force(train, item_vecs, "item", SMALL["k"], "improved", zip(users.tolist(), items.tolist()))
    np.testing.assert_allclose(model.predict(users, items).numpy(), expected, rtol=1e-5, atol=1e-5)
    from_model = ItemKNN(**options, embeddings=model).fit(train)  # any fitted model with vectors
    torch.testing.assert_close(from_model.predict(users, items), model.predict(users, items))
    assert "embeddings" not in model.config()
    with pytest.raises(ConfigError, match="^similarity: embeddings are given"):
        ItemKNN(embeddings=(user_vecs, item_vecs))


def test_config_is_plain_json_and_rebuilds(small_split):
    model = UserKNN(k=7, mode="reference", hnsw={"M": 8}, neighbors="hnsw")
    config = json.loads(json.dumps(model.config()))
    assert UserKNN(**config).config() == model.config()
    assert config["hnsw"] == {"M": 8} and config["k"] == 7


# -- SVD ----------------------------------------------------------------------------------------
def test_randomized_svd_recovers_the_leading_spectrum():
    rng = np.random.default_rng(0)
    low_rank = rng.normal(size=(80, 6)) @ np.diag([50, 40, 30, 20, 10, 5]) @ rng.normal(size=(6, 50))
    matrix = sp.csr_matrix(low_rank + 0.01 * rng.normal(size=(80, 50)))
    u, s, vt = randomized_svd(matrix, 6, seed=1)
    np.testing.assert_allclose(s, np.linalg.svd(matrix.toarray(), compute_uv=False)[:6], rtol=1e-6)
    np.testing.assert_allclose(u.T @ u, np.eye(6), atol=1e-8)
    np.testing.assert_allclose((u * s) @ vt, matrix.toarray(), atol=0.1)
    again = randomized_svd(matrix, 6, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip((u, s, vt), again))
    wide = randomized_svd(matrix.T.tocsr(), 6, seed=1)[1]  # transposed internally, same values
    np.testing.assert_allclose(wide, s, rtol=1e-6)


def test_full_rank_svd_vectors_keep_the_cosines_of_the_rating_rows(holey_train):
    """With every component, A·V is a rotation of A's rows (and Aᵀ·U of its columns)."""
    users, items = np.flatnonzero(holey_train.user_counts()), np.flatnonzero(holey_train.item_counts())
    user_vecs, item_vecs = svd_embeddings(holey_train, dim=len(items), seed=0)
    dense = holey_train.to_csr().toarray()

    def cosines(x):
        unit = x / np.linalg.norm(x, axis=1, keepdims=True)
        return unit @ unit.T

    np.testing.assert_allclose(cosines(user_vecs[users]), cosines(dense[users]), atol=1e-4)
    np.testing.assert_allclose(cosines(item_vecs[items]), cosines(dense.T[items]), atol=1e-4)
    assert not user_vecs[7].any() and not item_vecs[5].any()  # no train ratings: zero vectors


# -- errors -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"k": 0}, "k"), ({"k": 2.0}, "k"), ({"dim": 0}, "dim"), ({"neighbors": "annoy"}, "neighbors"),
     ({"mode": "notebook"}, "mode"), ({"shrinkage": -1.0}, "shrinkage"), ({"min_support": 0}, "min_support"),
     ({"similarity": "pearson"}, "similarity"), ({"candidates": 0}, "candidates"),
     ({"min_similarity": -2.0}, "min_similarity"), ({"support_shrinkage": -1}, "support_shrinkage"),
     ({"amplification": -0.5}, "amplification"),
     ({"ranking": "score"}, "ranking"), ({"hnsw": "fast"}, "hnsw"), ({"hnsw": {"M": 1}}, "hnsw"),
     ({"hnsw": {"m": 16}}, "hnsw"), ({"seed": -2}, "seed"), ({"dense_mb": -1}, "dense_mb"),
     ({"device": "gpu0"}, "device")],
)
def test_bad_arguments_are_named(kwargs, key):
    with pytest.raises(ConfigError, match=f"^{key}:"):
        UserKNN(**kwargs)


def test_bad_embeddings_and_dim_are_named(small_split):
    train = small_split.train
    with pytest.raises(ConfigError, match="^embeddings:.*3 user vectors"):
        UserKNN(mode="reference", embeddings=(np.ones((3, 4)), np.ones((train.n_items, 4)))).fit(train)
    with pytest.raises(ConfigError, match="^embeddings:.*GlobalMean"):
        UserKNN(mode="reference", embeddings=GlobalMean().fit(train)).fit(train)
    with pytest.raises(ConfigError, match="^dim: asks for 500 SVD components of a .* rating matrix"):
        UserKNN(dim=500, mode="reference").fit(train)


def test_incomplete_state_is_refused(small_split):
    state = UserKNN(**SMALL).fit(small_split.train).state()
    del state["rating_values"]
    with pytest.raises(CheckpointError, match="lacks rating_values"):
        UserKNN(**SMALL).load_state(state)


# -- neighbour build, state, checkpoints --------------------------------------------------------
@pytest.mark.parametrize("workers", [1, 3])  # blocks one by one, or computed ahead on threads
@pytest.mark.parametrize("dense_share", [np.inf, 0.125, 0.0])  # all sparse; mixed; every column dense (up to the block)
def test_rating_neighbors_in_small_blocks_match_dense_cosines(monkeypatch, dense_share, workers):
    from cfrec.models import neighbors as neighbors_module

    monkeypatch.setattr(neighbors_module, "DENSE_COLUMN_SHARE", dense_share)
    rng = np.random.default_rng(5)
    dense = np.where(rng.random((40, 25)) < np.linspace(0.05, 0.9, 25), rng.normal(size=(40, 25)), 0.0)
    dense[3] = 0.0  # an empty row: no neighbours, nobody's neighbour
    rows = sp.csr_matrix(dense)
    neighbors, sims = rating_neighbors(rows, 8, min_similarity=0.1, support_shrinkage=2.0, block_mb=0.0005, workers=workers)
    norms = np.linalg.norm(dense, axis=1)
    cos = dense @ dense.T / np.maximum(np.outer(norms, norms), 1e-300)
    common = (dense != 0).astype(float) @ (dense != 0).T.astype(float)
    cos = cos * common / (common + 2.0)
    np.fill_diagonal(cos, -np.inf)
    for row in range(40):
        order = [j for j in np.argsort(-cos[row], kind="stable")[:8] if cos[row, j] > 0.1]
        got = [j for j in neighbors[row].tolist() if j >= 0]
        np.testing.assert_allclose(sims[row, : len(got)].numpy(), cos[row, order], rtol=1e-5, atol=1e-6)
        assert got == order or np.allclose(cos[row, got], cos[row, order])  # ties may swap
        assert 3 not in got
    assert (neighbors[3] == -1).all()


def state_bytes(state: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


@pytest.mark.parametrize("model_cls", [UserKNN, ItemKNN])
@pytest.mark.parametrize("mode", ["improved", "reference"])
def test_state_is_cpu_sparse_and_loads_where_asked(model_cls, mode, small_split, tmp_path):
    """No dense users × items (or n × n) matrix is stored; the state is on the CPU; a model whose
    config names cuda loads on the CPU when asked (load_state's device, load_model's device)."""
    train = small_split.train
    model = model_cls(k=15, dim=12, mode=mode).fit(train)
    state = model.state()
    assert all(t.device.type == "cpu" for t in state.values())
    n_own = train.n_users if model.entity == "user" else train.n_items
    width = 15 if mode == "reference" else min(model.candidates, n_own - 1)  # improved: every candidate
    lists = n_own * width * 8  # int32 ids + float32 similarities
    assert state_bytes(state) <= 6 * len(train) + lists + 12 * (train.n_users + train.n_items + 2)  # 6 B a rating
    users, items = torch.as_tensor(small_split.test.users), torch.as_tensor(small_split.test.items)
    rebuilt = model_cls(**{**model.config(), "device": "cuda"})  # as if trained on a GPU
    rebuilt.restore_shape(model.shape_meta())
    rebuilt.load_state(state, device="cpu")
    assert rebuilt.device.type == "cpu" and rebuilt.config()["device"] == "cpu"
    torch.testing.assert_close(rebuilt.predict(users, items), model.predict(users, items))
    save_model(model, train, tmp_path)
    meta_path = tmp_path / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["config"]["device"] = "cuda"
    meta_path.write_text(json.dumps(meta))
    loaded = load_model(tmp_path, device="cpu").model
    assert loaded.device.type == "cpu"
    torch.testing.assert_close(loaded.predict(users, items), model.predict(users, items))
    torch.testing.assert_close(loaded.score(torch.arange(5)), model.score(torch.arange(5)))
    torch.testing.assert_close(loaded.item_vectors, model.item_vectors)  # SVD recomputed, same seed
    pt_bytes = (tmp_path / "model.pt").stat().st_size
    assert pt_bytes <= state_bytes(state) + 8 * (len(train) + train.n_users) + 64 * 1024  # + the checkpoint's seen CSR


def test_half_precision_ratings_only_when_exact():
    assert knn_module._compact_values(np.array([1.0, 4.5, 5.0], np.float32)).dtype == torch.float16
    assert knn_module._compact_values(np.array([1.0, 3.3], np.float32)).dtype == torch.float32


def test_a_checkpoint_state_of_the_earlier_layout_still_loads(holey_train, small_split):
    """COO ratings, float vectors and k-long lists (before the CSR layout): the reference model
    predicts the same, an old improved model keeps its formula (every rater in the k list)."""
    reference = UserKNN(k=15, dim=12, mode="reference").fit(holey_train)
    new = reference.state()
    old = {"neighbors": new["neighbors"].long(), "similarities": new["similarities"],
           "users": torch.as_tensor(holey_train.users), "items": torch.as_tensor(holey_train.items),
           "values": torch.as_tensor(holey_train.values, dtype=torch.float32), "mean": new["mean"],
           "user_bias": new["user_bias"], "item_bias": new["item_bias"],
           "user_vectors": reference.user_vectors, "item_vectors": reference.item_vectors}
    users, items = pairs_of(small_split)
    again = UserKNN(k=15, dim=12, mode="reference")
    again.restore_shape(reference.shape_meta())
    torch.testing.assert_close(again.load_state(dict(old)).predict(users, items), reference.predict(users, items))
    improved = UserKNN(k=15, dim=12, shrinkage=2.0)  # an old improved run's config
    improved.restore_shape(reference.shape_meta())
    improved.load_state(dict(old))
    unit = reference.user_vectors.numpy()
    counts = holey_train.user_counts()
    expected = brute_force_improved(holey_train, unit @ unit.T, np.flatnonzero(counts > 0), "user", 15,
                                    zip(users.tolist(), items.tolist()), shrinkage=2.0, amplification=1.0,
                                    min_similarity=-1.0, candidates=15)
    np.testing.assert_allclose(improved.predict(users, items).numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model_cls", [UserKNN, ItemKNN])
def test_pairs_with_an_unknown_id_get_the_baseline_of_what_is_known(small_split, model_cls):
    model = model_cls(**SMALL).fit(small_split.train)
    state = model.state()
    mean, b_u, b_i = float(state["mean"]), state["user_bias"].numpy(), state["item_bias"].numpy()
    users, items = np.array([3, -1, -1, 0]), np.array([-1, 5, -1, 2])
    want = np.array([mean + b_u[3], mean + b_i[5], mean, mean + b_u[0] + b_i[2]], dtype=np.float32)
    np.testing.assert_allclose(model.fallback_predict(users, items), np.clip(want, 1, 5), rtol=1e-6)
    assert len(set(model.fallback_predict(users, items).round(5).tolist())) > 1  # not one global mean
