"""Bayesian personalised ranking (Rendle et al., 2009): rated movies above sampled others.

For each rated (u, i) of a batch and ``negatives`` movies j drawn from the movies with a
training rating (the trainer's generator draws them, for the whole epoch at once, so a resumed
run and every rank of a torchrun job see the same ones):

    J = Σ_(u,i,j) softplus(−(s_ui − s_uj)) + λ/2 Σ_rows n^α ‖row‖² + λ_b/2 Σ_items n^α b_i²,
    s_ui = θ_uᵀx_i + b_i,

softplus(−d) = −log σ(d). Each j is the highest-scored of ``candidates`` uniform draws (hard
negatives, as in WARP; chosen without gradient under the current parameters, so every rank and a
resumed run pick the same; ``candidates`` 1 is the uniform j of plain BPR). The penalty of each
row is dealt out over its rated triples as in the squared objective, so an epoch of batches adds
up to J. Scores rank; they are not ratings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from cfrec.data.ratings import Ratings
from cfrec.errors import ConfigError
from cfrec.models.losses import LossTerms, share_penalty
from cfrec.objectives.base import Objective, check_options, positive_int, ranking_validation
from cfrec.train.batches import Batch, DenseLayout, IndexBatch, IndexLayout

if TYPE_CHECKING:
    from cfrec.models.factor import FactorModel


class BPR(Objective):
    """Options: ``negatives`` (sampled movies per rated one) and ``candidates`` (each negative is
    the highest-scored of that many uniform draws, WARP-like hard negatives; 1: plain BPR)."""

    name = "bpr"
    predicts_ratings = False
    ranks_by = "preference"
    monitor = "val_ndcg@10"
    layouts = ("index",)

    def __init__(self, **options: Any):
        options = check_options(self.name, options, {"negatives": 3, "candidates": 4})
        self.negatives = positive_int("negatives", options["negatives"])
        self.candidates = positive_int("candidates", options["candidates"])
        self._pool: torch.Tensor | None = None  # item codes with a training rating

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "negatives": self.negatives, "candidates": self.candidates}

    def init_heads(self, model: "FactorModel", train: Ratings, generator: torch.Generator) -> None:
        model.init_biases_zero(train)  # μ and b_u cancel in s_ui − s_uj; b_i starts at 0
        self._pool = torch.as_tensor(np.flatnonzero(train.item_counts() > 0))

    def batches(self, layout: DenseLayout | IndexLayout, batch_size: int | None,
                generator: torch.Generator) -> Iterator[Batch]:
        if not isinstance(layout, IndexLayout):
            raise ConfigError("train.layout", "the bpr objective trains on rated triples: use index (or auto)")
        return layout.batches(batch_size, generator, negative_pool=self._pool,
                              n_negatives=self.negatives * self.candidates)

    def loss(self, model: "FactorModel", batch: IndexBatch) -> LossTerms:
        f = model.factors()
        users, items, negatives = batch.users, batch.items, batch.negatives  # (n,), (n,), (n, m·c)
        theta = f.theta.index_select(0, users)  # (n, k)
        if self.candidates > 1:
            negatives = self._hardest(f, theta, negatives)  # (n, m)
        positive = (theta * f.x.index_select(0, items)).sum(dim=1)  # (n,)
        negative = torch.einsum("nk,nmk->nm", theta, f.x[negatives])  # (n, m)
        if f.biased:
            positive = positive + f.item_bias.index_select(0, items)
            negative = negative + f.item_bias[negatives]
        data = F.softplus(negative - positive[:, None]).sum()
        reg = share_penalty(f, model.penalty(), batch)
        return LossTerms(data, reg)

    def _hardest(self, f, theta: torch.Tensor, drawn: torch.Tensor) -> torch.Tensor:
        """Of each group of ``candidates`` draws, the movie the model scores highest (n, m)."""
        with torch.no_grad():
            drawn = drawn.view(len(drawn), self.negatives, self.candidates)  # (n, m, c)
            scores = torch.einsum("nk,nmck->nmc", theta, f.x[drawn])
            if f.biased:
                scores = scores + f.item_bias[drawn]
            return drawn.gather(2, scores.argmax(dim=2, keepdim=True)).squeeze(2)

    def validate(self, model: "FactorModel", fit_part: Ratings, val: Ratings, device: torch.device) -> dict[str, float]:
        return ranking_validation(model, fit_part, val, device)
