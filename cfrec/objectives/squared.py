"""Squared error on the rated cells (the textbook matrix-factorisation loss J); the model predicts ratings.

    J = ½ Σ_(u,i) rated (θ_uᵀx_i + μ + b_u + b_i − y_ui)² + λ/2 Σ_rows n^α ‖row‖² + λ_b/2 Σ n^α b²
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from cfrec.models.losses import LossTerms, dense_loss, index_loss, sparse_index_loss
from cfrec.train import als
from cfrec.objectives.base import Objective, check_options
from cfrec.train.batches import Batch, DenseBatch

if TYPE_CHECKING:
    from cfrec.models.factor import FactorModel
    from cfrec.train.als import AlsData
    from cfrec.models.foldin import FoldedUsers


class Squared(Objective):
    """Fits the rated cells only; ``predict`` answers ratings, ``recommend`` ranks by them."""

    name = "squared"
    solves_exactly = True
    sparse_steps = True

    def __init__(self, **options: Any):
        check_options(self.name, options, {})

    def als_sweep(self, model: "FactorModel", data: "AlsData", cg_steps: int = 0) -> LossTerms:
        return als.sweep(model.factors(), model.penalty(), data, cg_steps=cg_steps)

    def loss(self, model: "FactorModel", batch: Batch) -> LossTerms:
        return head_loss(model.factors(), model.penalty(), batch, **model.step_args(batch, "rating"))

    def fold_in(self, model: "FactorModel", items: Tensor, values: Tensor, users: Tensor, n_users: int) -> "FoldedUsers":
        from cfrec.models.foldin import FoldedUsers, seen_matrix

        rating = model.fold_in_head(model.factors(), model.penalty(), model.l2_exponent, items, values, users, n_users)
        return FoldedUsers(model, rating, rating, seen_matrix(users, items, n_users, model.n_items))


def head_loss(
    factors, penalty, batch: Batch, *, targets: Tensor | None = None, w0: float | None = None,
    rows=None, gramians=None, orphans=None, pattern=None,
) -> LossTerms:
    """The squared loss of one head on a batch of either layout (``targets`` replace the ratings).

    With ``rows`` (row-sparse steps, `FactorModel.step_args`): `sparse_index_loss`, the same J
    whose gradient touches only the batch's rows (and ``orphans``, the head's rows without ratings).
    ``pattern``: an index batch's whole-table pattern (`index_loss`), when a model shares one between heads."""
    if rows is not None:
        values = batch.values if targets is None else targets
        return sparse_index_loss(factors, penalty, rows, values, w0=w0, gramians=gramians, orphans=orphans)
    if isinstance(batch, DenseBatch):
        Y = batch.Y if targets is None else targets
        return dense_loss(factors, penalty, Y, batch.R, rows=batch.rows, fraction=batch.fraction, w0=w0)
    values = batch.values if targets is None else targets
    return index_loss(
        factors, penalty, batch.users, batch.items, values,
        user_share=batch.user_share, item_share=batch.item_share, fraction=batch.fraction, w0=w0, pattern=pattern,
    )


def binary_targets(batch: Batch) -> Tensor:
    """1 on every rated cell of the batch (0 elsewhere in the dense layout)."""
    if isinstance(batch, DenseBatch):
        return batch.R
    return torch.ones_like(batch.values)
