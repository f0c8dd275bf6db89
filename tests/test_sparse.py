"""Row-sparse steps (train.optimizer=sparse_adam): the same J and gradient as the dense closed form,
Gramians kept exact, a row-wise Adam that touches only the batch's rows, and the trainer's contract."""

from __future__ import annotations

import pytest
import torch

from cfrec.data import Ratings, Split, synthetic
from cfrec.errors import ConfigError
from cfrec.models import CollaborativeFiltering, ContentBased
from cfrec.models.losses import full_rows
from cfrec.train import TrainConfig
from cfrec.train.batches import IndexLayout
from cfrec.train.sparse import Gramians, RowAdam, batch_rows, pair_dots, table_rows

OBJECTIVES = [
    "squared",
    {"name": "weighted", "w0": 0.2, "target": "rating"},
    {"name": "weighted", "w0": 0.3, "target": "binary"},
    {"name": "joint", "rank": 2, "l2": 1.5, "l2_bias": 0.4, "w0": 0.25, "weight": 0.6},
]


@pytest.fixture(scope="module")
def holed() -> Ratings:
    """14 users × 10 items; user 0 and item 0 have no rating (rows only the all-cells term reaches)."""
    ratings = synthetic(n_users=14, n_items=10, n_ratings=80, rank=2, seed=5).ratings
    return ratings.subset((ratings.users != 0) & (ratings.items != 0))


def prepared(ratings: Ratings, objective) -> CollaborativeFiltering:
    """A model for ``ratings`` with random parameters everywhere (orphan rows and biases included)."""
    model = CollaborativeFiltering(rank=3, objective=objective, init_scale=0.5, l2=0.7, l2_bias=0.2, l2_exponent=0.5)
    model.prepare(ratings, torch.Generator().manual_seed(0), torch.device("cpu"))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.4)
        if model.objective.name != "weighted":  # a squared head's rows without ratings sit at their optimum 0
            for p in (model.theta, model.x, model.user_bias, model.item_bias):
                p[0] = 0.0
    model.after_step()  # a packed preference head's ones and zero padding, as training keeps them
    return model


def loss_and_grads(model, batches) -> tuple[float, dict[str, torch.Tensor]]:
    """Σ over ``batches`` of J's terms and of their gradients, the parameters held fixed."""
    total, grads = 0.0, {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for batch in batches:
        model.zero_grad(set_to_none=True)
        terms = model(batch)
        terms.total.backward()
        total += float(terms.total.detach())
        for name, p in model.named_parameters():
            if p.grad is not None:
                grads[name] += p.grad.to_dense()
    return total, grads


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_an_epoch_of_sparse_batches_is_j_and_its_gradient(holed: Ratings, objective) -> None:
    """At fixed parameters the sparse batches of an epoch add up to the full-batch J (checked against
    brute force in test_objectives) and to its gradient, every row included, orphans too."""
    model = prepared(holed, objective)
    layout = IndexLayout(holed)
    full = next(iter(model.training_batches(layout, None, torch.Generator())))
    expected, expected_grads = loss_and_grads(model, [full])
    model.use_sparse_steps(holed, torch.device("cpu"))
    batches = list(model.training_batches(layout, 9, torch.Generator().manual_seed(2)))
    assert len(batches) > 5
    total, grads = loss_and_grads(model, batches)
    assert total == pytest.approx(expected, rel=1e-5)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-4, atol=1e-5, msg=name)
    if objective != "squared":  # the all-cells term reaches the rows without a rating
        assert grads["pref_items" if "pref_items" in grads else "x"][0].abs().sum() > 0


def test_sparse_gradients_name_only_the_batch_rows(holed: Ratings) -> None:
    model = prepared(holed, "squared")
    model.use_sparse_steps(holed, torch.device("cpu"))
    batch = next(iter(model.training_batches(IndexLayout(holed), 5, torch.Generator().manual_seed(0))))
    model(batch).total.backward()
    assert model.theta.grad.is_sparse
    assert set(model.theta.grad.coalesce().indices()[0].tolist()) == set(batch.users.tolist())
    assert set(model.item_bias.grad.coalesce().indices()[0].tolist()) == set(batch.items.tolist())


def test_gramians_follow_the_rows_a_step_changes(holed: Ratings) -> None:
    model = prepared(holed, {"name": "weighted", "w0": 0.3})
    f = model.factors()
    gramians = Gramians()
    users, items = torch.tensor([1, 4, 7]), torch.tensor([2, 3])
    user_rows, item_rows = full_rows(f)
    gramians.current(user_rows, item_rows)
    gramians.remember(users, user_rows(users), items, item_rows(items))
    with torch.no_grad():  # a step moves exactly the remembered rows
        model.theta[users] += 0.3
        model.user_bias[users] -= 0.2
        model.item_bias[items] += 0.5
    g_theta, g_x = gramians.current(*full_rows(model.factors()))
    theta, x = full_rows(model.factors())[0](None), full_rows(model.factors())[1](None)
    torch.testing.assert_close(g_theta, theta.T @ theta, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_x, x.T @ x, rtol=1e-5, atol=1e-5)


def test_row_adam_steps_the_named_rows_as_adam_and_leaves_the_others() -> None:
    """The step of torch's SparseAdam (lazy Adam), as the Adam formula on the batch's rows; other rows
    and their moments bit-unchanged."""
    g = torch.Generator().manual_seed(0)
    start = torch.randn(8, 3, generator=g)
    ours, ref = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    row_adam, sparse_adam = RowAdam([ours], lr=0.1), torch.optim.SparseAdam([ref], lr=0.1)
    m, v = torch.zeros(8, 3), torch.zeros(8, 3)
    for step, rows in enumerate([[0, 2, 5], [2, 3], [5, 6, 7, 0]], start=1):
        rows = torch.tensor(rows)
        values = torch.randn(len(rows), 3, generator=g)
        before, moments = ours.detach().clone(), row_adam.state[ours].get("exp_avg", torch.zeros(8, 3)).clone()
        for p, opt in ((ours, row_adam), (ref, sparse_adam)):
            p.grad = torch.sparse_coo_tensor(rows[None], values, (8, 3), check_invariants=True)
            opt.step()
        m[rows] = 0.9 * m[rows] + 0.1 * values
        v[rows] = 0.999 * v[rows] + 0.001 * values**2
        step_size = 0.1 * (1 - 0.999**step) ** 0.5 / (1 - 0.9**step)
        expected = before.clone()
        expected[rows] -= step_size * m[rows] / (v[rows].sqrt() + 1e-8)
        torch.testing.assert_close(ours.detach(), ref.detach(), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(ours.detach(), expected, rtol=1e-6, atol=1e-7)
        others = torch.ones(8, dtype=torch.bool)
        others[rows] = False
        assert torch.equal(ours.detach()[others], before[others])
        assert torch.equal(row_adam.state[ours]["exp_avg"][others], moments[others])


def test_row_adam_refuses_a_gradient_that_names_cells_not_rows() -> None:
    p = torch.nn.Parameter(torch.zeros(3, 2))
    p.grad = torch.sparse_coo_tensor(torch.tensor([[0, 1], [1, 0]]), torch.tensor([1.0, 2.0]), (3, 2))  # 2 sparse dims
    with pytest.raises(ValueError, match="1 sparse dimension"):
        RowAdam([p], lr=0.1).step()
    assert torch.equal(p.detach(), torch.zeros(3, 2))


def test_batch_rows_of_int32_codes_equal_int64_ones_past_int32_keys() -> None:
    """A user-major key user × n_items + item passes 2³¹ at ML-25M's size (70,000 × 59,047): int32 codes
    must order the triples as int64 ones do."""
    users = torch.tensor([70_000, 3, 70_000, 3, 5], dtype=torch.int32)
    items = torch.tensor([40_000, 2, 1, 40_000, 7], dtype=torch.int32)
    narrow, wide = batch_rows(users, items, None, None, 1.0), batch_rows(users.long(), items.long(), None, None, 1.0)
    assert torch.equal(narrow.order, wide.order)
    assert narrow.users.tolist() == [3, 5, 70_000]


def test_sparse_adam_trains_as_well_as_adam(small_split: Split) -> None:
    options = {"epochs": 10, "batch_size": 1000, "lr": 0.02, "val_fraction": 0.0}
    rmse = {}
    for optimizer in ("adam", "sparse_adam"):
        model = CollaborativeFiltering(rank=4, objective="joint").fit(small_split.train, {**options, "optimizer": optimizer})
        pred = model.predict(torch.as_tensor(small_split.test.users), torch.as_tensor(small_split.test.items))
        rmse[optimizer] = float((pred - torch.as_tensor(small_split.test.values)).square().mean().sqrt())
        assert model.history[-1]["loss"] < model.history[0]["loss"]
    assert rmse["sparse_adam"] < rmse["adam"] * 1.05


def test_content_model_trains_with_sparse_steps(small_split: Split) -> None:
    model = ContentBased(item_features=torch.randn(small_split.train.n_items, 5, generator=torch.Generator().manual_seed(0)).numpy())
    model.fit(small_split.train, {"epochs": 2, "optimizer": "sparse_adam", "batch_size": 1000})
    assert model.history[-1]["loss"] < model.history[0]["loss"]


@pytest.mark.parametrize(("options", "objective", "key"), [
    ({"layout": "dense"}, "squared", "train.layout"),
    ({}, "bpr", "train.optimizer"),
])
def test_sparse_adam_refuses_what_it_cannot_do(small_split: Split, options, objective, key) -> None:
    model = CollaborativeFiltering(rank=4, objective=objective)
    with pytest.raises(ConfigError) as err:
        model.fit(small_split.train, {"epochs": 1, "optimizer": "sparse_adam", **options})
    assert err.value.key == key


@pytest.mark.parametrize("options", [{"weight_decay": 0.1}, {"distributed": True}])
def test_sparse_adam_options_are_checked(options) -> None:
    with pytest.raises(ConfigError):
        TrainConfig.from_dict({"optimizer": "sparse_adam", **options})


@pytest.mark.parametrize(("shares", "codes"), [(True, torch.int64), (False, torch.int64), (True, torch.int32)])
def test_table_rows_score_and_differentiate_as_gathers_do(shares: bool, codes: torch.dtype) -> None:
    """`pair_dots` over a batch's whole-table pattern (the ordinary steps' path, `table_rows`) gives each
    triple's θ_uᵀx_i and the gradients of gathering the rows one triple at a time; row shares sum the
    triples' shares, and a full batch without shares gives every row the batch's fraction."""
    gen = torch.Generator().manual_seed(7)
    n_users, n_items, k = 9, 6, 4
    users = torch.tensor([3, 0, 3, 8, 5, 0, 3, 2, 8, 5], dtype=codes)  # repeated users; users 1, 4, 6, 7, item 4 absent
    items = torch.tensor([1, 2, 0, 5, 1, 0, 2, 3, 0, 5], dtype=codes)
    user_share = torch.rand(len(users), generator=gen, dtype=torch.float64) if shares else None
    item_share = torch.rand(len(users), generator=gen, dtype=torch.float64) if shares else None
    theta = torch.randn(n_users, k, generator=gen, dtype=torch.float64, requires_grad=True)
    x = torch.randn(n_items, k, generator=gen, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(len(users), generator=gen, dtype=torch.float64)
    rows = table_rows(users, items, user_share, item_share, 0.25, n_users, n_items)
    pred = pair_dots(theta, x, rows)
    brute = torch.stack([theta[u] @ x[i] for u, i in zip(users.tolist(), items.tolist())])  # one triple at a time
    torch.testing.assert_close(pred, brute[rows.order].detach())
    got = torch.autograd.grad((pred * weights[rows.order]).sum(), (theta, x))
    want = torch.autograd.grad((brute * weights).sum(), (theta, x))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    assert torch.equal(rows.users, torch.arange(n_users)) and torch.equal(rows.items, torch.arange(n_items))
    if shares:
        torch.testing.assert_close(rows.user_share, torch.zeros(n_users, dtype=torch.float64).index_add_(0, users.long(), user_share))
        torch.testing.assert_close(rows.item_share, torch.zeros(n_items, dtype=torch.float64).index_add_(0, items.long(), item_share))
    else:
        assert torch.all(rows.user_share == 0.25) and torch.all(rows.item_share == 0.25)
