"""Alternating least squares (train.optimizer=als): row solves against a brute-force ridge
solution, exact coordinate minimisation of J (the solved side's gradient vanishes), and the
trainer's contract (resume, refusals naming their key)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cfrec.data import Split
from cfrec.errors import ConfigError
from cfrec.models import CollaborativeFiltering, ContentBased
from cfrec.train import Trainer, TrainConfig
from cfrec.train.als import AlsData, RowBlocks, solve_rows
from cfrec.train.batches import IndexBatch

ALS = {"optimizer": "als", "epochs": 4, "val_fraction": 0.0, "progress": False}


def brute_force_rows(rows, cols, values, n_rows, fixed, offset, reg, w0):
    """Each row's weighted ridge problem over every cell, solved with numpy in float64."""
    n_cols, f = fixed.shape
    out = np.zeros((n_rows, f))
    for r in range(n_rows):
        weight = np.full(n_cols, w0)
        target = np.zeros(n_cols)
        mine = rows == r
        weight[cols[mine]] = 1.0
        target[cols[mine]] = values[mine]
        residual = target - offset  # the row's unknowns explain t − o
        A = fixed.T @ (weight[:, None] * fixed) + np.diag(reg[r])
        out[r] = np.linalg.solve(A, fixed.T @ (weight * residual))
    return out


@pytest.mark.parametrize("w0", [0.0, 0.25])
@pytest.mark.parametrize("block_entries", [3, 1 << 18])  # many small padded blocks, or one per count level
def test_solve_rows_matches_a_brute_force_ridge_solution(w0: float, block_entries: int) -> None:
    rng = np.random.default_rng(0)
    n_rows, n_cols, f = 9, 7, 3
    cells = rng.choice(n_rows * n_cols, size=30, replace=False)
    rows, cols = cells // n_cols, cells % n_cols
    rows[rows == 4] = 5  # row 4 has no rated cell: only its penalty (and the unrated cells) speak
    cells = np.unique(rows * n_cols + cols)
    rows, cols = cells // n_cols, cells % n_cols
    values = rng.integers(1, 6, size=len(rows)).astype(np.float32)
    fixed = rng.normal(size=(n_cols, f)).astype(np.float32)
    offset = rng.normal(size=n_cols).astype(np.float32)
    reg = rng.uniform(0.5, 2.0, size=(n_rows, f)).astype(np.float32)
    blocks = RowBlocks.build(rows, cols, values, n_rows, n_cols, block_entries=block_entries)
    assert sorted(torch.cat(blocks.rows).tolist()) == list(range(n_rows))  # every row in exactly one block
    got = solve_rows(blocks, torch.as_tensor(fixed), torch.as_tensor(offset), torch.as_tensor(reg), w0)
    want = brute_force_rows(rows, cols, values, n_rows, fixed, offset, reg, w0)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-4)


def test_a_singular_system_falls_back_to_least_squares() -> None:
    """λ = 0 and a row with fewer ratings than factors: no Cholesky, still the minimum-norm fit."""
    fixed = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    blocks = RowBlocks.build(np.array([0, 1, 1]), np.array([0, 0, 1]), np.array([2.0, 3.0, 4.0]), 2, 3)
    z = solve_rows(blocks, fixed, None, torch.zeros(2, 2))
    assert torch.isfinite(z).all()
    assert z[0].tolist() == pytest.approx([2.0, 0.0], abs=1e-5)  # x₀ = [1, 0]: only θ₀'s first entry is seen
    assert z[1].tolist() == pytest.approx([3.0, 4.0], abs=1e-5)


def full_loss(model: CollaborativeFiltering, train) -> torch.Tensor:
    users, items, values = train.to_tensors("cpu")
    return model(IndexBatch(users, items, values, None, None, 1.0)).total


@pytest.mark.parametrize("objective, bias, l2_exponent", [
    ("squared", True, 0.5), ("squared", False, 0.0), ("weighted", True, 0.0), ("joint", True, 0.5),
])
def test_a_sweep_minimises_J_exactly_on_the_side_it_solves(
    small_split: Split, objective: str, bias: bool, l2_exponent: float,
) -> None:
    """J falls every sweep, and after a sweep (movies solved last) J's gradient with respect to
    every movie-side parameter is zero: each side is an exact minimiser, not a step."""
    model = CollaborativeFiltering(rank=5, objective=objective, bias=bias, l2_exponent=l2_exponent, l2=2.0)
    model.fit(small_split.train, ALS)
    losses = [h["loss"] for h in model.history]
    assert all(later < earlier for earlier, later in zip(losses, losses[1:]))
    assert losses[-1] == pytest.approx(float(full_loss(model, small_split.train).detach()), rel=1e-5)
    model.zero_grad()
    full_loss(model, small_split.train).backward()
    item_side = [model.x, model.item_bias, getattr(model, "pref_x", None), getattr(model, "pref_item_bias", None)]
    user_side = model.theta.grad.abs().max()
    for p in (p for p in item_side if p is not None):
        assert p.grad.abs().max() < 1e-3 * max(float(user_side), 1.0), p.shape


def test_als_and_adam_converge_to_the_same_J(small_split: Split) -> None:
    """The same J (squared, biases): 60 ALS sweeps end within 0.05 % of where 400 full-batch Adam epochs do."""
    als = CollaborativeFiltering(rank=4, l2=2.0, objective="squared").fit(small_split.train, {**ALS, "epochs": 60})
    adam = CollaborativeFiltering(rank=4, l2=2.0, objective="squared").fit(
        small_split.train, {"epochs": 400, "batch_size": None, "lr": 0.05, "val_fraction": 0.0, "progress": False})
    assert als.history[-1]["loss"] == pytest.approx(adam.history[-1]["loss"], rel=5e-4)


def test_resuming_an_adam_state_with_als_is_refused(small_split: Split) -> None:
    first = Trainer(TrainConfig.from_dict({"epochs": 1, "val_fraction": 0.0, "progress": False}))
    first.fit(CollaborativeFiltering(rank=3), small_split.train)
    second = Trainer(TrainConfig.from_dict(ALS))
    second.load_state_dict(first.state_dict())
    with pytest.raises(ConfigError, match="train.optimizer"):
        second.fit(CollaborativeFiltering(rank=3), small_split.train)


def test_als_refuses_objectives_and_models_it_cannot_solve(small_split: Split) -> None:
    with pytest.raises(ConfigError, match=r"train\.optimizer.*bpr trains with adam"):
        CollaborativeFiltering(rank=3, objective="bpr").fit(small_split.train, ALS)
    with pytest.raises(ConfigError, match=r"train\.optimizer.*fixed movie features"):
        ContentBased().fit(small_split.train, ALS)


def test_binary_targets_replace_every_rated_value() -> None:
    data = AlsData(*(RowBlocks.build(np.array([0, 0, 1]), np.array([1, 2, 0]), np.array([3.0, 5.0, 4.0]), 2, 3)
                     for _ in range(2)))
    binary = data.with_targets(1.0)
    for cols, values in zip(binary.by_user.cols, binary.by_user.values):
        assert torch.equal(values, (cols < 3).float())


@pytest.mark.parametrize("w0", [0.0, 0.25])
def test_conjugate_gradient_converges_to_the_exact_row_solutions(w0: float) -> None:
    """f CG steps solve an f-dimensional system (up to rounding); fewer steps move toward it."""
    rng = np.random.default_rng(3)
    n_rows, n_cols, f = 12, 10, 4
    cells = np.unique(rng.choice(n_rows * n_cols, size=60))
    rows, cols = cells // n_cols, cells % n_cols
    values = rng.integers(1, 6, size=len(rows)).astype(np.float32)
    fixed, offset = torch.randn(n_cols, f), torch.randn(n_cols)
    reg = torch.full((n_rows, f), 0.7)
    blocks = RowBlocks.build(rows, cols, values, n_rows, n_cols, block_entries=16)
    exact = solve_rows(blocks, fixed, offset, reg, w0)
    start = torch.zeros(n_rows, f)
    errors = [float((solve_rows(blocks, fixed, offset, reg, w0, start, steps) - exact).norm()) for steps in (1, 2, f)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-3 * float(exact.norm())


def test_cg_sweeps_lower_J_every_epoch(small_split: Split) -> None:
    model = CollaborativeFiltering(rank=5, objective="joint", l2=2.0)
    model.fit(small_split.train, {**ALS, "als_cg_steps": 2, "epochs": 5})
    losses = [h["loss"] for h in model.history]
    assert all(later < earlier for earlier, later in zip(losses, losses[1:]))


def test_cg_steps_must_be_a_non_negative_integer() -> None:
    with pytest.raises(ConfigError, match="als_cg_steps"):
        TrainConfig.from_dict({"als_cg_steps": -1})


@pytest.mark.parametrize("preset, train", [
    ("cf_weighted", {"optimizer": "als"}),
    ("cf_fast", {"optimizer": "als", "epochs": 6, "val_fraction": 0.0}),
    ("cf", {"epochs": 6}),
    ("cf_rating", {}),
])
def test_model_presets_choose_their_train_preset(preset: str, train: dict) -> None:
    """A model preset may choose a train preset (override /train@_global_.train); the command line still wins."""
    from cfrec.apps.schema import model_preset

    assert model_preset(preset)[1] == train
    from hydra import compose, initialize_config_module

    with initialize_config_module("cfrec.conf", version_base="1.3"):
        cfg = compose("config", [f"model={preset}", "train.optimizer=adam"])
    assert cfg.train.optimizer == "adam"
