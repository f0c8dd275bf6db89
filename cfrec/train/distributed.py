"""Data-parallel training over torch.distributed, in processes launched by ``torchrun``.

Every rank holds a full replica of the model and one shard of the training ratings: the
ratings ``rank::world_size`` (index layout) or the users ``rank::world_size`` with their whole
rating rows (dense layout). All ranks draw the same batch order from the seed and each one
computes J's terms on its part of every batch, so the parts add up to the single-process
batch. DistributedDataParallel averages the ranks' gradients; the trainer multiplies each
rank's objective by the world size, so the average is the sum: the gradient of the whole
batch, the same step as one process takes (up to the order of float additions).

Rank 0 alone validates; it broadcasts the metrics, and every stop decision is agreed by a
collective, so all ranks run the same number of steps and never wait on each other in vain.
See ``docs/distributed.md``.
"""

from __future__ import annotations

import atexit
import inspect
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from cfrec.errors import ConfigError

log = logging.getLogger(__name__)

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
"""The variables torchrun sets for each process that `torch.distributed` needs to connect."""

CodeArray = TypeVar("CodeArray", Tensor, np.ndarray)

# buffers (μ, content features) never change in training: no broadcast before every step
# (newer torch names the option forward_sync_buffers and deprecates broadcast_buffers)
_NO_BUFFER_SYNC = (
    {"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
    else {"broadcast_buffers": False}
)


def launched_rank() -> int:
    """The global rank torchrun gave this process (``RANK``); 0 outside torchrun."""
    return int(os.environ.get("RANK", "0"))


def launched_world_size() -> int:
    """How many processes torchrun started in all (``WORLD_SIZE``); 1 outside torchrun."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def check_launch(key: str = "distributed") -> None:
    """Raise a `ConfigError` naming ``key`` unless this process can join a process group."""
    if not dist.is_available():
        raise ConfigError(key, "this torch build has no torch.distributed")
    if dist.is_initialized():
        return
    missing = [name for name in TORCHRUN_ENV if name not in os.environ]
    if missing:
        raise ConfigError(
            key, f"true needs a process started by torchrun, but {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not set: launch "
            "`torchrun --nproc_per_node=N -m cfrec.apps.train ... train.distributed=true`, or set it to false",
        )


def rank_device(device: torch.device) -> torch.device:
    """The device of this rank: ``cuda`` (no index) becomes ``cuda:LOCAL_RANK`` and the current device."""
    if device.type != "cuda":
        return device
    if device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    torch.cuda.set_device(device)
    return device


@dataclass(frozen=True)
class Shard:
    """The part of the training data one rank holds: the codes ``rank::world_size``.

    Codes are rating rows (index layout) or user codes (dense layout); code ``c`` lives on
    rank ``c % world_size`` as local row ``c // world_size``.
    """

    rank: int
    world_size: int

    def rows(self, n: int) -> np.ndarray:
        """The codes of this shard among ``n``, ascending."""
        return np.arange(self.rank, n, self.world_size)

    def owns(self, codes: CodeArray) -> CodeArray:
        """Mask of the ``codes`` (a tensor or an array) this shard holds."""
        return codes % self.world_size == self.rank

    def local(self, codes: CodeArray) -> CodeArray:
        """Local rows of codes this shard holds."""
        return codes // self.world_size


class Group(Protocol):
    """What the trainer needs from its peers: one process alone, or the ranks of a process group."""

    rank: int
    world_size: int
    is_main: bool  # rank 0: validates, logs and writes
    shard: Shard | None  # None: this process holds all the data

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module to call for the training steps."""

    def sum(self, tensor: Tensor) -> Tensor:
        """``tensor`` summed over the ranks (in place)."""

    def from_main(self, compute: Callable[[], dict[str, float]]) -> dict[str, float]:
        """``compute()`` run on rank 0, its result on every rank."""

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any."""


class SingleProcess:
    """Training in this process alone: every collective is the identity."""

    rank, world_size, is_main, shard = 0, 1, True, None

    def wrap(self, model: nn.Module) -> nn.Module:
        return model

    def sum(self, tensor: Tensor) -> Tensor:
        return tensor

    def from_main(self, compute: Callable[[], dict[str, float]]) -> dict[str, float]:
        return compute()

    def any(self, flag: bool) -> bool:
        return flag


class DataParallel:
    """This rank of the default process group, training on ``device``."""

    def __init__(self, device: torch.device):
        self.device = device
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.is_main = self.rank == 0
        self.shard = Shard(self.rank, self.world_size)

    def wrap(self, model: nn.Module) -> nn.Module:
        # DDP broadcasts rank 0's parameters and buffers once here; gradients live in its buckets, not twice
        return DistributedDataParallel(model, gradient_as_bucket_view=True, **_NO_BUFFER_SYNC)

    def sum(self, tensor: Tensor) -> Tensor:
        _complete(dist.all_reduce(tensor, op=dist.ReduceOp.SUM, async_op=True))
        return tensor

    def from_main(self, compute: Callable[[], dict[str, float]]) -> dict[str, float]:
        # JSON bytes, not broadcast_object_list: nothing unpickled off the wire, and every
        # collective goes through `_complete`; floats (NaN and inf too) round-trip exactly
        payload = json.dumps(compute(), default=float).encode() if self.is_main else b""
        size = torch.tensor([len(payload)], dtype=torch.int64, device=self.device)
        _complete(dist.broadcast(size, src=0, async_op=True))
        data = (torch.frombuffer(bytearray(payload), dtype=torch.uint8).to(self.device) if self.is_main
                else torch.empty(int(size.item()), dtype=torch.uint8, device=self.device))
        _complete(dist.broadcast(data, src=0, async_op=True))
        return json.loads(data.cpu().numpy().tobytes())

    def any(self, flag: bool) -> bool:
        flags = torch.tensor([int(flag)], device=self.device)
        _complete(dist.all_reduce(flags, op=dist.ReduceOp.MAX, async_op=True))
        return bool(flags.item())


_LATEST: list[dist.Work] = []


def _complete(work: dist.Work) -> None:
    """Wait for ``work`` and keep its handle until the next collective.

    The handle owns the collective's tensors. Were a gloo worker thread to drop the last
    reference, it would free tensors Python has seen, which takes the GIL; a rank that exits just
    after a collective (rank 1 after its last fit) finalizes the interpreter meanwhile, the thread
    is refused the GIL and the process aborts ("terminate called without an active exception").
    Kept here, the handle is released by this thread: at the next collective, or at exit.
    """
    work.wait()
    _LATEST[:] = [work]


def join(device: torch.device) -> DataParallel:
    """This rank of the default process group, training on ``device``.

    The group is created from torchrun's environment on first use (gloo on CPU, nccl on CUDA)
    and kept until the process exits, for every later fit: torch.distributed cannot reliably
    create it a second time from the same store. A group the caller initialised is used as is.
    """
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(dist.destroy_process_group)
    group = DataParallel(device)
    log.info("rank %d of %d (%s) on %s", group.rank, group.world_size, dist.get_backend(), device)
    return group
