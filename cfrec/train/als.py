"""Alternating least squares (``train.optimizer=als``): J minimised exactly, one side at a time.

With the movie side fixed, J of the squared and weighted-mask objectives is a ridge regression
for each user, solved in closed form; then the same for each movie with the users fixed. One
*sweep* (the ALS epoch) does both sides. For a row r (a user, or a movie) with the other side's
augmented rows F (n, f) — x̃_i = [x_i, 1] with biases, so z_r = [θ_r, b_r] — and offsets
o (n,) = μ + the other side's bias:

    (w₀ FᵀF + (1 − w₀) F_rᵀF_r + λ_r D) z_r = F_rᵀ(t_r − (1 − w₀) o_r) − w₀ Fᵀo

F_r, t_r, o_r are the rows, targets and offsets of r's rated cells, D = diag(1, …, 1, λ_b/λ)
(the bias's own λ_b) and λ_r = λ · r's penalty weight (n_r^α). w₀ = 0 is the squared objective
on rated cells; w₀ > 0 the weighted mask, every unrated cell a 0 of weight w₀, whose sum over
all cells enters through the Gramian FᵀF alone (Hu, Koren and Volinsky 2008).

The rated cells are grouped by row into padded blocks of rows with similar counts, so each
block's F_rᵀF_r is one batched matmul and its systems one batched Cholesky solve: the cost of a
sweep is linear in the ratings (× f²) plus (users + movies) × f³, at any catalog size.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from cfrec.data.ratings import Ratings

if TYPE_CHECKING:  # the models import the trainer, which imports this module
    from cfrec.models.losses import Factors, LossTerms, Penalty

BLOCK_ENTRIES = 1 << 18  # padded cells per block: F of a block is BLOCK_ENTRIES × f floats
LEVEL_RATIO = 1.2  # rows whose counts differ by less than this factor share blocks


@dataclass(frozen=True)
class RowBlocks:
    """One side's rated cells grouped by row: block b holds rows ``rows[b]`` (B,) and, per row,
    its columns ``cols[b]`` (B, m) and targets ``values[b]`` (B, m), padded with column
    ``n_cols`` (a zero row of F) and target 0. Every row is in exactly one block, rows without
    a rated cell included (their systems still hold the unrated cells' Gramian)."""

    rows: list[Tensor]
    cols: list[Tensor]
    values: list[Tensor]
    n_rows: int
    n_cols: int

    @classmethod
    def build(cls, rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n_rows: int, n_cols: int,
              device: torch.device | str = "cpu", block_entries: int = BLOCK_ENTRIES) -> "RowBlocks":
        """Blocks of rows whose counts lie within a factor `LEVEL_RATIO` of each other, so padding
        adds at most that share of cells (about 10 % on MovieLens)."""
        order = np.argsort(rows, kind="stable")
        cols_sorted = np.append(cols[order], n_cols).astype(np.int64)  # a padding column at the end
        values_sorted = np.append(values[order], 0).astype(np.float32)
        counts = np.bincount(rows, minlength=n_rows)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        level = np.ceil(np.log(np.maximum(counts, 1)) / np.log(LEVEL_RATIO)).astype(np.int64)  # counts in (r^(l-1), r^l]
        blocks: tuple[list[Tensor], list[Tensor], list[Tensor]] = ([], [], [])
        for lvl in np.unique(level):
            members = np.flatnonzero(level == lvl)
            width = max(1, int(counts[members].max()))
            per_block = max(1, block_entries // width)
            for part in np.array_split(members, -(-len(members) // per_block)):
                offsets = np.arange(width)
                valid = offsets[None, :] < counts[part][:, None]  # (B, m)
                at = np.where(valid, starts[part][:, None] + offsets[None, :], len(cols_sorted) - 1)
                for out, array in zip(blocks, (part, cols_sorted[at], values_sorted[at])):
                    out.append(torch.as_tensor(array, device=device))
        return cls(*blocks, n_rows=n_rows, n_cols=n_cols)


@dataclass(frozen=True)
class AlsData:
    """The training ratings grouped both ways, built once per fit."""

    by_user: RowBlocks
    by_item: RowBlocks

    @classmethod
    def build(cls, train: Ratings, device: torch.device | str, targets: np.ndarray | None = None) -> "AlsData":
        values = train.values if targets is None else targets
        return cls(RowBlocks.build(train.users, train.items, values, train.n_users, train.n_items, device),
                   RowBlocks.build(train.items, train.users, values, train.n_items, train.n_users, device))

    def with_targets(self, value: float) -> "AlsData":
        """The same blocks with every rated cell's target ``value`` (binary targets)."""
        def constant(side: RowBlocks) -> list[Tensor]:
            return [torch.where(c < side.n_cols, value, 0.0).to(v.dtype) for c, v in zip(side.cols, side.values)]
        return self._with_values(constant(self.by_user), constant(self.by_item))

    def scaled_by_item(self, scale: Tensor) -> "AlsData":
        """The same blocks with every rated cell's target × its movie's ``scale`` (n_items,)."""
        padded = torch.cat([scale, scale.new_zeros(1)])  # the padding column's targets stay 0
        return self._with_values([v * padded[c] for c, v in zip(self.by_user.cols, self.by_user.values)],
                                 [v * scale[r][:, None] for r, v in zip(self.by_item.rows, self.by_item.values)])

    def _with_values(self, by_user: list[Tensor], by_item: list[Tensor]) -> "AlsData":
        """The same blocks with other targets, block by block."""
        return AlsData(replace(self.by_user, values=by_user), replace(self.by_item, values=by_item))


def solve_rows(blocks: RowBlocks, fixed: Tensor, offset: Tensor | None, reg: Tensor, w0: float = 0.0,
               start: Tensor | None = None, cg_steps: int = 0, errors: list[Tensor] | None = None) -> Tensor:
    """z (n_rows, f) minimising each row's weighted ridge problem (module docstring) given the
    other side's rows ``fixed`` (n_cols, f), their ``offset`` (n_cols,) and the diagonal
    penalty ``reg`` (n_rows, f).

    ``cg_steps`` = 0 solves exactly (batched Cholesky); n > 0 takes n conjugate-gradient steps
    from ``start`` (n_rows, f), the rows' current values, never forming a row's f × f matrix:
    each step costs O(cells · f) instead of O(cells · f² + f³) (Takács et al. 2011), and every
    step lowers each row's objective, so J still falls every sweep.

    ``errors``, a list, receives Σ_rated ((ŷ − t)² − w₀ŷ²) over the solved rows' rated cells (the
    rated part of J's data term at the solution), computed from the block already in memory."""
    n_cols, f = fixed.shape
    fixed_pad = torch.cat([fixed, fixed.new_zeros(1, f)])  # (n_cols + 1, f): padding reads a zero row
    offset_pad = None if offset is None else torch.cat([offset, offset.new_zeros(1)])
    gram = w0 * (fixed.T @ fixed) if w0 else None  # (f, f)
    base_rhs = -w0 * (fixed.T @ offset) if w0 and offset is not None else None  # (f,)
    out = fixed.new_empty(blocks.n_rows, f)
    total = fixed.new_zeros((), dtype=torch.float64)  # the rated cells' error sum, with ``errors``
    for rows, cols, values in zip(blocks.rows, blocks.cols, blocks.values):
        F = fixed_pad.index_select(0, cols.reshape(-1)).view(*cols.shape, f)  # (B, m, f)
        offsets = None if offset_pad is None else offset_pad[cols]  # (B, m); 0 in padding
        target = values if offsets is None else values - (1.0 - w0) * offsets
        rhs = torch.bmm(F.transpose(1, 2), target.unsqueeze(2)).squeeze(2)  # (B, f)
        if base_rhs is not None:
            rhs += base_rhs
        if cg_steps:
            z = _conjugate_gradient(F, gram, reg[rows], 1.0 - w0, rhs, start[rows], cg_steps)
        else:
            A = torch.baddbmm(torch.diag_embed(reg[rows]), F.transpose(1, 2), F, alpha=1.0 - w0)  # (B, f, f)
            if gram is not None:
                A += gram
            z = _solve_spd(A, rhs)
        out[rows] = z
        if errors is not None:  # ŷ = F·z + o on the block's rated cells (padding: ŷ = t = 0)
            pred = torch.bmm(F, z.unsqueeze(2)).squeeze(2) + (0 if offsets is None else offsets)
            total += ((pred - values).square().sum() - w0 * pred.square().sum()).double()
    if errors is not None:
        errors.append(total)
    return out


def _conjugate_gradient(F: Tensor, gram: Tensor | None, reg: Tensor, rated_weight: float, rhs: Tensor,
                        z: Tensor, steps: int) -> Tensor:
    """``steps`` CG iterations on (rated_weight · FᵀF + gram + diag(reg)) z = rhs for a block of
    rows at once, from ``z`` (B, f); F (B, m, f) is never squared."""
    def product(v: Tensor) -> Tensor:  # A v, (B, f)
        Av = rated_weight * torch.bmm(F.transpose(1, 2), torch.bmm(F, v.unsqueeze(2))).squeeze(2) + reg * v
        return Av if gram is None else Av + v @ gram

    z = z.clone()
    r = rhs - product(z)
    p = r.clone()
    rr = (r * r).sum(1, keepdim=True)  # (B, 1)
    for _ in range(steps):
        Ap = product(p)
        pAp = (p * Ap).sum(1, keepdim=True)
        alpha = torch.where(pAp > 0, rr / pAp.clamp_min(1e-30), torch.zeros_like(rr))  # converged rows stay put
        z += alpha * p
        r -= alpha * Ap
        rr_next = (r * r).sum(1, keepdim=True)
        p = r + torch.where(rr > 0, rr_next / rr.clamp_min(1e-30), torch.zeros_like(rr)) * p
        rr = rr_next
    return z


def _solve_spd(A: Tensor, rhs: Tensor) -> Tensor:
    """Batched solve of symmetric positive (semi-)definite systems: Cholesky in float32, float64
    least squares for any system that is not numerically positive definite (e.g. λ = 0)."""
    L, info = torch.linalg.cholesky_ex(A)
    z = torch.cholesky_solve(rhs.unsqueeze(2), L).squeeze(2)
    bad = info != 0
    if bool(bad.any()):
        z[bad] = torch.linalg.lstsq(A[bad].double(), rhs[bad].double().unsqueeze(2)).solution.squeeze(2).to(z.dtype)
    return z


def sweep(f: Factors, pen: Penalty, data: AlsData, w0: float = 0.0, cg_steps: int = 0) -> LossTerms:
    """One ALS sweep of a head: its user rows given the movies, then its movie rows given the users
    (exactly, or with ``cg_steps`` conjugate-gradient steps per side). Returns J after it.

    Updates ``f``'s tensors in place (θ, x and, with biases, b_u and b_i; μ stays fixed). J's data
    term comes from the movie side's blocks as they are solved: ½ (Σ_rated ((ŷ − t)² − w₀ŷ²) +
    w₀ Σ_all ŷ²), the all-cells sum in closed form from the users' Gramian."""
    from cfrec.models.losses import LossTerms, full_penalty  # at call time: the models import this module

    errors: list[Tensor] = []
    with torch.no_grad():
        _side(f.theta, f.user_bias, f.x, f.item_bias, f.mean, pen.l2_user, pen.l2_bias, pen.user_weight,
              data.by_user, w0, cg_steps)
        all_cells = _side(f.x, f.item_bias, f.theta, f.user_bias, f.mean, pen.l2_item, pen.l2_bias, pen.item_weight,
                          data.by_item, w0, cg_steps, errors)
        data_term = 0.5 * (errors[0] + w0 * all_cells)
        return LossTerms(data_term.float(), full_penalty(f, pen))


def _side(
    rows: Tensor, row_bias: Tensor | None, other: Tensor, other_bias: Tensor | None, mean: Tensor | None,
    l2: float, l2_bias: float, weight: Tensor | None, blocks: RowBlocks, w0: float, cg_steps: int,
    errors: list[Tensor] | None = None,
) -> Tensor | None:
    """Solve ``rows`` (and ``row_bias``) given the other side, in place; with ``errors``, also
    return Σ_all ŷ² at the solution (from the other side's Gramian) and append the rated cells' sum."""
    n, k = rows.shape
    scale = torch.ones(n, device=rows.device) if weight is None else weight  # (n,) the rows' penalty weights
    if row_bias is None:
        fixed, offset = other.detach(), None
        reg = (l2 * scale)[:, None].expand(n, k).contiguous()
        start = rows.detach()
    else:
        fixed = torch.cat([other.detach(), torch.ones_like(other[:, :1])], dim=1)  # (n_cols, k + 1): [x, 1]
        offset = (mean + other_bias).detach()  # (n_cols,)
        reg = torch.cat([(l2 * scale)[:, None].expand(n, k), (l2_bias * scale)[:, None]], dim=1)  # (n, k + 1)
        start = torch.cat([rows.detach(), row_bias.detach()[:, None]], dim=1)
    z = solve_rows(blocks, fixed, offset, reg, w0, start, cg_steps, errors)
    rows.copy_(z[:, :k])
    if row_bias is not None:
        row_bias.copy_(z[:, k])
    if errors is None:
        return None
    zd, fd = z.double(), fixed.double()
    all_cells = ((zd @ (fd.T @ fd)) * zd).sum()  # Σ_rows Σ_cols (F_c·z_r)²
    if offset is not None:
        od = offset.double()
        all_cells = all_cells + 2 * (zd @ (fd.T @ od)).sum() + n * od.dot(od)
    return all_cells
