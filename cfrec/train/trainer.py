"""`Trainer`: the one gradient-descent loop of every learned model.

The model supplies its loss (`Trainable`); the trainer owns the data layout, batching,
optimizer, learning-rate schedule, validation, early stopping, divergence checks and the
per-epoch callbacks, and can hand out and take back its whole state for resuming. With
``distributed`` it trains data-parallel, one rank of a torchrun job (`cfrec.train.distributed`).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from cfrec.allocator import reuse_freed_memory
from cfrec.data.ratings import Ratings
from cfrec.data.split import per_user_split
from cfrec.device import resolve_device
from cfrec.errors import ConfigError, TrainingDiverged
from cfrec.precision import gramian_precision
from cfrec.train import distributed
from cfrec.train.als import AlsData
from cfrec.train.batches import Batch, choose_layout
from cfrec.train.config import SPARSE_OPTIMIZERS, TrainConfig, monitor_mode
from cfrec.train.distributed import Group
from cfrec.train.sparse import RowAdam, grad_values

if TYPE_CHECKING:  # the models import the trainer
    from cfrec.models.losses import LossTerms

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict[str, float], nn.Module], Any]
"""Called after every epoch with (epoch number from 1, metrics, model); returning True stops training."""


class Trainable(Protocol):
    """What a model offers the trainer (`FactorModel` implements it, its objective deciding)."""

    monitor: str  # the validation metric to watch unless the config names one
    validation_keys: tuple[str, ...]  # the metrics ``validation_metrics`` returns
    layouts: tuple[str, ...]  # the batch layouts its loss is defined on

    def prepare(self, train: Ratings, generator: torch.Generator, device: torch.device) -> None:
        """Allocate and initialise the parameters for ``train`` on ``device``."""

    def __call__(self, batch: Batch) -> LossTerms:
        """J's data and regularization terms on one batch (the module's ``forward``)."""

    def training_batches(self, layout, batch_size: int | None, generator: torch.Generator) -> Iterator[Batch]:
        """The epoch's batches from ``layout``, drawn with ``generator``."""

    def validation_metrics(self, fit_part: Ratings, val: Ratings, device: torch.device) -> dict[str, float]:
        """Metrics (``val_*``) of the model on held-out ratings ``val`` of ``fit_part``."""

    def als_sweep(self, data: AlsData, cg_steps: int = 0) -> LossTerms:
        """One closed-form sweep of every head (``optimizer=als``; `cfrec.train.als`); J after it."""

    def count_rows(self, train: Ratings, device: torch.device) -> None:
        """Rebase what depends on the training ratings' counts (penalty row weights) on ``train``."""

    def finish(self, fit_part: Ratings, val: Ratings | None, device: torch.device) -> None:
        """After the last epoch (and ``restore_best``): fit what is not trained by the loop, e.g. the
        neighbourhood blend's weight on ``val`` (`cfrec.models.blend`)."""

    def after_step(self) -> None:
        """After every optimizer step: restore what the parameters hold fixed (a packed head's ones)."""

    def parameters(self): ...

    def state_dict(self) -> dict[str, Tensor]: ...

    def load_state_dict(self, state: dict[str, Tensor]) -> Any: ...


class Trainer:
    """Trains a `Trainable` model on a `Ratings` according to a `TrainConfig`.

    Metrics of every epoch go to ``history`` and to each callback: ``epoch``, ``loss`` (J),
    ``loss_data`` and ``loss_reg`` (its two terms, summed over the epoch's batches),
    ``loss_per_rating`` (J / training ratings, comparable across data sets), ``lr``,
    ``grad_norm`` (mean over steps), ``seconds`` and, with a validation slice, what the model's
    objective validates on (``val_rmse``, ``val_mae``, ``val_accuracy`` for ratings;
    ``val_recall@K``, ``val_ndcg@K`` for rankings). ``monitor`` (``train.monitor``, or the
    objective's own choice under ``auto``) is the metric early stopping and ``restore_best`` follow.
    """

    def __init__(self, config: TrainConfig | None = None, callbacks: Sequence[EpochCallback] = ()):
        self.config = config or TrainConfig()
        self.callbacks = list(callbacks)
        self.model: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        self._resume: dict[str, Any] | None = None
        self.batch_size = self.config.batch_size  # per step; `fit` applies min_batches for its data
        self._reset()

    def _reset(self) -> None:
        """Fresh run state: epoch 0, empty history, batch order from the seed."""
        self.history: list[dict[str, float]] = []
        self.epoch = 0
        self.generator = torch.Generator().manual_seed(self.config.seed + 1)
        self.best: dict[str, Any] = {"value": None, "epoch": 0, "bad_epochs": 0, "state": None}

    # -- state for resuming -------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue: model, optimizer, schedule, epoch, RNG, early stopping."""
        if self.model is None:
            raise RuntimeError("Trainer.state_dict() before fit(): nothing to save yet")
        return {
            "epoch": self.epoch,
            "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "optimizer": None if self.optimizer is None else copy.deepcopy(self.optimizer.state_dict()),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "best": copy.deepcopy(self.best),
            "history": copy.deepcopy(self.history),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from ``state_dict()``: the next ``fit`` continues after ``state['epoch']``.

        Without it, every ``fit`` starts afresh from the seed.
        """
        self._resume = state

    # -- the loop -----------------------------------------------------------------------
    def fit(self, model: Trainable, train: Ratings) -> Trainable:
        """Train ``model`` on ``train`` (minus the validation slice) and return it.

        With ``distributed``, every rank of the torchrun job calls this with the same ``train``
        and ends with the same parameters; rank 0 alone validates (and shows progress).
        """
        if not self.config.distributed:
            return self._fit(model, train, resolve_device(self.config.device), distributed.SingleProcess())
        distributed.check_launch()
        device = distributed.rank_device(resolve_device(self.config.device))
        return self._fit(model, train, device, distributed.join(device))

    def _fit(self, model: Trainable, train: Ratings, device: torch.device, group: Group) -> Trainable:
        cfg = self.config
        self.monitor = model.monitor if cfg.monitor == "auto" else cfg.monitor
        if self.monitor != "loss" and self.monitor not in model.validation_keys:
            raise ConfigError("train.monitor", f"{self.monitor} is not measured for this model; it validates on "
                              f"{', '.join(model.validation_keys)}")
        if cfg.optimizer == "als":
            check_als(model, group)
        sparse = cfg.optimizer in SPARSE_OPTIMIZERS
        if sparse:
            self._check_sparse(model)
        fit_part, val = self._carve_validation(train)
        layout = self._layout(model, fit_part, device, group)
        model.prepare(fit_part, torch.Generator().manual_seed(cfg.seed), device)
        if sparse:
            model.use_sparse_steps(fit_part, device)
        self.model = model
        step_model = group.wrap(model)
        self.optimizer = self._make_optimizer(model)
        if self.optimizer is not None:
            self.optimizer.register_step_post_hook(lambda *_: model.after_step())
        self.scheduler = self._make_scheduler(self.optimizer)
        if self._resume is not None:
            self._apply_resume(model, self._resume)
        else:
            self._reset()
        n_batches, scale = self._steps(layout, group)
        log.info(
            "training %s: %s layout, %d ratings%s, %d batch(es) per epoch%s, %s on %s",
            type(model).__name__, layout.name, layout.n_ratings,
            f" (+{len(val)} held out to validate each epoch)" if val is not None else "", n_batches,
            f" of {self.batch_size}" if self.batch_size and n_batches > 1 else "", cfg.optimizer, device,
        )
        if group.shard is not None:
            log.info("rank %d of %d holds %d of the %d ratings", group.rank, group.world_size, layout.n_held, layout.n_ratings)
        start = time.perf_counter()
        disable = True if not group.is_main else _bar_disabled(cfg.progress)
        bar = tqdm(range(self.epoch, cfg.epochs), desc=type(model).__name__, disable=disable, leave=False)
        with self._epoch_policies():
            for epoch in bar:
                epoch_metrics = self._run(model, step_model, layout, scale, epoch, group)
                if val is not None:
                    epoch_metrics.update(group.from_main(lambda: model.validation_metrics(fit_part, val, device)))
                if self.scheduler is not None:
                    self.scheduler.step()
                self.epoch = epoch + 1
                stop = self._early_stop(model, epoch_metrics)
                self.history.append(epoch_metrics)
                bar.set_postfix({k: f"{epoch_metrics[k]:.4g}" for k in ("loss_per_rating", self.monitor) if k in epoch_metrics})
                log.debug("epoch %d: %s", self.epoch, epoch_metrics)
                asked_to_stop = [callback(self.epoch, epoch_metrics, model) is True for callback in self.callbacks]
                if group.any(stop or any(asked_to_stop)):  # every rank stops after the same epoch
                    break
        bar.close()
        if cfg.restore_best and self.best["state"] is not None and self.best["epoch"] != self.epoch:
            model.load_state_dict(self.best["state"])
            log.info("restored the parameters of epoch %d (%s %.5f)", self.best["epoch"], self.monitor, self.best["value"])
        model.finish(fit_part, val, device)
        if cfg.fold_back and val is not None:
            self._fold_back(model, step_model, train, device, group)
        log.info("trained %d epoch(s) in %.2f s", self.epoch, time.perf_counter() - start)
        return model

    @contextlib.contextmanager
    def _epoch_policies(self) -> Iterator[None]:
        """What holds over the epochs: large temporaries reuse freed heap memory (handed back to the
        OS after the last epoch), and the Gramian products' precision (`cfrec.precision`)."""
        with reuse_freed_memory(self.config.reuse_memory), gramian_precision(self.config.gramian_precision):
            yield

    def _layout(self, model: Trainable, train: Ratings, device: torch.device, group: Group):
        """The batches' source for ``train`` (this rank's shard of it), ``batch_size`` set for its size."""
        cfg = self.config
        self.batch_size = cfg.effective_batch_size(len(train))
        if cfg.optimizer == "als":
            return AlsLayout(train, device)
        sparse = cfg.optimizer in SPARSE_OPTIMIZERS
        return choose_layout("index" if sparse and cfg.layout == "auto" else cfg.layout, train, device,
                             cfg.dense_max_cells, self.batch_size, group.shard, allowed=model.layouts)

    def _steps(self, layout, group: Group) -> tuple[int, float]:
        """(batches per epoch, the factor from J to what the optimizer sees)."""
        n_batches = layout.n_batches(self.batch_size)
        # the optimizer sees J per rating; × world size as DDP averages the ranks' gradients, where J adds them
        return n_batches, n_batches / layout.n_ratings * group.world_size

    def _run(self, model: Trainable, step_model: nn.Module, layout, scale: float, epoch: int, group: Group) -> dict[str, float]:
        """One epoch: an ALS sweep or a pass of gradient steps over ``layout``."""
        if isinstance(layout, AlsLayout):
            return self._run_sweep(model, layout, epoch)
        return self._run_epoch(model, step_model, layout, scale, epoch, group)

    def _fold_back(self, model: Trainable, step_model: nn.Module, train: Ratings, device: torch.device,
                   group: Group) -> None:
        """``fold_back`` more epochs (sweeps) over all of ``train``, the validation slice included: the
        returned model learns from every rating after validation has measured it (and chosen its epoch).
        Gradient optimizers take them at the last epoch's learning rate (a schedule may have run it down to 0)."""
        start = time.perf_counter()
        if self.optimizer is not None and self.history:
            for param_group in self.optimizer.param_groups:
                param_group["lr"] = self.history[-1]["lr"]
        layout = self._layout(model, train, device, group)
        model.count_rows(train, device)
        _, scale = self._steps(layout, group)
        with self._epoch_policies():
            for extra in range(self.config.fold_back):
                metrics = self._run(model, step_model, layout, scale, self.epoch + extra, group)
        log.info("folded the validation slice back in: %d more epoch(s) over all %d ratings in %.2f s (J per rating %.5g)",
                 self.config.fold_back, layout.n_ratings, time.perf_counter() - start, metrics["loss_per_rating"])

    def _run_epoch(
        self, model: Trainable, step_model: nn.Module, layout, scale: float, epoch: int, group: Group,
    ) -> dict[str, float]:
        """One pass over the batches; returns the epoch's training metrics (of all ranks' shards)."""
        start = time.perf_counter()
        params = [p for p in step_model.parameters() if p.requires_grad]
        sums = torch.zeros(3, dtype=torch.float64, device=params[0].device)  # data, reg, grad norm
        steps = 0
        for step, batch in enumerate(model.training_batches(layout, self.batch_size, self.generator)):
            terms = step_model(batch)
            self.optimizer.zero_grad(set_to_none=True)
            (terms.total * scale).backward()  # with DDP: the gradient of the whole batch on every rank
            norm = torch.nn.utils.get_total_norm([grad_values(p.grad) for p in params if p.grad is not None])
            batch_terms = group.sum(torch.stack([terms.data.detach(), terms.reg.detach()]))  # J's data, reg
            _check_finite(batch_terms.sum(), norm, epoch, step, self.config.lr)  # the step's one device sync
            self.optimizer.step()
            sums += torch.cat([batch_terms, norm.detach()[None]]).double()
            steps += 1
        data, reg, grad_norm = sums.tolist()
        return {
            "epoch": epoch + 1, "loss": data + reg, "loss_data": data, "loss_reg": reg,
            "loss_per_rating": (data + reg) / max(layout.n_ratings, 1),
            "lr": self.optimizer.param_groups[0]["lr"], "grad_norm": grad_norm / max(steps, 1),
            "seconds": time.perf_counter() - start,
        }

    def _run_sweep(self, model: Trainable, layout: AlsLayout, epoch: int) -> dict[str, float]:
        """One alternating-least-squares sweep (``optimizer=als``); returns J after it."""
        start = time.perf_counter()
        terms = model.als_sweep(layout.data, self.config.als_cg_steps)
        data, reg = float(terms.data), float(terms.reg)
        _check_finite(torch.tensor(data + reg), torch.zeros(()), epoch, 0, self.config.lr)
        return {
            "epoch": epoch + 1, "loss": data + reg, "loss_data": data, "loss_reg": reg,
            "loss_per_rating": (data + reg) / max(layout.n_ratings, 1), "seconds": time.perf_counter() - start,
        }

    def _early_stop(self, model: Trainable, epoch_metrics: dict[str, float]) -> bool:
        """Track the best epoch of the monitored metric; True when patience has run out."""
        cfg = self.config
        if self.monitor not in epoch_metrics:
            return False
        value, best = epoch_metrics[self.monitor], self.best["value"]
        if not math.isfinite(value):  # nothing measured (e.g. no liked item held out): no epoch is better
            return False
        sign = 1.0 if monitor_mode(self.monitor) == "min" else -1.0
        if best is None or sign * value < sign * best - cfg.min_delta:
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self.best = {"value": value, "epoch": self.epoch, "bad_epochs": 0, "state": state}
            return False
        self.best["bad_epochs"] += 1
        return cfg.patience is not None and self.best["bad_epochs"] >= cfg.patience

    def _carve_validation(self, train: Ratings) -> tuple[Ratings, Ratings | None]:
        if self.config.val_fraction == 0:
            return train, None
        split = per_user_split(train, test_ratio=self.config.val_fraction, seed=self.config.seed, method="vectorized")
        if len(split.test) == 0:  # too few ratings per user to hold any out: train on all, validate nothing
            log.warning("train.val_fraction=%s holds out no rating of %s: no validation", self.config.val_fraction, train.name)
            return train, None
        return split.train, split.test

    def _check_sparse(self, model: Trainable) -> None:
        """Row-sparse steps need an objective with a row-sparse loss and the index layout."""
        cfg = self.config
        if not getattr(model, "sparse_steps", False):
            name = getattr(getattr(model, "objective", None), "name", type(model).__name__)
            raise ConfigError("train.optimizer", f"{cfg.optimizer}: {name} has no row-sparse loss; use adam")
        if cfg.layout == "dense":
            raise ConfigError("train.layout", f"dense: {cfg.optimizer} steps the rows of index-layout batches; "
                              "use layout index or auto")

    def _make_optimizer(self, model: Trainable) -> torch.optim.Optimizer | None:
        cfg = self.config
        if cfg.optimizer == "als":  # closed-form sweeps: no gradient optimizer
            return None
        params = [p for p in model.parameters() if p.requires_grad]
        if cfg.optimizer == "sparse_adam":  # lazy Adam on the rows each batch holds (cfrec.train.sparse)
            return RowAdam(params, lr=cfg.lr)
        # fused kernels: one pass over each tensor per step instead of a dozen (CPU and CUDA)
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, fused=True)
        if cfg.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)

    def _make_scheduler(self, optimizer: torch.optim.Optimizer | None) -> torch.optim.lr_scheduler.LRScheduler | None:
        cfg = self.config
        if optimizer is None:
            return None
        if cfg.schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs, eta_min=cfg.lr * cfg.lr_min_ratio)
        if cfg.schedule == "exponential":
            return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=cfg.gamma)
        return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)

    def _apply_resume(self, model: Trainable, state: dict[str, Any]) -> None:
        model.load_state_dict(state["model"])
        if (state["optimizer"] is None) != (self.optimizer is None):
            raise ConfigError("train.optimizer", f"the saved state was trained with another optimizer than {self.config.optimizer}")
        if self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        self.epoch = int(state["epoch"])
        self.best = copy.deepcopy(state["best"])
        self.history = copy.deepcopy(state["history"])
        self._resume = None
        log.info("resuming after epoch %d", self.epoch)


class AlsLayout:
    """What ``optimizer=als`` trains on: the ratings grouped by user and by movie (`AlsData`)."""

    name = "als"

    def __init__(self, train: Ratings, device: torch.device):
        self.data = AlsData.build(train, device)
        self.n_ratings = self.n_held = len(train)

    def n_batches(self, batch_size: int | None) -> int:
        return 1


def check_als(model: Trainable, group: Group) -> None:
    """``optimizer=als`` needs an objective with closed-form row updates, learned movie factors
    and one process."""
    objective = getattr(model, "objective", None)
    if objective is None or not objective.solves_exactly:
        name = getattr(objective, "name", type(model).__name__)
        raise ConfigError("train.optimizer", f"als solves the squared, weighted and joint objectives; {name} trains "
                          "with adam, adamw or sgd")
    if not getattr(model, "learns_items", False):
        raise ConfigError("train.optimizer", f"als alternates users and learned movie factors; {type(model).__name__} "
                          "has fixed movie features: train it with adam, adamw or sgd")
    if group.world_size > 1:
        raise ConfigError("train.optimizer", "als runs in one process; train.distributed=true needs adam, adamw or sgd")


def _check_finite(loss: Tensor, grad_norm: Tensor, epoch: int, step: int, lr: float) -> None:
    """Raise `TrainingDiverged` when the batch's J or the gradient is not finite (the same on every rank)."""
    if not bool(torch.isfinite(loss) & torch.isfinite(grad_norm)):
        what = "loss" if not torch.isfinite(loss) else "gradient norm"
        value = loss.item() if what == "loss" else grad_norm.item()
        raise TrainingDiverged(
            f"training diverged in epoch {epoch + 1}, step {step + 1}: the {what} is {value}; "
            f"the parameters are those before this step. Lower train.lr (now {lr}) or raise the model's l2"
        )


def _bar_disabled(progress: bool | None) -> bool | None:
    return None if progress is None else not progress
