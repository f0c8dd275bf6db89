"""The loss J: autograd against the notes' hand-written gradients, and the two layouts against each other."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cfrec.data import Ratings
from cfrec.models.losses import (
    Factors,
    Penalty,
    RatedCells,
    RowPenalty,
    WeightedCells,
    dense_loss,
    index_loss,
    pack_head,
    packed_factors,
    packed_views,
)
from cfrec.train.batches import DenseLayout, IndexLayout
from cfrec.train.sparse import table_rows

LAM, LAM_B = 0.7, 0.3


def random_problem(seed: int, n_users: int = 7, n_items: int = 5, k: int = 3, density: float = 0.5):
    """Float64 factors, biases and a NaN-holed rating matrix where every row and column has a rating."""
    rng = np.random.default_rng(seed)
    Y = rng.integers(1, 6, (n_users, n_items)).astype(float)
    keep = rng.random((n_users, n_items)) < density
    keep[np.arange(n_users), rng.integers(0, n_items, n_users)] = True
    keep[rng.integers(0, n_users, n_items), np.arange(n_items)] = True
    Y[~keep] = np.nan
    theta, x = rng.normal(size=(n_users, k)), rng.normal(size=(n_items, k))
    b_u, b_i = rng.normal(size=n_users), rng.normal(size=n_items)
    return Y, theta, x, b_u, b_i, 3.1


def notes_gradients(Y, theta, x, lam, b_u=None, b_i=None, mean=0.0, lam_b=0.0):
    """The notes' compute_theta_gradient / compute_x_gradient loops (plus the bias terms)."""
    R = ~np.isnan(Y)
    biased = b_u is not None
    g_theta, g_x = np.zeros_like(theta), np.zeros_like(x)
    g_bu = np.zeros(len(theta)) if biased else None
    g_bi = np.zeros(len(x)) if biased else None
    for i in range(theta.shape[0]):
        for j in range(x.shape[0]):
            if R[i][j]:
                pred = theta[i] @ x[j] + ((mean + b_u[i] + b_i[j]) if biased else 0.0)
                error = pred - Y[i][j]
                g_theta[i] += error * x[j]
                g_x[j] += error * theta[i]
                if biased:
                    g_bu[i] += error
                    g_bi[j] += error
    g_theta += lam * theta
    g_x += lam * x
    if biased:
        g_bu += lam_b * b_u
        g_bi += lam_b * b_i
    return g_theta, g_x, g_bu, g_bi


def notes_loss(Y, theta, x, lam):
    """The notes' loss_function, verbatim in spirit: a double loop over rated cells."""
    R = ~np.isnan(Y)
    loss = sum((theta[i] @ x[j] - Y[i][j]) ** 2 for i in range(len(theta)) for j in range(len(x)) if R[i][j])
    return 0.5 * loss + lam / 2 * (np.sum(theta**2) + np.sum(x**2))


def leaf_factors(theta, x, b_u=None, b_i=None, mean=0.0) -> Factors:
    t = lambda a: torch.tensor(a, dtype=torch.float64, requires_grad=True)
    if b_u is None:
        return Factors(t(theta), t(x))
    return Factors(t(theta), t(x), torch.tensor(mean, dtype=torch.float64), t(b_u), t(b_i))


def dense_inputs(Y):
    R = ~np.isnan(Y)
    return torch.tensor(np.where(R, Y, 0.0)), torch.tensor(R, dtype=torch.float64)


def index_inputs(Y):
    users, items = np.nonzero(~np.isnan(Y))
    return torch.tensor(users), torch.tensor(items), torch.tensor(Y[users, items])


def grads(f: Factors) -> list[np.ndarray]:
    out = [f.theta.grad, f.x.grad] + ([f.user_bias.grad, f.item_bias.grad] if f.biased else [])
    return [g.numpy() for g in out]


@pytest.mark.parametrize("layout", ["dense", "index"])
@pytest.mark.parametrize("biased", [False, True])
def test_autograd_equals_the_notes_gradients(layout: str, biased: bool) -> None:
    Y, theta, x, b_u, b_i, mean = random_problem(seed=3)
    if biased:
        f = leaf_factors(theta, x, b_u, b_i, mean)
        expected = notes_gradients(Y, theta, x, LAM, b_u, b_i, mean, LAM_B)
    else:
        f = leaf_factors(theta, x)
        expected = notes_gradients(Y, theta, x, LAM)[:2]
    pen = Penalty(LAM, LAM, LAM_B)
    terms = dense_loss(f, pen, *dense_inputs(Y)) if layout == "dense" else index_loss(f, pen, *index_inputs(Y))
    terms.total.backward()
    for got, want in zip(grads(f), expected):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    if not biased:
        assert terms.total.item() == pytest.approx(notes_loss(Y, theta, x, LAM), rel=1e-12)


@pytest.mark.parametrize("w0", [None, 0.05])
@pytest.mark.parametrize("row_weights", [False, True])
def test_dense_and_index_layouts_agree(w0: float | None, row_weights: bool) -> None:
    """Same J, same data/reg split and same gradients, also for the weighted mask's closed form
    (whose unweighted factor penalty the index layout takes as Gramian traces) and count-scaled rows."""
    Y, theta, x, b_u, b_i, mean = random_problem(seed=11, n_users=9, n_items=6, k=4)
    R = ~np.isnan(Y)
    pen = Penalty(LAM, LAM, LAM_B, *((torch.tensor(R.sum(1) ** 0.5), torch.tensor(R.sum(0) ** 0.5)) if row_weights else ()))
    fd, fi = leaf_factors(theta, x, b_u, b_i, mean), leaf_factors(theta, x, b_u, b_i, mean)
    dense = dense_loss(fd, pen, *dense_inputs(Y), w0=w0)
    index = index_loss(fi, pen, *index_inputs(Y), w0=w0)
    assert dense.data.item() == pytest.approx(index.data.item(), rel=1e-12)
    assert dense.reg.item() == pytest.approx(index.reg.item(), rel=1e-12)
    dense.total.backward()
    index.total.backward()
    for a, b in zip(grads(fd), grads(fi)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("w0", [None, 0.05])
def test_a_batch_without_shares_carries_its_fraction_of_every_penalty(w0: float | None) -> None:
    """Without per-triple shares (a full batch, or one rank's shard of it), every row's penalty is
    the batch's ``fraction`` of J's: the factors' and the biases' alike."""
    Y, theta, x, b_u, b_i, mean = random_problem(seed=17)
    pen = Penalty(LAM, LAM, LAM_B)
    whole = index_loss(leaf_factors(theta, x, b_u, b_i, mean), pen, *index_inputs(Y), w0=w0)
    part = index_loss(leaf_factors(theta, x, b_u, b_i, mean), pen, *index_inputs(Y), w0=w0, fraction=0.4)
    assert part.reg.item() == pytest.approx(0.4 * whole.reg.item(), rel=1e-12)
    if w0 is None:
        assert part.data.item() == pytest.approx(whole.data.item(), rel=1e-12)


def test_weighted_mask_is_the_weighted_sum_over_all_cells() -> None:
    Y, theta, x, b_u, b_i, mean = random_problem(seed=5)
    w0 = 0.2
    R = ~np.isnan(Y)
    pred = theta @ x.T + mean + b_u[:, None] + b_i[None, :]
    W = np.where(R, 1.0, w0)
    expected = 0.5 * np.sum(W * (pred - np.where(R, Y, 0.0)) ** 2)
    f = leaf_factors(theta, x, b_u, b_i, mean)
    assert index_loss(f, Penalty(0, 0), *index_inputs(Y), w0=w0).data.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("w0", [None, 0.1])
@pytest.mark.parametrize("layout_cls", [DenseLayout, IndexLayout])
def test_mini_batch_terms_add_up_to_j(layout_cls, w0: float | None) -> None:
    """One epoch of mini-batches sums to the full-batch J, data and regularization alike."""
    Y, theta, x, b_u, b_i, mean = random_problem(seed=8, n_users=20, n_items=9)
    layout = layout_cls(Ratings.from_dense(Y), "cpu")
    f = Factors(*(torch.tensor(a, dtype=torch.float32) for a in (theta, x)), torch.tensor(mean),
                *(torch.tensor(a, dtype=torch.float32) for a in (b_u, b_i)))
    pen = Penalty(LAM, LAM, LAM_B)

    def terms(batch):
        if layout_cls is DenseLayout:
            return dense_loss(f, pen, batch.Y, batch.R, rows=batch.rows, fraction=batch.fraction, w0=w0)
        return index_loss(f, pen, batch.users, batch.items, batch.values, user_share=batch.user_share,
                          item_share=batch.item_share, fraction=batch.fraction, w0=w0)

    generator = torch.Generator().manual_seed(0)
    full = terms(next(layout.batches(None, generator)))
    parts = [terms(b) for b in layout.batches(7, generator)]
    assert len(parts) > 2
    assert sum(float(p.data) for p in parts) == pytest.approx(float(full.data), rel=1e-5)
    assert sum(float(p.reg) for p in parts) == pytest.approx(float(full.reg), rel=1e-5)


def test_count_scaled_penalty_gradients_and_layouts() -> None:
    """With row weights w = n^α the gradient gains λ w_u θ_u (and the mirror); layouts still agree."""
    Y, theta, x, b_u, b_i, mean = random_problem(seed=13, n_users=9, n_items=6, k=4)
    R = ~np.isnan(Y)
    w_u, w_i = R.sum(1) ** 0.5, R.sum(0) ** 0.5
    pen = Penalty(LAM, LAM, LAM_B, torch.tensor(w_u), torch.tensor(w_i))
    fd, fi = leaf_factors(theta, x, b_u, b_i, mean), leaf_factors(theta, x, b_u, b_i, mean)
    dense, index = dense_loss(fd, pen, *dense_inputs(Y)), index_loss(fi, pen, *index_inputs(Y))
    dense.total.backward()
    index.total.backward()
    g_theta, g_x, g_bu, g_bi = notes_gradients(Y, theta, x, 0.0, b_u, b_i, mean, 0.0)  # data term only
    expected = [g_theta + LAM * w_u[:, None] * theta, g_x + LAM * w_i[:, None] * x,
                g_bu + LAM_B * w_u * b_u, g_bi + LAM_B * w_i * b_i]
    for got_dense, got_index, want in zip(grads(fd), grads(fi), expected):
        np.testing.assert_allclose(got_dense, want, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(got_index, want, rtol=1e-10, atol=1e-12)
    reg = 0.5 * (LAM * (w_u @ (theta**2).sum(1) + w_i @ (x**2).sum(1)) + LAM_B * (w_u @ b_u**2 + w_i @ b_i**2))
    assert dense.reg.item() == pytest.approx(reg, rel=1e-12) and index.reg.item() == pytest.approx(reg, rel=1e-12)


@pytest.mark.parametrize("layout_cls", [DenseLayout, IndexLayout])
def test_count_scaled_mini_batches_add_up_to_j(layout_cls) -> None:
    Y, theta, x, b_u, b_i, mean = random_problem(seed=9, n_users=20, n_items=9)
    R = ~np.isnan(Y)
    layout = layout_cls(Ratings.from_dense(Y), "cpu")
    f = Factors(*(torch.tensor(a, dtype=torch.float32) for a in (theta, x)), torch.tensor(mean),
                *(torch.tensor(a, dtype=torch.float32) for a in (b_u, b_i)))
    pen = Penalty(LAM, LAM, LAM_B, torch.tensor(R.sum(1) ** 0.5, dtype=torch.float32),
                  torch.tensor(R.sum(0) ** 0.5, dtype=torch.float32))

    def reg(batch):
        if layout_cls is DenseLayout:
            return dense_loss(f, pen, batch.Y, batch.R, rows=batch.rows, fraction=batch.fraction).reg
        return index_loss(f, pen, batch.users, batch.items, batch.values, user_share=batch.user_share,
                          item_share=batch.item_share, fraction=batch.fraction).reg

    generator = torch.Generator().manual_seed(0)
    full = reg(next(layout.batches(None, generator)))
    assert sum(float(reg(b)) for b in layout.batches(7, generator)) == pytest.approx(float(full), rel=1e-5)


def weighted_cells_problem(ridge: bool):
    """Float64 tables, 9 rated cells of a 7 × 5 grid with targets, and column weights (zero without ``ridge``)."""
    gen = torch.Generator().manual_seed(3)
    theta = torch.randn(7, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    x = torch.randn(5, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    cells = torch.randperm(35, generator=gen)[:9]
    users, items = cells // 5, cells % 5
    values = torch.rand(9, dtype=torch.float64, generator=gen) * 4 + 1
    d, e = (torch.rand(4, dtype=torch.float64, generator=gen) * ridge for _ in range(2))
    return theta, x, users, items, values, d, e


@pytest.mark.parametrize("ridge", [False, True])
def test_weighted_cells_value_and_gradient_match_brute_force(ridge: bool) -> None:
    """The rated cells one by one and every cell of the grid, against the Gramian closed form."""
    theta, x, users, items, values, d, e = weighted_cells_problem(ridge)
    w0, fraction = 0.3, 0.4
    pattern = table_rows(users, items, None, None, fraction, 7, 5)
    data, reg = WeightedCells.apply(theta, x, values[pattern.order], pattern, w0, fraction, d, e)
    every = theta @ x.T  # (7, 5)
    rated = every[users, items]
    brute_data = (0.5 * ((rated - values) ** 2).sum() - 0.5 * w0 * (rated**2).sum() + 0.5 * w0 * fraction * (every**2).sum())
    brute_reg = 0.5 * ((theta**2 * d).sum() + (x**2 * e).sum())
    torch.testing.assert_close(data, brute_data)
    torch.testing.assert_close(reg, brute_reg)
    combined = torch.autograd.grad(0.7 * data + 1.3 * reg, (theta, x))
    brute = torch.autograd.grad(0.7 * brute_data + 1.3 * brute_reg, (theta, x))
    for got, want in zip(combined, brute):
        torch.testing.assert_close(got, want)

    def terms(t, y):
        return WeightedCells.apply(t, y, values[pattern.order], pattern, w0, fraction, d, e)

    assert torch.autograd.gradcheck(terms, (theta.detach().requires_grad_(), x.detach().requires_grad_()))


def test_weighted_cells_refuse_a_second_derivative() -> None:
    """Its backward reuses the forward's Gramians, so differentiating it again would be wrong: refused."""
    theta, x, users, items, values, d, e = weighted_cells_problem(ridge=False)
    pattern = table_rows(users, items, None, None, 1.0, 7, 5)
    data, _ = WeightedCells.apply(theta, x, values[pattern.order], pattern, 0.3, 1.0, d, e)
    grad_theta, _ = torch.autograd.grad(data, (theta, x), create_graph=True)
    with pytest.raises(RuntimeError, match="does not require grad|differentiable"):
        torch.autograd.grad(grad_theta.sum(), theta)


def test_rated_cells_value_and_gradient_match_brute_force() -> None:
    """The rated cells' dots and the row-weighted penalty beside them, against plain autograd."""
    theta, x, users, items, _, _, _ = weighted_cells_problem(ridge=False)
    gen = torch.Generator().manual_seed(4)
    d, e = torch.rand(7, dtype=torch.float64, generator=gen), torch.rand(5, dtype=torch.float64, generator=gen)
    pattern = table_rows(users, items, None, None, 1.0, 7, 5)
    dots, ridge = RatedCells.apply(theta, x, pattern, d, e)
    torch.testing.assert_close(dots, (theta[users] * x[items]).sum(dim=1)[pattern.order])
    brute_ridge = 0.5 * ((theta**2).sum(dim=1) @ d + (x**2).sum(dim=1) @ e)
    torch.testing.assert_close(ridge, brute_ridge)
    weights = torch.linspace(-1, 2, len(dots), dtype=torch.float64)

    def terms(t, y):
        out, reg = RatedCells.apply(t, y, pattern, d, e)
        return out @ weights + 1.7 * reg

    assert torch.autograd.gradcheck(terms, (theta.detach().requires_grad_(), x.detach().requires_grad_()))


@pytest.mark.parametrize("align", [1, 8, 16])
def test_augmented_factors_pad_to_the_alignment_without_changing_a_prediction(align: int) -> None:
    gen = torch.Generator().manual_seed(5)
    f = Factors(torch.randn(6, 5, generator=gen), torch.randn(4, 5, generator=gen), torch.tensor(3.5),
                torch.randn(6, generator=gen), torch.randn(4, generator=gen))
    theta_aug, x_aug = f.augmented(align=align)
    assert theta_aug.shape[1] == x_aug.shape[1] and theta_aug.shape[1] % align == 0 and theta_aug.shape[1] - 7 < align
    want = f.theta @ f.x.T + f.mean + f.user_bias[:, None] + f.item_bias[None, :]
    torch.testing.assert_close(theta_aug @ x_aug.T, want)


@pytest.mark.parametrize("row_weights", [False, True])
def test_a_packed_head_gives_the_loss_and_gradients_of_its_four_tensors(row_weights: bool) -> None:
    """A head stored as its augmented tables (μ = 0) scores from them with no copy, traces its bias
    penalty, and hands each of φ, z, c, d the gradient it would get as a separate tensor; its
    columns of ones and zero padding get none."""
    Y, theta, x, b_u, b_i, _ = random_problem(seed=13, n_users=9, n_items=6, k=5)
    R = ~np.isnan(Y)
    pen = Penalty(LAM, LAM, LAM_B, *((torch.tensor(R.sum(1) ** 0.5), torch.tensor(R.sum(0) ** 0.5)) if row_weights else ()))
    separate = leaf_factors(theta, x, b_u, b_i, 0.0)
    tables = [t.detach().requires_grad_() for t in pack_head(*(torch.tensor(a) for a in (theta, x, b_u, b_i)))]
    assert tables[0].shape[1] == 8  # k + 2 = 7, padded to GEMM_ALIGN
    packed = packed_factors(*tables, rank=5)
    assert packed.augmented(align=8)[0] is tables[0] and packed.augmented()[0].shape[1] == 7
    want = index_loss(separate, pen, *index_inputs(Y), w0=0.2, fraction=0.6)
    got = index_loss(packed, pen, *index_inputs(Y), w0=0.2, fraction=0.6)
    assert got.data.item() == pytest.approx(want.data.item(), rel=1e-12)
    assert got.reg.item() == pytest.approx(want.reg.item(), rel=1e-12)
    want.total.backward()
    got.total.backward()
    grad_users, grad_items = tables[0].grad, tables[1].grad
    for mine, theirs in zip(packed_views(grad_users, grad_items, 5), grads(separate)):
        np.testing.assert_allclose(mine.numpy(), theirs, rtol=1e-10, atol=1e-12)
    assert not grad_users[:, 6:].any() and not grad_items[:, [5, 7]].any()


@pytest.mark.parametrize("share", ["float", "tensor"])
@pytest.mark.parametrize("width", [None, 3])
def test_row_penalty_value_and_gradient_match_brute_force(share: str, width: int | None) -> None:
    """l2/2 Σ_r share_r ‖row_r‖² and its hand-written gradient, for factor tables and bias vectors."""
    gen = torch.Generator().manual_seed(4)
    rows = torch.randn((6,) if width is None else (6, width), dtype=torch.float64, generator=gen, requires_grad=True)
    weights = 0.3 if share == "float" else torch.rand(6, dtype=torch.float64, generator=gen)
    value = RowPenalty.apply(rows, 0.7, weights)
    squares = rows.reshape(6, -1).pow(2).sum(dim=1)
    brute = 0.5 * 0.7 * sum(float(w) * s for w, s in zip([weights] * 6 if share == "float" else weights, squares))
    torch.testing.assert_close(value, brute)
    torch.testing.assert_close(torch.autograd.grad(value, rows)[0], torch.autograd.grad(brute, rows)[0])
