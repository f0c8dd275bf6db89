"""Large tensors during training epochs: their memory is kept and reused, not handed back to the OS at each free.

glibc's malloc serves every block above its mmap threshold (32 MiB at most) with fresh pages
from the kernel and unmaps them when the block is freed, and torch's CPU allocator keeps no cache
of its own. A training step whose temporaries are that large (at 25M ratings: 352,700-rating
batches, 162,540 × 130 tables) therefore pays a page fault and the zeroing of every 4 KiB page of
every temporary, every step: the default model's 25M-rating epoch took 29.4 s that way and 19.9 s
with the blocks reused (2 threads, the same parameters; ``docs/benchmark/epoch.md``).

`reuse_freed_memory` asks glibc (``mallopt``) to serve such blocks from its heap and to keep what
is freed there for the next step; on exit it restores glibc's limits and returns the free memory
to the OS (``malloc_trim``), so a process holds no more afterwards than it did before. The trainer
holds it over its epochs (the steps and each epoch's validation, `train.reuse_memory`), not over
the work after them (the neighbourhood blend's scipy products would keep their peak in the heap:
at 25M ratings the fit's peak RSS was 7.7 GB with the whole fit inside, 5.8 GB with the epochs, for
the same epoch times; the blend took ~50 s longer outside).
Where the C library is not glibc (macOS, Windows, musl) it does nothing.

What it costs: torch asks for 64-byte-aligned blocks (``posix_memalign``), whose padding leaves a
freed block a few bytes short of the next request of its size until freed neighbours merge, so
the first few large blocks of a fit still come fresh and the heap settles a few blocks above the
fit's peak. The 25M-rating epoch: 7.2M page faults → 0.31M, peak RSS 3.67 → 3.82 GB.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import threading
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's <malloc.h>
M_MMAP_MAX = -4
GLIBC_MMAP_MAX = 65536  # glibc's defaults, restored on exit
GLIBC_TRIM_THRESHOLD = 128 * 1024
KEEP_EVERYTHING = 2**31 - 1  # a trim threshold (an int) no fit's free memory reaches

_lock = threading.Lock()
_depth = 0  # fits inside the policy now (fits may nest or run on several threads)


@functools.lru_cache(maxsize=1)
def glibc() -> Any | None:
    """The process's C library when it is glibc (with ``mallopt`` and ``malloc_trim``), else None."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    if not all(hasattr(libc, name) for name in ("gnu_get_libc_version", "mallopt", "malloc_trim")):
        return None
    return libc


@contextlib.contextmanager
def reuse_freed_memory(enabled: bool = True) -> Iterator[bool]:
    """Within the block, large freed blocks stay in glibc's heap for the next allocation.

    Yields whether the policy is in force (False where disabled or not on glibc). Re-entrant:
    the limits are restored when the outermost block ends.
    """
    global _depth
    libc = glibc() if enabled else None
    if libc is None:
        yield False
        return
    with _lock:
        if _depth == 0:
            libc.mallopt(M_MMAP_MAX, 0)
            libc.mallopt(M_TRIM_THRESHOLD, KEEP_EVERYTHING)
            log.debug("large tensors reuse freed heap memory until the policy ends")
        _depth += 1
    try:
        yield True
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                libc.mallopt(M_MMAP_MAX, GLIBC_MMAP_MAX)
                libc.mallopt(M_TRIM_THRESHOLD, GLIBC_TRIM_THRESHOLD)
                libc.malloc_trim(0)
