"""The factor-model loss J in two layouts that give the same value and gradients.

Both learned models predict ŷ(u, i) = θ_uᵀx_i (+ μ + b_u + b_i with biases) and minimise

    J = ½ Σ_(u,i) rated (ŷ(u, i) − y_ui)² + λ/2 (‖Θ‖² + ‖X‖²) + λ_b/2 (‖b_user‖² + ‖b_item‖²)

(content-based: X is fixed, so only ‖Θ‖² is penalised). Optional row weights generalise the
penalty to λ/2 Σ_u w_u ‖θ_u‖² + …, e.g. w = n^α for regularization that grows with a row's
number of ratings; without them (α = 0) it is exactly the notes' J. The weighted-mask variant counts
every unrated cell as a 0 with weight w₀: ½ Σ_all W (ŷ − Y)², W = 1 on rated cells.

Predictions are written as one product of *augmented* factors, ŷ = θ̃_uᵀx̃_i with
θ̃_u = [θ_u, b_u + μ, 1] and x̃_i = [x_i, 1, b_i] (plain [θ_u], [x_i] without biases), so the
dense layout is a single matmul and the weighted variant's sum over all cells has the
closed form Σ_all ŷ² = ⟨Θ̃ᵀΘ̃, X̃ᵀX̃⟩.

A mini-batch carries the *share* of each row's regularization it is responsible for: a block
of users their full penalty and the item side the block's share of all users (dense); each
rated triple 1/n_u of its user's and 1/n_i of its item's penalty (index), so a row absent
from a batch gets no gradient from it. Either way the batch terms of one epoch add up to J
exactly (rows without any rating sit at their optimum 0 in the index layout).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from cfrec.precision import gramian_dtype
from cfrec.train.sparse import (
    BatchRows,
    pair_dots,
    sampled_dots,
    sampled_dots_backward,
    table_rows,
    take_rows,
)


@dataclass(frozen=True)
class Factors:
    """The tensors a prediction is made of; biases are None for an unbiased model."""

    theta: Tensor  # (n_users, k)
    x: Tensor  # (n_items, k)
    mean: Tensor | None = None  # () global mean μ
    user_bias: Tensor | None = None  # (n_users,)
    item_bias: Tensor | None = None  # (n_items,)
    packed: tuple[Tensor, Tensor] | None = None  # the stored Θ̃, X̃ the fields above are views of (`pack_head`)

    @property
    def biased(self) -> bool:
        return self.user_bias is not None

    def augmented(self, align: int = 1) -> tuple[Tensor, Tensor]:
        """(Θ̃, X̃) with θ̃ᵀx̃ = the full prediction, shapes (n_users, k') and (n_items, k'); with
        ``align``, zero columns pad k' to a multiple of it (the prediction is the same). A packed
        head of that width hands over its stored tables, with no copy."""
        pad = -(self.theta.shape[1] + (2 if self.biased else 0)) % align
        if self.packed is not None and self.packed[0].shape[1] == self.theta.shape[1] + 2 + pad:
            return self.packed
        return augment_users(self.theta, self.user_bias, self.mean, pad), augment_items(self.x, self.item_bias, pad)


@dataclass(frozen=True)
class Penalty:
    """Regularization strengths: λ on θ, λ on x (0 when x is fixed), λ_b on both biases.

    ``user_weight`` / ``item_weight`` (n_users,) / (n_items,) multiply each row's penalty, e.g.
    n^α for count-scaled regularization; None weighs every row 1, the notes' J.
    """

    l2_user: float
    l2_item: float
    l2_bias: float = 0.0
    user_weight: Tensor | None = None
    item_weight: Tensor | None = None


@dataclass(frozen=True)
class LossTerms:
    """J split into its data term and its regularization term (both sums, J units)."""

    data: Tensor  # ()
    reg: Tensor  # ()

    @property
    def total(self) -> Tensor:
        return self.data + self.reg


def _row_penalty(rows: Tensor, l2: float, share: Tensor | float) -> Tensor:
    """l2/2 Σ share_r ‖rows_r‖² (a float ``share`` weights every row alike)."""
    if l2 == 0:
        return rows.new_zeros(())
    return RowPenalty.apply(rows, l2, share)


class RowPenalty(torch.autograd.Function):
    """l2/2 Σ_r share_r ‖rows_r‖² with its gradient l2 · share_r · rows_r written out: one pass over
    the table each way, where autograd's square / sum / dot keep an (n, k) square and multiply twice
    more (the penalty runs over whole tables every step). Differentiable once."""

    @staticmethod
    def forward(ctx, rows: Tensor, l2: float, share: Tensor | float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(rows, share if isinstance(share, Tensor) else None)
        ctx.l2, ctx.share = l2, share if not isinstance(share, Tensor) else None
        if ctx.share is not None:
            flat = rows.reshape(-1)
            return 0.5 * l2 * ctx.share * torch.dot(flat, flat)
        return 0.5 * l2 * torch.dot(_row_squares(rows), share)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        rows, share = ctx.saved_tensors
        scale = (ctx.l2 * grad) * (ctx.share if share is None else share)  # () or (n,)
        if isinstance(scale, Tensor) and scale.dim() == 1 and rows.dim() == 2:
            scale = scale[:, None]
        return rows * scale, None, None


def _row_squares(rows: Tensor) -> Tensor:
    """(n,) ‖row‖² of a table (n, k), or the squares of a vector (n,), without an (n, k) temporary:
    0.87 ms for 162,540 × 64 against einsum's 2.96."""
    return rows * rows if rows.dim() == 1 else torch.linalg.vector_norm(rows, dim=1).square()


def _weighted(share: Tensor | float, weight: Tensor | None) -> Tensor | float:
    return share if weight is None else share * weight


def _penalty(
    pen: Penalty, theta: Tensor, x: Tensor, user_bias: Tensor | None, item_bias: Tensor | None,
    user_share: Tensor | float = 1.0, item_share: Tensor | float = 1.0, user_weight: Tensor | None = None,
) -> Tensor:
    """Regularization of the given user and item rows, each weighted by its share (and the
    penalty's row weights; ``user_weight`` replaces ``pen.user_weight`` for a block of users)."""
    user_share = _weighted(user_share, pen.user_weight if user_weight is None else user_weight)
    item_share = _weighted(item_share, pen.item_weight)
    reg = _row_penalty(theta, pen.l2_user, user_share) + _row_penalty(x, pen.l2_item, item_share)
    if user_bias is not None and pen.l2_bias:
        reg = reg + _row_penalty(user_bias, pen.l2_bias, user_share) + _row_penalty(item_bias, pen.l2_bias, item_share)
    return reg


def dense_loss(
    f: Factors, pen: Penalty, Y: Tensor, R: Tensor, *, rows: Tensor | None = None,
    fraction: float = 1.0, w0: float | None = None,
) -> LossTerms:
    """J on dense masked tensors Y, R (B, n_items) of the users ``rows`` (all users when None).

    Y holds 0 where R (float 0/1) is 0. Each user of the block carries its full penalty, the
    item side the block's ``fraction`` of all users. ``w0`` switches on the weighted mask.
    """
    theta_aug, x_aug = f.augmented()
    theta, user_bias, user_weight = f.theta, f.user_bias, pen.user_weight
    if rows is not None:
        theta_aug = theta_aug.index_select(0, rows)  # (B, k')
        theta = theta.index_select(0, rows)  # (B, k)
        user_bias = None if user_bias is None else user_bias.index_select(0, rows)  # (B,)
        user_weight = None if user_weight is None else user_weight.index_select(0, rows)  # (B,)
    pred = theta_aug @ x_aug.T  # (B, n_items)
    if w0 is None:
        err = (pred * R - Y).view(-1)  # (B * n_items,)
        data = 0.5 * torch.dot(err, err)
    else:
        err = pred - Y  # (B, n_items)
        rated = (err * R).view(-1)
        err = err.view(-1)
        data = 0.5 * (w0 * torch.dot(err, err) + (1 - w0) * torch.dot(rated, rated))
    reg = _penalty(pen, theta, f.x, user_bias, f.item_bias, item_share=fraction, user_weight=user_weight)
    return LossTerms(data, reg)


def index_loss(
    f: Factors, pen: Penalty, users: Tensor, items: Tensor, values: Tensor, *,
    user_share: Tensor | None = None, item_share: Tensor | None = None,
    fraction: float = 1.0, w0: float | None = None, pattern: BatchRows | None = None,
) -> LossTerms:
    """J over gathered (user, item, rating) triples, each (n,).

    ``user_share``/``item_share`` (n,) give each triple's share of its row's regularization
    (1 / ratings of that user or item), so a row is penalised in proportion to its ratings in
    the batch and not at all in batches without it. Without them (or with ``w0``, whose
    unrated-cell term touches every row anyway) every row carries the batch's ``fraction``.
    With ``w0``, the unrated cells enter through the closed form ``fraction`` · w₀/2 Σ_all ŷ².

    The triples' θ_uᵀx_i come from the whole tables through `pair_dots` over ``pattern`` (the
    batch's `table_rows`, built here when not given; a model with two heads builds it once): no
    (n, k) gather is materialised nor scattered back: 3–4× less time than index_select / index_add_
    for the 25M default's 352,700-triple batches (docs/learned_models.md, "Large catalogs").
    """
    if pattern is None:
        pattern = table_rows(users, items, user_share, item_share, fraction, f.theta.shape[0], f.x.shape[0])
    targets = values.index_select(0, pattern.order)  # (n,) in the pattern's user-major order
    if w0 is not None:  # the unrated cells touch every row, and so does the penalty
        return weighted_mask_terms(f, pen, pattern, targets, w0, fraction)
    if user_share is None or item_share is None:  # every row the batch's fraction
        user_share = item_share = fraction
    else:  # each row the sum of its triples' shares
        user_share, item_share = pattern.user_share, pattern.item_share
    ridge_user = _ridge(pen.l2_user, user_share, pen.user_weight, f.theta)
    ridge_item = _ridge(pen.l2_item, item_share, pen.item_weight, f.x)
    pred, traced = RatedCells.apply(f.theta, f.x, pattern, ridge_user, ridge_item)  # (n,), ()
    if f.biased:
        pred = pred + f.mean + f.user_bias.index_select(0, pattern.user_pos) + f.item_bias.index_select(0, pattern.item_pos)
    err = pred - targets  # (n,)
    data = 0.5 * torch.dot(err, err)
    rest = replace(pen, l2_user=0.0, l2_item=0.0)  # the factors' penalty came with the dots
    return LossTerms(data, traced + _penalty(rest, f.theta, f.x, f.user_bias, f.item_bias, user_share, item_share))


def _ridge(l2: float, share: Tensor | float, weight: Tensor | None, table: Tensor) -> Tensor:
    """(n,) each row's penalty weight l2 · share · weight for `RatedCells`."""
    ridge = table.new_full((table.shape[0],), l2 * share) if isinstance(share, float) else l2 * share
    return ridge if weight is None else ridge * weight


class RatedCells(torch.autograd.Function):
    """`pair_dots` over whole tables with their row penalty alongside:

        dots = θ_uᵀx_i of the pattern's triples,   ridge = ½ Σ_u d_u ‖θ_u‖² + ½ Σ_i e_i ‖x_i‖²,

    the penalty's gradient added in place to the embedding bags' output, so each table gets one
    whole-table gradient where separate autograd terms would return two to be summed. Differentiable once."""

    @staticmethod
    def forward(ctx, theta: Tensor, x: Tensor, rows: BatchRows, ridge_theta: Tensor, ridge_x: Tensor):  # type: ignore[override]
        ctx.save_for_backward(theta, x, ridge_theta, ridge_x)
        ctx.rows = rows
        ridge = 0.5 * (torch.dot(_row_squares(theta), ridge_theta) + torch.dot(_row_squares(x), ridge_x))
        return sampled_dots(theta, x, rows), ridge

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_dots: Tensor, grad_ridge: Tensor):  # type: ignore[override]
        theta, x, ridge_theta, ridge_x = ctx.saved_tensors
        grad_theta, grad_x = sampled_dots_backward(grad_dots, theta, x, ctx.rows, ctx.needs_input_grad[:2])
        if grad_theta is not None:
            grad_theta.addcmul_(theta, (grad_ridge * ridge_theta)[:, None])
        if grad_x is not None:
            grad_x.addcmul_(x, (grad_ridge * ridge_x)[:, None])
        return grad_theta, grad_x, None, None, None


GEMM_ALIGN = 8  # MKL's (rows × k') @ (k' × k') at 162,540 rows: 57.8 ms at k' = 130, 41.2 ms at 136
# The augmented tables' two columns after the k factors (`augment_users`, `augment_items`), as offsets
# from k: θ̃ = [θ, b_u + μ, 1], x̃ = [x, 1, b_i], so that θ̃ᵀx̃ = θᵀx + μ + b_u + b_i.
USER_BIAS, USER_ONE = 0, 1
ITEM_ONE, ITEM_BIAS = 0, 1


def weighted_mask_terms(f: Factors, pen: Penalty, pattern: BatchRows, targets: Tensor, w0: float, fraction: float) -> LossTerms:
    """The weighted mask's J on a batch scored over whole tables (`index_loss` with ``w0``): `WeightedCells`
    for the data term and, where the penalty is unweighted, the factors' share of it as Gramian traces
    (a packed head's biases' too: its bias columns hold the biases alone, μ being 0); the rest
    (row-weighted penalties, n^α, and a built table's biases) through `_penalty`."""
    theta_aug, x_aug = f.augmented(align=GEMM_ALIGN)
    k, packed = f.theta.shape[1], f.packed is not None and theta_aug is f.packed[0]
    traced_bias = packed and pen.user_weight is None and pen.item_weight is None
    ridge_user, ridge_item = theta_aug.new_zeros(theta_aug.shape[1]), x_aug.new_zeros(x_aug.shape[1])  # (k',) each
    if pen.user_weight is None:
        ridge_user[:k] = pen.l2_user * fraction
    if pen.item_weight is None:
        ridge_item[:k] = pen.l2_item * fraction
    if traced_bias:
        ridge_user[k + USER_BIAS], ridge_item[k + ITEM_BIAS] = pen.l2_bias * fraction, pen.l2_bias * fraction
    constant = (k + USER_ONE, k + ITEM_ONE) if packed else None  # a packed head's columns of ones stay 1
    data, traced = WeightedCells.apply(theta_aug, x_aug, targets, pattern, w0, fraction, ridge_user, ridge_item, constant)
    rest = Penalty(0.0 if pen.user_weight is None else pen.l2_user,  # what the traces did not take
                   0.0 if pen.item_weight is None else pen.l2_item,
                   0.0 if traced_bias else pen.l2_bias, pen.user_weight, pen.item_weight)
    return LossTerms(data, traced + _penalty(rest, f.theta, f.x, f.user_bias, f.item_bias, fraction, fraction))


class WeightedCells(torch.autograd.Function):
    """One head's weighted-mask data term over a whole-table pattern, with a column-weighted ridge:

        data  = ½ Σ_rated (ŷ − y)² − w₀/2 Σ_rated ŷ² + ``fraction`` · w₀/2 ⟨G_Θ, G_X⟩,  ŷ = θ̃ᵀx̃
        ridge = ½ ⟨d, diag G_Θ⟩ + ½ ⟨e, diag G_X⟩        (G_Θ = Θ̃ᵀΘ̃, G_X = X̃ᵀX̃)

    so that an unweighted factor penalty λ/2 ‖Θ‖² rides along as a trace (d = λ on θ's columns).
    The rated cells are scored from the augmented tables (`sampled_dots`), biases included; the
    backward writes each table's gradient once: the rated cells' embedding bags, then the Gramian
    product added in place (Θ̃ (g w₀ fraction G_X + g' diag d)), where separate autograd terms would
    each return a whole-table gradient to be summed. ``constant`` (user column, item column) names
    columns that are inputs, not parameters (a packed head's ones): their gradient is 0.
    Differentiable once."""

    @staticmethod
    def forward(ctx, theta_aug: Tensor, x_aug: Tensor, targets: Tensor, rows: BatchRows, w0: float,  # type: ignore[override]
                fraction: float, ridge_theta: Tensor, ridge_x: Tensor, constant: tuple[int, int] | None = None):
        dtype = gramian_dtype(theta_aug.numel() + x_aug.numel(), theta_aug.device, theta_aug.dtype)
        theta_g, x_g = theta_aug.to(dtype), x_aug.to(dtype)  # bfloat16 copies, or the tables themselves
        gram_theta, gram_x = (theta_g.T @ theta_g).to(theta_aug.dtype), (x_g.T @ x_g).to(theta_aug.dtype)  # (k', k') each
        pred = sampled_dots(theta_aug, x_aug, rows)  # (n,)
        err = pred - targets
        data = 0.5 * (torch.dot(err, err) - w0 * torch.dot(pred, pred) + w0 * fraction * torch.dot(gram_theta.view(-1), gram_x.view(-1)))
        ridge = 0.5 * (torch.dot(ridge_theta, gram_theta.diagonal()) + torch.dot(ridge_x, gram_x.diagonal()))
        ctx.save_for_backward(theta_aug, x_aug, theta_g, x_g, gram_theta, gram_x, err - w0 * pred, ridge_theta, ridge_x)
        ctx.rows, ctx.scale, ctx.constant = rows, w0 * fraction, constant
        return data, ridge

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_data: Tensor, grad_ridge: Tensor):  # type: ignore[override]
        theta_aug, x_aug, theta_g, x_g, gram_theta, gram_x, residual, ridge_theta, ridge_x = ctx.saved_tensors
        needed = ctx.needs_input_grad[:2]
        grad_theta, grad_x = sampled_dots_backward(grad_data * residual, theta_aug, x_aug, ctx.rows, needed)
        if needed[0]:
            _add_product(grad_theta, theta_g, grad_data * ctx.scale * gram_x + torch.diag(grad_ridge * ridge_theta))
        if needed[1]:
            _add_product(grad_x, x_g, grad_data * ctx.scale * gram_theta + torch.diag(grad_ridge * ridge_x))
        if ctx.constant is not None:
            for grad, column in zip((grad_theta, grad_x), ctx.constant):
                if grad is not None:
                    grad[:, column] = 0.0
        return grad_theta, grad_x, None, None, None, None, None, None, None


def _add_product(out: Tensor, table: Tensor, matrix: Tensor) -> None:
    """out += table @ matrix, in ``table``'s precision (`cfrec.precision`): in place at full precision."""
    if table.dtype == out.dtype:
        out.addmm_(table, matrix)
    else:
        out.add_(table @ matrix.to(table.dtype))


def triple_penalty(
    f: Factors, pen: Penalty, users: Tensor, items: Tensor, user_share: Tensor | None, item_share: Tensor | None,
    fraction: float,
) -> Tensor:
    """The penalty a batch of rated triples carries: each row its triples' shares, summed; without
    shares (the full batch) every row the batch's ``fraction``."""
    if user_share is None or item_share is None:
        return _penalty(pen, f.theta, f.x, f.user_bias, f.item_bias, fraction, fraction)
    row_share_u = user_share.new_zeros(f.theta.shape[0]).index_add_(0, users, user_share)  # (n_users,)
    row_share_i = item_share.new_zeros(f.x.shape[0]).index_add_(0, items, item_share)  # (n_items,)
    return _penalty(pen, f.theta, f.x, f.user_bias, f.item_bias, row_share_u, row_share_i)


def full_penalty(f: Factors, pen: Penalty) -> Tensor:
    """J's whole regularization term: every row its full (weighted) penalty."""
    return _penalty(pen, f.theta, f.x, f.user_bias, f.item_bias)


def share_penalty(f: Factors, pen: Penalty, batch) -> Tensor:
    """`triple_penalty` of an index-layout batch."""
    return triple_penalty(f, pen, batch.users, batch.items, batch.user_share, batch.item_share, batch.fraction)


def augment_users(theta: Tensor, user_bias: Tensor | None, mean: Tensor | None, pad: int = 0) -> Tensor:
    """θ̃ rows [θ, b_u + μ, 1] (plain θ without biases), then ``pad`` zero columns."""
    if user_bias is None:
        return _padded([theta], pad)
    return _padded([theta, (user_bias + mean)[:, None], torch.ones_like(user_bias)[:, None]], pad)


def augment_items(x: Tensor, item_bias: Tensor | None, pad: int = 0) -> Tensor:
    """x̃ rows [x, 1, b_i] (plain x without biases), then ``pad`` zero columns."""
    if item_bias is None:
        return _padded([x], pad)
    return _padded([x, torch.ones_like(item_bias)[:, None], item_bias[:, None]], pad)


def pack_head(theta: Tensor, x: Tensor, user_bias: Tensor, item_bias: Tensor) -> tuple[Tensor, Tensor]:
    """A head without μ stored as its augmented tables, k' a multiple of `GEMM_ALIGN`: rows
    [θ_u, b_u, 1, 0…] and [x_i, 1, b_i, 0…]. Its weighted-mask steps then use them as they are,
    with no table built per step (`packed_factors` gives the head's views of them)."""
    pad = -(theta.shape[1] + 2) % GEMM_ALIGN
    return augment_users(theta, user_bias, user_bias.new_zeros(()), pad), augment_items(x, item_bias, pad)


def packed_factors(users: Tensor, items: Tensor, rank: int) -> Factors:
    """The `Factors` of a head stored by `pack_head`: views of its tables (their gradients reach them)."""
    theta, x, user_bias, item_bias = packed_views(users, items, rank)
    return Factors(theta, x, users.new_zeros(()), user_bias, item_bias, packed=(users, items))


def packed_views(users: Tensor, items: Tensor, rank: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(θ, x, b_u, b_i): the views of `pack_head`'s tables that hold them."""
    return users[:, :rank], items[:, :rank], users[:, rank + USER_BIAS], items[:, rank + ITEM_BIAS]


def reset_fixed_columns(users: Tensor, items: Tensor, rank: int) -> None:
    """Put `pack_head`'s fixed columns back in place: its ones (1) and its zero padding (0)."""
    with torch.no_grad():
        users[:, rank + USER_ONE], users[:, rank + 2:] = 1.0, 0.0
        items[:, rank + ITEM_ONE], items[:, rank + 2:] = 1.0, 0.0


def _padded(columns: list[Tensor], pad: int) -> Tensor:
    """``columns`` side by side, then ``pad`` zero columns, in one copy (none for a lone table)."""
    if pad:
        columns = [*columns, columns[0].new_zeros(columns[0].shape[0], pad)]
    return columns[0] if len(columns) == 1 else torch.cat(columns, dim=1)


def sparse_index_loss(
    f: Factors, pen: Penalty, rows, values: Tensor, *, w0: float | None = None, gramians=None,
    orphans: tuple[Tensor, Tensor] | None = None,
) -> LossTerms:
    """`index_loss` of a batch whose gradient touches only the batch's rows (`cfrec.train.sparse`).

    ``rows`` (`BatchRows`) names the batch's distinct users and items, its triples' order and each
    row's penalty share; each parameter's rows are gathered once, with a sparse gradient, and the
    triples' θ_uᵀx_i come from them without an (n, k) gather (`pair_dots`). ``values`` (n,) are in
    the batch's order. The penalty is each row's share of it, as in `index_loss` with shares. With
    ``w0`` the unrated cells' closed form w₀/2 Σ_all ŷ² enters through the Gramians (``gramians``:
    `Gramians`, exact at this step): since Σ_all ŷ² = Σ_u θ̃_uᵀ G_X θ̃_u = Σ_i x̃_iᵀ G_Θ x̃_i, each
    row carries its share s of

        w₀/4 (θ̃_uᵀ G_X θ̃_u + x̃_iᵀ G_Θ x̃_i),  gradient w₀ s G_X θ̃_u to θ̃_u and w₀ s G_Θ x̃_i to x̃_i,

    the full gradient of w₀/2 Σ_all ŷ² over an epoch (Krichene et al., ICLR 2019). Rows without
    any rating (``orphans``: user and item codes) are in no batch but in that sum: every batch
    carries them with its share of all ratings, as the dense closed form does every row.
    """
    theta, x, user_bias, item_bias = _gathered(f, rows.users, rows.items)  # (m_u, k), (m_i, k), biases
    pred = pair_dots(theta, x, rows)  # (n,) user-major
    if f.biased:
        pred = pred + f.mean + user_bias.index_select(0, rows.user_pos) + item_bias.index_select(0, rows.item_pos)
    err = pred - values.index_select(0, rows.order)  # (n,)
    data = 0.5 * torch.dot(err, err)
    blocks = [(rows.users, rows.items, theta, x, user_bias, item_bias, rows.user_share, rows.item_share)]
    if w0 is not None and orphans is not None and (len(orphans[0]) or len(orphans[1])):
        ou, oi = orphans
        blocks.append((ou, oi, *_gathered(f, ou, oi), rows.user_share.new_full((len(ou),), rows.fraction),
                       rows.item_share.new_full((len(oi),), rows.fraction)))
    if w0 is not None:
        gram_theta, gram_x = gramians.current(*full_rows(f))
        q, seen = data.new_zeros(()), []
        for users, items, b_theta, b_x, b_ub, b_ib, su, si in blocks:
            theta_aug, x_aug = augment_users(b_theta, b_ub, f.mean), augment_items(b_x, b_ib)  # (m_u, k'), (m_i, k')
            with torch.no_grad():
                pull_u, pull_i = theta_aug @ gram_x, x_aug @ gram_theta  # G_X θ̃_u, G_Θ x̃_i (detached)
            q = q + torch.dot(su, (theta_aug * pull_u).sum(dim=1)) + torch.dot(si, (x_aug * pull_i).sum(dim=1))
            seen.append((users, theta_aug, items, x_aug))
        data = data - 0.5 * w0 * torch.dot(pred, pred) + w0 * q - 0.75 * w0 * q.detach()  # value w₀/4 q, gradient of w₀ q
        gramians.remember(*(torch.cat(parts) for parts in zip(*seen)))
    reg = data.new_zeros(())
    for users, items, b_theta, b_x, b_ub, b_ib, su, si in blocks:
        user_weight = None if pen.user_weight is None else pen.user_weight.index_select(0, users)
        item_weight = None if pen.item_weight is None else pen.item_weight.index_select(0, items)
        reg = reg + _penalty(Penalty(pen.l2_user, pen.l2_item, pen.l2_bias, user_weight, item_weight),
                             b_theta, b_x, b_ub, b_ib, su, si)
    return LossTerms(data, reg)


def _gathered(f: Factors, users: Tensor, items: Tensor) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """(θ, x, b_u, b_i) at rows ``users`` and ``items`` through `take_rows`, sparse gradients over them;
    a packed head's two tables are gathered once each."""
    if f.packed is not None:
        return packed_views(take_rows(f.packed[0], users), take_rows(f.packed[1], items), f.theta.shape[1])
    theta, x = take_rows(f.theta, users), take_rows(f.x, items)
    if not f.biased:
        return theta, x, None, None
    return theta, x, take_rows(f.user_bias, users), take_rows(f.item_bias, items)


def full_rows(f: Factors):
    """(user_rows, item_rows): the augmented rows of ``f`` at given codes (all for None), detached."""

    def user_rows(codes: Tensor | None) -> Tensor:
        pick = (lambda t: t) if codes is None else (lambda t: t.index_select(0, codes))
        return augment_users(pick(f.theta), None if f.user_bias is None else pick(f.user_bias), f.mean).detach()

    def item_rows(codes: Tensor | None) -> Tensor:
        pick = (lambda t: t) if codes is None else (lambda t: t.index_select(0, codes))
        return augment_items(pick(f.x), None if f.item_bias is None else pick(f.item_bias)).detach()

    return user_rows, item_rows
