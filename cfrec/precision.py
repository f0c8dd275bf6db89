"""In which precision the weighted mask's all-cells Gramian products run (`train.gramian_precision`).

A gradient step of the weighted-mask head (the default `cf`'s preference head, `cf_weighted` by
gradient descent) multiplies whole tables four times: G_Θ = Θ̃ᵀΘ̃, G_X = X̃ᵀX̃ and the gradients
Θ̃ G_X, X̃ G_Θ (`cfrec.models.losses.WeightedCells`). In float32 those GEMMs already run at the
CPU's peak; at ML-25M scale (162,540 + 59,047 rows of 136 columns) they are half of every step.
CPUs with native bfloat16 dot products (x86 ``avx512_bf16`` / ``amx_bf16``, Arm ``bf16``) run them
about twice as fast in bfloat16 (float32 accumulation inside each product): the tables' copies and the
four products keep 8 significant bits (relative rounding 2⁻⁹); the rated cells, the optimizer and the
parameters stay float32, and so do `sparse_adam`'s incremental Gramians and ALS's solves.

- ``full``: the tables' own precision, float32 in training (what every loss evaluated outside
  training uses);
- ``bfloat16``: always, on any device;
- ``auto`` (the training default): bfloat16 where the CPU has native bfloat16 and the two tables
  hold at least `AUTO_MIN_ENTRIES` numbers (ML-25M's 30M; ML-1M's 1.3M stay full); full
  elsewhere, GPUs included.

Measured (`docs/benchmark/epoch.md`): at 22.6M training ratings the default model's validation
RMSE and Recall@50 after each of 3 epochs were the same to 4 decimals either way, NDCG@10 within 0.0002.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path

import torch

log = logging.getLogger(__name__)

GRAMIAN_PRECISIONS = ("auto", "full", "bfloat16")
AUTO_MIN_ENTRIES = 1 << 23  # numbers in Θ̃ and X̃ together (32 MiB of float32) from which `auto` takes bfloat16
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})  # /proc/cpuinfo: x86 flags, Arm features

_policy: ContextVar[str] = ContextVar("gramian_precision", default="full")


@contextlib.contextmanager
def gramian_precision(name: str) -> Iterator[None]:
    """Within the block, the Gramian products follow ``name`` (one of `GRAMIAN_PRECISIONS`)."""
    if name not in GRAMIAN_PRECISIONS:
        raise ValueError(f"gramian precision must be one of {', '.join(GRAMIAN_PRECISIONS)}, got {name!r}")
    token = _policy.set(name)
    try:
        yield
    finally:
        _policy.reset(token)


def gramian_dtype(entries: int, device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """The dtype of the Gramian products' inputs for ``dtype`` tables of ``entries`` numbers on
    ``device``, under the policy in force (`gramian_precision`; ``full`` outside any block)."""
    name = _policy.get()
    chosen = choose_dtype(name, entries, name == "auto" and native_bf16(device), dtype)
    if name == "auto" and chosen == torch.bfloat16:
        _announce()
    return chosen


def choose_dtype(name: str, entries: int, native: bool, dtype: torch.dtype) -> torch.dtype:
    """The rule of `GRAMIAN_PRECISIONS`: bfloat16 when asked, or under ``auto`` for tables of
    `AUTO_MIN_ENTRIES` numbers or more on ``native`` bfloat16 hardware; else the tables' ``dtype``."""
    if name == "bfloat16" or (name == "auto" and native and entries >= AUTO_MIN_ENTRIES):
        return torch.bfloat16
    return dtype


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 natively (CPUs only; GPUs keep full precision under `auto`)."""
    return device.type == "cpu" and cpu_has_native_bf16()


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True when the CPU's flags (Linux ``/proc/cpuinfo``) include a bfloat16 dot-product instruction."""
    if not cpuinfo.is_file():  # not Linux
        return False
    for line in cpuinfo.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return not NATIVE_BF16_FLAGS.isdisjoint(value.split())
    return False


@functools.lru_cache(maxsize=1)
def _announce() -> None:
    log.info("the weighted mask's Gramian products run in bfloat16 (native on this CPU; train.gramian_precision=auto)")
