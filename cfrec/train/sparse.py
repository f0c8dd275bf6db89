"""Row-sparse training steps: a step reads and writes only the rows its batch holds.

With ``train.optimizer: sparse_adam`` the index layout's batches gather each parameter's rows
once per batch (the batch's distinct users and items, `BatchRows`) through `take_rows`, whose
gradient is a sparse tensor over those rows; `RowAdam` updates only those rows and their moments
(lazy Adam, the semantics of ``torch.optim.SparseAdam``). Every other row, and its moments,
stays bit-unchanged, so a step costs O(batch · k) instead of O((users + items) · k).

The weighted mask's sum over all cells, Σ_all ŷ² = ⟨Θ̃ᵀΘ̃, X̃ᵀX̃⟩, is the one term of J whose
gradient touches every row: 2 G_X θ̃_u for every user and 2 G_Θ x̃_i for every item, with the
Gramians G_X = X̃ᵀX̃ and G_Θ = Θ̃ᵀΘ̃ (k' × k'). `Gramians` keeps them exact as the rows move
(recomputed at the start of every epoch, then G += newᵀnew − oldᵀold for the rows each step
changed), so a batch can carry each of its rows' share of the term with the gradient of the
full J (Krichene et al., "Efficient Training on Very Large Corpora via Gramian Estimation",
ICLR 2019); see `cfrec.models.losses.sparse_index_loss` and docs/objectives.md.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor


class _TakeRows(torch.autograd.Function):
    """``table.index_select(0, rows)`` whose gradient is a sparse tensor over ``rows``."""

    @staticmethod
    def forward(ctx, table: Tensor, rows: Tensor) -> Tensor:  # rows: (m,) distinct, ascending
        ctx.save_for_backward(rows)
        ctx.shape = table.shape
        table._rows_taken = len(rows)
        return table.index_select(0, rows)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (rows,) = ctx.saved_tensors
        sparse = torch.sparse_coo_tensor(rows[None], grad.contiguous(), ctx.shape, is_coalesced=True,
                                         check_invariants=False)
        return sparse, None


def take_rows(table: Tensor, rows: Tensor) -> Tensor:
    """Rows ``rows`` (distinct, ascending) of ``table``; a trained table gets a sparse gradient over them."""
    if not table.requires_grad:
        return table.index_select(0, rows)
    return _TakeRows.apply(table, rows)


def mark_coalesced(table: Tensor) -> None:
    """Post-accumulate hook of a table read through `take_rows`: autograd's accumulation forgets that
    the sparse gradient of one lookup is coalesced (distinct ascending rows), and coalescing it again
    sorts it; a gradient summed from several lookups keeps its unmarked state and gets coalesced."""
    grad = table.grad
    if grad is not None and grad.is_sparse and grad._nnz() == getattr(table, "_rows_taken", -1):
        grad._coalesced_(True)


class _PairDots(torch.autograd.Function):
    """θ_uᵀx_i of a batch's triples from its distinct rows: a sampled dense-dense product (SDDMM) on
    the batch's user × item pattern, its backward two sparse-dense products (weighted embedding
    bags). No (n, k) gather is materialised, nor scattered back: about 4× less memory traffic than
    index_select / index_add."""

    @staticmethod
    def forward(ctx, theta: Tensor, x: Tensor, rows: BatchRows) -> Tensor:  # (m_u, k), (m_i, k)
        ctx.save_for_backward(theta, x)
        ctx.rows = rows
        return sampled_dots(theta, x, rows)

    @staticmethod
    def backward(ctx, grad: Tensor):
        theta, x = ctx.saved_tensors
        grad_theta, grad_x = sampled_dots_backward(grad, theta, x, ctx.rows, ctx.needs_input_grad[:2])
        return grad_theta, grad_x, None


def sampled_dots(theta: Tensor, x: Tensor, rows: BatchRows) -> Tensor:
    """(n,) θ_uᵀx_i of the pattern's triples in user-major order: the SDDMM of `pair_dots`."""
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the SDDMM is what is used here
        warnings.simplefilter("ignore", UserWarning)
        pattern = torch.sparse_csr_tensor(rows.user_crow, rows.item_pos, theta.new_zeros(len(rows.item_pos)),
                                          (len(rows.users), len(rows.items)), check_invariants=False)
    return torch.sparse.sampled_addmm(pattern, theta, x.T, beta=0.0).values()


def sampled_dots_backward(grad: Tensor, theta: Tensor, x: Tensor, rows: BatchRows,
                          needed: tuple[bool, bool] = (True, True)) -> tuple[Tensor | None, Tensor | None]:
    """The gradients of `sampled_dots` for ``grad`` (n,): Σ over each row's triples of grad · the other
    side's row, a weighted embedding bag per row (2x faster on CPU than the same product as CSR @ dense;
    the bags of rows without a triple are 0). Fresh tensors, (m_u, k) and (m_i, k)."""
    grad_theta = grad_x = None
    if needed[0]:
        grad_theta = F.embedding_bag(rows.item_pos, x, rows.user_crow[:-1], mode="sum",
                                     per_sample_weights=grad.contiguous())
    if needed[1]:
        grad_x = F.embedding_bag(rows.item_major_users, theta, rows.item_crow[:-1], mode="sum",
                                 per_sample_weights=grad.index_select(0, rows.item_major))
    return grad_theta, grad_x


def pair_dots(theta: Tensor, x: Tensor, rows: BatchRows) -> Tensor:
    """(n,) θ_uᵀx_i for the batch's triples (user-major order, `BatchRows`) from its rows (m_u, k), (m_i, k)."""
    return _PairDots.apply(theta, x, rows)


@dataclass(frozen=True)
class BatchRows:
    """A batch's distinct users and items, its triples in user-major order (by user, then item) as a
    sparse user × item pattern over them, and each row's share of its own penalty (the sum of its
    triples' shares: 1 over an epoch)."""

    users: Tensor  # (m_u,) distinct user codes, ascending
    items: Tensor  # (m_i,) distinct item codes, ascending
    order: Tensor  # (n,) the batch's triples in user-major order
    user_pos: Tensor  # (n,) position in ``users`` of each triple (user-major order)
    item_pos: Tensor  # (n,) position in ``items`` of each triple (user-major order)
    user_crow: Tensor  # (m_u + 1,) CSR row pointers of the user-major pattern
    item_crow: Tensor  # (m_i + 1,) CSR row pointers of the item-major pattern
    item_major: Tensor  # (n,) the user-major triples in item-major order
    item_major_users: Tensor  # (n,) ``user_pos`` in item-major order
    user_share: Tensor  # (m_u,)
    item_share: Tensor  # (m_i,)
    fraction: float  # the batch's share of all ratings (rows without a rating carry this much)


def batch_rows(users: Tensor, items: Tensor, user_share: Tensor | None, item_share: Tensor | None,
               fraction: float) -> BatchRows:
    """`BatchRows` over the batch's distinct users and items: `table_rows` of the triples (n,) each
    recoded to their positions among them; without shares (the full batch) every row carries
    ``fraction`` (1)."""
    u, u_pos = torch.unique(users, sorted=True, return_inverse=True)  # (m_u,), (n,)
    i, i_pos = torch.unique(items, sorted=True, return_inverse=True)  # (m_i,), (n,)
    return replace(table_rows(u_pos, i_pos, user_share, item_share, fraction, len(u), len(i)), users=u, items=i)


def table_rows(users: Tensor, items: Tensor, user_share: Tensor | None, item_share: Tensor | None,
               fraction: float, n_users: int, n_items: int) -> BatchRows:
    """`BatchRows` whose rows are every row of the tables (a code is its own position), so that
    `pair_dots` scores the triples (n,) straight from the whole θ and x and hands back whole-table
    gradients: the pattern of steps that update every row (Adam). A row's share is the sum of its
    triples' shares; without shares (the full batch) every row carries ``fraction``."""
    users, items = users.long(), items.long()  # positions index int64 row pointers
    order = _stable_order(items)  # by item, then (stable) by user: user-major, items ascending in a row
    order = order.index_select(0, _stable_order(users.index_select(0, order)))
    users, items = users.index_select(0, order), items.index_select(0, order)
    item_major = _stable_order(items)  # (n,) item-major, users ascending in a column
    if user_share is None or item_share is None:
        su, si = (torch.full((n,), fraction, device=users.device) for n in (n_users, n_items))
    else:
        su = user_share.new_zeros(n_users).index_add_(0, users, user_share.index_select(0, order))  # (n_users,)
        si = item_share.new_zeros(n_items).index_add_(0, items, item_share.index_select(0, order))  # (n_items,)
    every_user, every_item = torch.arange(n_users, device=users.device), torch.arange(n_items, device=items.device)
    return BatchRows(every_user, every_item, order, users, items, _row_pointers(users, n_users),
                     _row_pointers(items, n_items), item_major, users.index_select(0, item_major), su, si, fraction)


def _stable_order(codes: Tensor) -> Tensor:
    """The stable sorting order of row ``codes`` (n,), sorted as int32: three such sorts cost
    less than half the two argsorts of int64 pair keys they replace (352,700 codes: ~4.8 against ~9.9 ms)."""
    return torch.sort(codes.int(), stable=True).indices


def _row_pointers(positions: Tensor, n_rows: int) -> Tensor:
    """(n_rows + 1,) CSR row pointers of ``positions`` (n,) over ``n_rows`` rows."""
    counts = torch.bincount(positions, minlength=n_rows)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


GRAMIAN_EVERY: int | None = None  # see Gramians; chosen by measurement (docs/objectives.md)


class Gramians:
    """G_Θ = Θ̃ᵀΘ̃ and G_X = X̃ᵀX̃ of one head (detached, k' × k'), kept exact between steps.

    ``current`` brings them up to date: from scratch after ``reset`` (every epoch start, so float
    drift never outlives an epoch and a resumed run recomputes what a straight run did), else by
    G += newᵀnew − oldᵀold over the rows the last step changed, which ``remember`` recorded
    (their values before the step). That is exact while only the remembered rows move between
    two calls, as with `RowAdam`; a dense optimiser moves every row and has no use for it.
    """

    def __init__(self, every: int | None = None) -> None:
        self.every = every  # None: exact (incremental updates); N: recomputed every N steps, stale between
        self.reset()

    def reset(self) -> None:
        self.user: Tensor | None = None  # G_Θ (k', k')
        self.item: Tensor | None = None  # G_X (k', k')
        self._pending: tuple[Tensor, Tensor, Tensor, Tensor] | None = None
        self._steps = 0

    def current(self, user_rows: Callable[[Tensor | None], Tensor],
                item_rows: Callable[[Tensor | None], Tensor]) -> tuple[Tensor, Tensor]:
        """(G_Θ, G_X); ``user_rows(idx)`` / ``item_rows(idx)`` give the augmented rows (all rows for None)."""
        self._steps += 1
        if self.every is not None and self._steps > self.every:
            self.reset()
            self._steps = 1
        with torch.no_grad():
            if self.user is None or self.item is None:
                theta, x = user_rows(None), item_rows(None)  # (n_users, k'), (n_items, k')
                self.user, self.item = theta.T @ theta, x.T @ x
            elif self._pending is not None:
                users, old_u, items, old_i = self._pending
                _update(self.user, user_rows(users), old_u)
                _update(self.item, item_rows(items), old_i)
            self._pending = None
        return self.user, self.item

    def remember(self, users: Tensor, theta: Tensor, items: Tensor, x: Tensor) -> None:
        """The rows (codes and augmented values, before the step) the coming step may change."""
        if self.every is None:
            self._pending = (users, theta.detach(), items, x.detach())


def _update(gram: Tensor, new: Tensor, old: Tensor) -> None:
    """gram += newᵀnew − oldᵀold, as ½(M + Mᵀ) with M = (new + old)ᵀ(new − old): one product."""
    m = (new + old).T @ (new - old)  # (k', k')
    gram.add_(m + m.T, alpha=0.5)


class RowAdam(torch.optim.Optimizer):
    """Adam on the rows a sparse gradient names; every other row and its moments stay as they are.

    The step of ``torch.optim.SparseAdam`` (lazy Adam: a row's moments decay only when the row
    is in a batch; bias correction by the optimizer's step count), written with row gathers and
    index_copy instead of sparse-tensor arithmetic. Dense gradients (a parameter the loss
    reads whole) get the same step on every row: Adam's, except that ``eps`` is added before
    the bias correction, as SparseAdam does. A sparse gradient must name whole rows (one sparse
    dimension, as `take_rows` builds them); a `ValueError` refuses others.
    """

    def __init__(self, params: Iterable[Tensor], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                step = float(state["step"])
                step_size = group["lr"] * math.sqrt(1 - beta2**step) / (1 - beta1**step)
                grad = p.grad
                if grad.is_sparse:
                    if grad.sparse_dim() != 1:
                        raise ValueError(f"RowAdam steps whole rows: a sparse gradient needs 1 sparse dimension, "
                                         f"got {grad.sparse_dim()}")
                    grad = grad.coalesce()
                    rows, values = grad.indices()[0], grad.values()  # (m,), (m, ...)
                    m = state["exp_avg"].index_select(0, rows).lerp_(values, 1 - beta1)
                    v = state["exp_avg_sq"].index_select(0, rows).mul_(beta2).addcmul_(values, values, value=1 - beta2)
                    state["exp_avg"].index_copy_(0, rows, m)
                    state["exp_avg_sq"].index_copy_(0, rows, v)
                    # index_copy of the gathered rows: CPU index_add_ on a matrix is a slow scatter_add
                    row = p.index_select(0, rows).addcdiv_(m, v.sqrt_().add_(group["eps"]), value=-step_size)
                    p.index_copy_(0, rows, row)
                else:
                    m, v = state["exp_avg"], state["exp_avg_sq"]
                    m.lerp_(grad, 1 - beta1)
                    v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                    p.addcdiv_(m, v.sqrt().add_(group["eps"]), value=-step_size)
        return loss


def grad_values(grad: Tensor) -> Tensor:
    """The entries of a gradient that count towards its norm (a coalesced sparse one's values)."""
    return grad.coalesce().values() if grad.is_sparse else grad


class SparseSteps:
    """What a model's row-sparse loss needs beside its parameters and batches: each head's `Gramians`
    and the rows without a training rating."""

    def __init__(self, train, device: torch.device | str, parameters: Iterable[Tensor] = ()):
        for p in parameters:
            if p.requires_grad:
                p.register_post_accumulate_grad_hook(mark_coalesced)
        self.count_rows(train, device)
        self.gramians: dict[str, Gramians] = {}

    def count_rows(self, train, device: torch.device | str) -> None:
        """The user and item codes without a rating in ``train`` (each batch carries them)."""
        self.orphans = tuple(torch.as_tensor((counts == 0).nonzero()[0], device=device)
                             for counts in (train.user_counts(), train.item_counts()))

    def new_epoch(self) -> None:
        """Recompute the Gramians from scratch at the next step."""
        for gramians in self.gramians.values():
            gramians.reset()

    def args(self, batch, head: str) -> dict[str, object]:
        """``head``'s `head_loss` arguments for an index ``batch``: its rows (`IndexBatch.rows`, shared by the heads)."""
        return {"rows": batch.rows(), "gramians": self.gramians.setdefault(head, Gramians(GRAMIAN_EVERY)),
                "orphans": self.orphans}
