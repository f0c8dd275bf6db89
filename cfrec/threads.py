"""How many CPU threads torch uses: one policy for training, evaluation and KNN.

torch's default (one intra-op thread per physical core, OpenMP workers that spin while they
wait) is fastest on a quiet machine, but when the cores are shared with other processes the
spinning threads fight for them: the default ``cf`` fit on MovieLens 1M took 1.6–45.7 s on a
shared 2-core machine with torch's default threads against a steady 3.1–3.7 s on one thread,
while on a quiet machine two threads gained only ~15 % (2.6–2.9 s against 3.0–3.7 s). So the
default here is `DEFAULT_THREADS` (1): never slow, whatever else runs.

Precedence, first set wins: an explicit value (``threads=N`` / ``train.threads=N`` / an
argument), then the environment variable ``CFREC_THREADS``, then `DEFAULT_THREADS`. A value
is a positive integer, or ``0`` / ``"all"`` for every CPU this process may run on.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping

import torch

from cfrec.errors import ConfigError

log = logging.getLogger(__name__)

ENV = "CFREC_THREADS"
DEFAULT_THREADS = 1
_interop: dict[str, int | None] = {"set": None}  # the inter-op thread count, once it has been set (or refused)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask; ``os.cpu_count()`` where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def parse_threads(value: Any, key: str = "threads") -> int | None:
    """A thread setting as a count: ``None`` / ``"auto"`` / ``""`` → None (not set), ``0`` or
    ``"all"`` → `usable_cpus`, a positive integer (or its string) → itself; `ConfigError`
    naming ``key`` otherwise."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "auto", "null", "none")):
        return None
    if isinstance(value, str) and value.strip().lower() == "all":
        return usable_cpus()
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ConfigError(key, f"must be a positive integer, 0 or 'all' (every CPU) or null, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(key, f"must be a positive integer, 0 or 'all' (every CPU) or null, got {value!r}")
    return usable_cpus() if value == 0 else value


def resolve_threads_with_source(config_value: Any = None, key: str = "threads") -> tuple[int, str]:
    """(thread count, where it came from: ``key``, `ENV` or ``"default"``), by the module's precedence."""
    explicit = parse_threads(config_value, key)
    if explicit is not None:
        return explicit, key
    from_env = parse_threads(os.environ.get(ENV), ENV)
    if from_env is not None:
        return from_env, ENV
    return DEFAULT_THREADS, "default"


def resolve_threads(config_value: Any = None, key: str = "threads") -> int:
    """The thread count to use: ``config_value`` if set, else ``$CFREC_THREADS``, else `DEFAULT_THREADS`."""
    return resolve_threads_with_source(config_value, key)[0]


def apply_threads(n: int) -> int:
    """Set torch's intra-op threads to ``n`` and, the first time only, its inter-op threads.

    torch accepts the inter-op count once per process, before any inter-op work; a later
    call (or one after such work) leaves it as it is. Returns torch's intra-op count.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError("threads", f"must be a positive integer, got {n!r}")
    torch.set_num_threads(n)
    if _interop["set"] is None:
        try:
            torch.set_num_interop_threads(n)
        except RuntimeError:  # already set, or parallel work has started: keep torch's
            pass
        _interop["set"] = torch.get_num_interop_threads()
    return torch.get_num_threads()


def configure_threads(config_value: Any = None, key: str = "threads") -> int:
    """`resolve_threads` then `apply_threads`, logging the choice and how to change it."""
    n, source = resolve_threads_with_source(config_value, key)
    applied = apply_threads(n)
    how = f"from {source}" if source != "default" else "default"
    log.info("torch threads: %d (%s; %s or %s=N to change)", applied, how, ENV, key)
    return applied


def run_threads(cfg: Mapping[str, Any]) -> tuple[Any, str]:
    """(value, key) of an app config's thread setting: ``train.threads`` where set, else the top-level ``threads``."""
    train = cfg.get("train") or {}
    if train.get("threads") is not None:
        return train["threads"], "train.threads"
    return cfg.get("threads"), "threads"


def configure_run_threads(cfg: Mapping[str, Any]) -> int:
    """`configure_threads` for an app's config (`run_threads`): one call at the start of a run."""
    return configure_threads(*run_threads(cfg))
