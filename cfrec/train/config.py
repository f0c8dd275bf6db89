"""`TrainConfig`: every option of the training loop, typed and validated."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping

from cfrec.errors import ConfigError
from cfrec.threads import parse_threads

OPTIMIZERS = ("adam", "adamw", "sgd", "sparse_adam")
SPARSE_OPTIMIZERS = ("sparse_adam",)  # steps that touch only the rows a batch holds (cfrec.train.sparse)
SCHEDULES = ("constant", "cosine", "exponential")
LAYOUTS = ("auto", "dense", "index")
MONITORS = ("auto", "loss", "val_rmse", "val_mae", "val_accuracy", "val_recall@10", "val_recall@50",
            "val_ndcg@10", "val_ndcg@50")
MINIMISED = ("loss", "val_rmse", "val_mae")


@dataclass(frozen=True)
class TrainConfig:
    """How a learned model is trained. Each field is one key of the ``train`` config group.

    The defaults were tuned on MovieLens 1M for `CollaborativeFiltering` (and suit
    `ContentBased`); ``docs/learned_models.md`` shows the sweep.

    - ``optimizer``: ``adam``, ``adamw``, ``sgd`` or ``sparse_adam`` (lazy Adam on the rows each
      index-layout batch holds, the weighted mask's all-cells term through exact Gramians: a step
      costs O(batch) at any catalog size; one process, no ``weight_decay``; `cfrec.train.sparse`);
      ``lr`` its learning rate, ``momentum`` SGD's momentum, ``weight_decay`` the optimizer's own
      decay (on top of the loss's λ; 0 = none).
      The optimizer sees J divided by the ratings per batch, so ``lr`` does not depend on
      ``batch_size``.
    - ``epochs``: passes over the training ratings; ``batch_size``: ratings per step (``None`` =
      full-batch gradient descent, as in the notes).
    - ``schedule``: ``constant``, ``cosine`` (down to ``lr * lr_min_ratio`` at the last epoch)
      or ``exponential`` (× ``gamma`` per epoch).
    - ``val_fraction``: share of each user's ratings carved from train to validate every epoch
      (at least one rating of each user with 5 or more; 0 = none); the model's objective says
      what it measures there (RMSE for ratings, Recall@K / NDCG@K for rankings);
      ``monitor``: the metric to follow (``auto``: the objective's own — ``val_rmse`` for
      ``squared`` and ``joint``, ``val_ndcg@10`` for ``weighted`` and ``bpr``; or ``loss``);
      ``patience``: stop after that many epochs without an improvement of ``monitor`` by more than
      ``min_delta`` (``None`` = never); ``restore_best``: end with the best epoch's parameters.
    - ``layout``: ``dense`` (Y, R tensors), ``index`` (rated triples) or ``auto`` (dense while
      users × items ≤ ``dense_max_cells``); ``device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    - ``seed``: initialization and batch order; CPU runs are bit-for-bit repeatable.
    - ``progress``: tqdm bar over epochs (``None`` = only on a terminal).
    - ``threads``: torch CPU threads of the run (``cfrec.threads``): ``None`` = the top-level
      ``threads``, else ``$CFREC_THREADS``, else 1; ``0`` = every usable CPU. The apps apply it.
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

    def __post_init__(self) -> None:
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("layout", self.layout, LAYOUTS)
        _choice("monitor", self.monitor, MONITORS)
        _positive("lr", self.lr)
        _positive("epochs", self.epochs, integer=True)
        if self.batch_size is not None:
            _positive("batch_size", self.batch_size, integer=True)
        _positive("dense_max_cells", self.dense_max_cells, integer=True)
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError("momentum", f"must lie in [0, 1), got {self.momentum!r}")
        if self.weight_decay < 0:
            raise ConfigError("weight_decay", f"must be non-negative, got {self.weight_decay!r}")
        if self.weight_decay and self.optimizer in SPARSE_OPTIMIZERS:
            raise ConfigError("weight_decay", f"{self.optimizer} has none (it would touch every row); the loss's l2 regularises")
        if not 0.0 <= self.lr_min_ratio <= 1.0:
            raise ConfigError("lr_min_ratio", f"must lie in [0, 1], got {self.lr_min_ratio!r}")
        if not 0.0 < self.gamma <= 1.0:
            raise ConfigError("gamma", f"must lie in (0, 1], got {self.gamma!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError("val_fraction", f"must lie in [0, 1), got {self.val_fraction!r}")
        if self.patience is not None:
            _positive("patience", self.patience, integer=True)
        if self.min_delta < 0:
            raise ConfigError("min_delta", f"must be non-negative, got {self.min_delta!r}")
        if self.monitor != "loss" and self.val_fraction == 0 and self.patience is not None:
            raise ConfigError("patience", f"early stopping on {self.monitor} needs val_fraction > 0")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError("device", f"must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError("seed", f"must be an integer, got {self.seed!r}")
        parse_threads(self.threads, "threads")
        if not isinstance(self.distributed, bool):
            raise ConfigError("distributed", f"must be true or false, got {self.distributed!r}")
        if self.distributed and self.optimizer in SPARSE_OPTIMIZERS:
            raise ConfigError("optimizer", f"{self.optimizer} trains in one process (its Gramians follow the rows "
                              "this process steps); use adam with distributed")

    @classmethod
    def from_dict(cls, options: Mapping[str, Any] | None = None, base: "TrainConfig | None" = None) -> "TrainConfig":
        """``base`` (default: the class defaults) with ``options`` applied; unknown keys are refused."""
        base = base or cls()
        options = dict(options or {})
        known = {f.name for f in fields(cls)}
        for key in options:
            if key not in known:
                raise ConfigError(key, f"unknown training option; known: {', '.join(sorted(known))}")
        return replace(base, **options)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, the inverse of ``from_dict``."""
        return asdict(self)


def monitor_mode(monitor: str) -> str:
    """``min`` for errors and the loss, ``max`` for accuracy, recall and NDCG."""
    return "min" if monitor in MINIMISED else "max"


def _choice(key: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(key, f"must be one of {', '.join(allowed)}; got {value!r}")


def _positive(key: str, value: object, integer: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not value > 0:
        raise ConfigError(key, f"must be a positive {'integer' if integer else 'number'}, got {value!r}")
