"""`TrainConfig`: every option of the training loop, typed and validated."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from cfrec.device import check_device
from cfrec.errors import ConfigError
from cfrec.precision import GRAMIAN_PRECISIONS
from cfrec.threads import parse_threads
from cfrec.validation import (
    check_bool,
    check_choice,
    check_int,
    check_keys,
    check_number,
)

OPTIMIZERS = ("adam", "adamw", "sgd", "als", "sparse_adam")
SPARSE_OPTIMIZERS = ("sparse_adam",)  # steps that touch only the rows a batch holds (cfrec.train.sparse)
SCHEDULES = ("constant", "cosine", "exponential")
LAYOUTS = ("auto", "dense", "index")
MONITORS = ("auto", "loss", "val_rmse", "val_mae", "val_accuracy", "val_recall@10", "val_recall@50",
            "val_ndcg@10", "val_ndcg@50")
MINIMISED = ("loss", "val_rmse", "val_mae")
MIN_BATCH_SIZE = 1024  # min_batches never shrinks a batch below this many ratings


@dataclass(frozen=True)
class TrainConfig:
    """How a learned model is trained. Each field is one key of the ``train`` config group.

    The defaults were tuned on MovieLens 1M for `CollaborativeFiltering` (and suit
    `ContentBased`); ``docs/learned_models.md`` shows the sweep.

    - ``optimizer``: ``adam``, ``adamw``, ``sgd``, ``als`` or ``sparse_adam``. ``als``: alternating
      least squares: each epoch solves every user's, then every movie's ridge system exactly,
      `cfrec.train.als`; squared, weighted and joint objectives; ``lr``, ``batch_size`` and the
      schedule unused; ``als_cg_steps`` > 0 takes that many conjugate-gradient steps per row
      instead of exact solves, cheaper at large ranks. ``sparse_adam``: lazy Adam on the rows each
      index-layout batch holds, the weighted mask's all-cells term through exact Gramians: a step
      costs O(batch) at any catalog size; one process, no ``weight_decay``; `cfrec.train.sparse`.
      ``lr`` the learning rate, ``momentum`` SGD's momentum, ``weight_decay`` the optimizer's own
      decay (on top of the loss's λ; 0 = none).
      The optimizer sees J divided by the ratings per batch, so ``lr`` does not depend on
      ``batch_size``.
    - ``epochs``: passes over the training ratings; ``batch_size``: ratings per step (``None`` =
      full-batch gradient descent, as in the notes); ``min_batches``: the batch shrinks (not
      below 1,024 ratings) so that an epoch takes at least this many steps — a data set ten
      times smaller than MovieLens 1M still gets enough steps; ``max_batches``: the batch grows
      so that an epoch takes at most this many steps — on data larger than MovieLens 1M (55
      steps of 16,384) every row gets about as many updates per epoch as there, and an epoch
      costs (steps × rows) + ratings, linear in the ratings (``None`` for either: ``batch_size``
      as given).
    - ``schedule``: ``constant``, ``cosine`` (down to ``lr * lr_min_ratio`` at the last epoch)
      or ``exponential`` (× ``gamma`` per epoch).
    - ``val_fraction``: share of each user's ratings carved from train to validate every epoch
      (at least one rating of each user with 5 or more; 0 = none); the model's objective says
      what it measures there (RMSE for ratings, Recall@K / NDCG@K for rankings);
      ``monitor``: the metric to follow (``auto``: the objective's own — ``val_rmse`` for
      ``squared`` and ``joint``, ``val_ndcg@10`` for ``weighted`` and ``bpr``; or ``loss``);
      ``patience``: stop after that many epochs without an improvement of ``monitor`` by more than
      ``min_delta`` (``None`` = never); ``restore_best``: end with the best epoch's parameters;
      ``fold_back``: then that many more epochs (ALS sweeps) over all the ratings, the slice
      included, so the returned model has learnt from every rating (0 = none; the validation
      figures are those of the model before; a neighbourhood blend stays as chosen on the slice).
    - ``layout``: ``dense`` (Y, R tensors), ``index`` (rated triples) or ``auto`` (dense while
      users × items ≤ ``dense_max_cells``); ``device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    - ``seed``: initialization and batch order; CPU runs are bit-for-bit repeatable.
    - ``progress``: tqdm bar over epochs (``None`` = only on a terminal).
    - ``threads``: torch CPU threads of the run (``cfrec.threads``): ``None`` = the top-level
      ``threads``, else ``$CFREC_THREADS``, else 1; ``0`` = every usable CPU. The apps apply it.
    - ``reuse_memory``: during the epochs, keep large freed tensors' memory in the heap for the next
      step instead of fresh pages from the OS (glibc only; handed back after the last epoch;
      `cfrec.allocator`): the 25M-rating epoch dropped from 29.4 to 19.9 s; ``false`` leaves malloc
      as it is.
    - ``gramian_precision``: the weighted mask's whole-table Gramian products in ``full`` precision,
      ``bfloat16``, or ``auto`` (bfloat16 on CPUs with native bfloat16 once the tables hold 8M+
      numbers, as at ML-25M scale; `cfrec.precision`).
    - ``distributed``: data-parallel training (DDP) as one rank of a ``torchrun`` job: each rank
      holds a shard of the ratings and takes the same steps as one process would; see
      ``docs/distributed.md``. Outside torchrun it is a `ConfigError`.
    """

    optimizer: str = "adam"
    lr: float = 0.02
    momentum: float = 0.0
    weight_decay: float = 0.0
    epochs: int = 8
    batch_size: int | None = 16384
    min_batches: int | None = 50
    max_batches: int | None = 64
    schedule: str = "cosine"
    lr_min_ratio: float = 0.0
    gamma: float = 0.9
    val_fraction: float = 0.02
    patience: int | None = None
    min_delta: float = 0.0
    monitor: str = "auto"
    restore_best: bool = True
    layout: str = "auto"
    dense_max_cells: int = 1 << 25
    device: str = "auto"
    seed: int = 0
    progress: bool | None = None
    distributed: bool = False
    threads: int | None = None
    als_cg_steps: int = 0
    fold_back: int = 0
    reuse_memory: bool = True
    gramian_precision: str = "auto"

    def __post_init__(self) -> None:
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("layout", self.layout, LAYOUTS)
        check_choice("gramian_precision", self.gramian_precision, GRAMIAN_PRECISIONS)
        check_choice("monitor", self.monitor, MONITORS)
        check_number("lr", self.lr, 0, open_low=True)
        check_int("epochs", self.epochs, 1)
        if self.batch_size is not None:
            check_int("batch_size", self.batch_size, 1)
        if self.min_batches is not None:
            check_int("min_batches", self.min_batches, 1)
        if self.max_batches is not None:
            check_int("max_batches", self.max_batches, 1)
            if self.min_batches is not None and self.max_batches < self.min_batches:
                raise ConfigError("max_batches", f"{self.max_batches} is below min_batches ({self.min_batches})")
        check_int("dense_max_cells", self.dense_max_cells, 1)
        check_number("momentum", self.momentum, 0, 1, open_high=True)
        check_number("weight_decay", self.weight_decay, 0)
        check_number("lr_min_ratio", self.lr_min_ratio, 0, 1)
        check_number("gamma", self.gamma, 0, 1, open_low=True)
        check_number("val_fraction", self.val_fraction, 0, 1, open_high=True)
        if self.weight_decay and self.optimizer in SPARSE_OPTIMIZERS:
            raise ConfigError("weight_decay", f"{self.optimizer} has none (it would touch every row); the loss's l2 regularises")
        if self.patience is not None:
            check_int("patience", self.patience, 1)
        check_number("min_delta", self.min_delta, 0)
        if self.monitor != "loss" and self.val_fraction == 0 and self.patience is not None:
            raise ConfigError("patience", f"early stopping on {self.monitor} needs val_fraction > 0")
        check_device(self.device)
        check_int("seed", self.seed, 0)
        if self.progress is not None:
            check_bool("progress", self.progress)
        parse_threads(self.threads, "threads")
        check_int("als_cg_steps", self.als_cg_steps, 0)
        check_int("fold_back", self.fold_back, 0)
        check_bool("restore_best", self.restore_best)
        check_bool("reuse_memory", self.reuse_memory)
        check_bool("distributed", self.distributed)
        if self.distributed and self.optimizer in SPARSE_OPTIMIZERS:
            raise ConfigError("optimizer", f"{self.optimizer} trains in one process (its Gramians follow the rows "
                              "this process steps); use adam with distributed")

    @classmethod
    def from_dict(cls, options: Mapping[str, Any] | None = None, base: TrainConfig | None = None) -> TrainConfig:
        """``base`` (default: the class defaults) with ``options`` applied; unknown keys are refused."""
        base = base or cls()
        options = dict(options or {})
        check_keys("", options, [f.name for f in fields(cls)])
        return replace(base, **options)

    def effective_batch_size(self, n_ratings: int) -> int | None:
        """``batch_size``, made larger where an epoch of ``n_ratings`` would take more than
        ``max_batches`` steps and smaller where it would take fewer than ``min_batches`` (never
        below `MIN_BATCH_SIZE`); full batch stays full batch."""
        size = self.batch_size
        if size is None:
            return None
        if self.max_batches is not None:
            size = max(size, math.ceil(n_ratings / self.max_batches))
        if self.min_batches is not None:
            size = min(size, max(MIN_BATCH_SIZE, math.ceil(n_ratings / self.min_batches)))
        return size

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, the inverse of ``from_dict``."""
        return asdict(self)


def monitor_mode(monitor: str) -> str:
    """``min`` for errors and the loss, ``max`` for accuracy, recall and NDCG."""
    return "min" if monitor in MINIMISED else "max"

