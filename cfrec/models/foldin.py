"""Fold-in: fit new users' vectors in closed form with the item side frozen, then score them.

For one user with augmented vector z = [θ, b] (just θ without biases), item rows
x̃_j = [x_j, 1] and offsets o_j = μ + b_j, the model's own loss restricted to that user,

    ½ Σ_j w_j (zᵀx̃_j + o_j − t_j)² + ½ zᵀ diag(λ, …, λ, λ_b) z,

is a ridge regression whose normal equations are solved exactly (t_j = rating and w_j = 1 on
rated items; with the weighted mask also t_j = 0 and w_j = w₀ on every other item). At a
converged model this is exactly the fitted θ of a training user.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from cfrec.models.base import mask_seen


def solve_users(
    item_rows: Tensor, item_offset: Tensor, reg: Tensor, users: Tensor, items: Tensor, values: Tensor,
    n_users: int, w0: float | None = None, reg_scale: Tensor | None = None, chunk_floats: int = 1 << 22,
) -> Tensor:
    """Ridge solutions z (n_users, f) for ratings given as local user rows 0..n_users-1.

    ``item_rows`` (n_items, f) are the frozen x̃, ``item_offset`` (n_items,) the o_j, ``reg`` (f,)
    the diagonal penalty, ``reg_scale`` (n_users,) each user's multiplier of it (count-scaled
    regularization). Gram matrices are accumulated in chunks of at most ``chunk_floats``.
    """
    f = item_rows.shape[1]
    rows = item_rows[items].double()  # (n, f)
    target = values.double() - item_offset[items].double()  # (n,)
    weight = 1.0 if w0 is None else 1.0 - w0  # rated cells on top of the w0 every cell has
    gram = torch.zeros(n_users, f, f, dtype=torch.float64, device=item_rows.device)
    step = max(1, chunk_floats // (f * f))
    for start in range(0, len(users), step):
        part = rows[start : start + step]  # (c, f)
        gram.index_add_(0, users[start : start + step], weight * part[:, :, None] * part[:, None, :])
    rhs = torch.zeros(n_users, f, dtype=torch.float64, device=item_rows.device)
    rhs.index_add_(0, users, rows * target[:, None])  # Σ_rated x̃ (t − o)
    if w0 is not None:
        all_rows = item_rows.double()
        gram += w0 * (all_rows.T @ all_rows)  # every cell at weight w0
        rhs -= w0 * (all_rows.T @ item_offset.double())  # unrated cells: t = 0
        rhs.index_add_(0, users, w0 * rows * item_offset[items].double()[:, None])  # rated cells are not unrated
    penalty = torch.diag(reg.double())  # (f, f)
    gram += penalty if reg_scale is None else reg_scale.double()[:, None, None] * penalty
    return torch.linalg.solve(gram, rhs.unsqueeze(-1)).squeeze(-1)


@dataclass
class FoldedUsers:
    """Users folded into a fitted model: their vectors and what they rated, ready to score.

    Rows are the new users in the order they were given (0..n-1); items are the model's codes.
    ``rating`` holds their rating-head (θ, bias) — None where the model does not predict
    ratings — and ``ranking`` the (θ, bias) of the head that ranks (the same pair for
    single-head objectives); a bias is None for an unbiased model.
    """

    model: "torch.nn.Module"  # the FactorModel they were folded into
    rating: tuple[Tensor, Tensor | None] | None
    ranking: tuple[Tensor, Tensor | None]
    seen: sp.csr_matrix  # (n, n_items) the ratings they were folded in from

    @property
    def theta(self) -> Tensor:
        """(n, k) vectors in the model's own factor space (its rating head where it has one)."""
        return (self.rating or self.ranking)[0]

    @property
    def bias(self) -> Tensor | None:
        return (self.rating or self.ranking)[1]

    def __len__(self) -> int:
        return self.theta.shape[0]

    def score(self, rows: Tensor | None = None) -> Tensor:
        """Unclipped ranking scores (len(rows), n_items) of the given new users (all when None)."""
        rows = torch.arange(len(self)) if rows is None else torch.as_tensor(rows)
        theta, bias = self.ranking
        return self.model.score_vectors(theta[rows], None if bias is None else bias[rows])

    def predict(self, rows: Tensor, items: Tensor) -> Tensor:
        """Predicted ratings (n,) for (new-user row, item code) pairs, clipped like the model's."""
        self.model.check_predicts_ratings()
        rows, items = torch.as_tensor(rows), torch.as_tensor(items)
        theta, bias = self.rating
        return self.model.predict_vectors(theta[rows], None if bias is None else bias[rows], items)

    def recommend(self, k: int = 10, rows: Tensor | None = None, exclude_seen: bool = True) -> tuple[Tensor, Tensor]:
        """Top-``k`` item codes and scores per new user, (len(rows), k) each."""
        rows = torch.arange(len(self)) if rows is None else torch.as_tensor(rows)
        scores = self.score(rows).float()
        if exclude_seen:
            mask_seen(scores, torch.arange(len(rows)), self.seen[rows.cpu().numpy()])
        top = torch.topk(scores, min(k, scores.shape[1]), dim=1)
        return top.indices, top.values


def seen_matrix(users: Tensor, items: Tensor, n_users: int, n_items: int) -> sp.csr_matrix:
    """Boolean CSR (n_users, n_items) of the given pairs."""
    u, i = users.cpu().numpy(), items.cpu().numpy()
    return sp.csr_matrix((np.ones(len(u), dtype=bool), (u, i)), shape=(n_users, n_items))
