"""hnswlib's index file (``HierarchicalNSW::saveIndex``), checked in numpy before hnswlib reads it.

hnswlib trusts its file: a header field, a link count or a link target changed on disk makes
its C++ read or write out of bounds (a segfault, not an exception). `check_file` parses the
whole file and refuses, with a `CheckpointError` naming the field, anything a file written by
`cfrec.index.HNSWIndex.save` for the expected ``count`` × ``dim`` vectors and parameters
cannot hold. The layout (hnswlib 0.7–0.8, ``hnswalg.h``):

- a 96-byte header (`HEADER`);
- ``count`` level-0 records of ``size_per_element`` bytes: a uint32 link count (its low 16 bits
  the count, byte 2 the delete mark), ``max_m0`` uint32 neighbour ids, the vector
  (``dim`` float32), the uint64 label;
- per element, a uint32 byte size of its upper-level link lists (0, or ``level`` blocks of
  ``4 + 4 * max_m`` bytes: a uint32 count and ``max_m`` uint32 neighbour ids).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cfrec.errors import CheckpointError

HEADER = np.dtype([
    ("offset_level0", "<u8"), ("max_elements", "<u8"), ("count", "<u8"), ("size_per_element", "<u8"),
    ("label_offset", "<u8"), ("offset_data", "<u8"), ("max_level", "<i4"), ("enter_point", "<u4"),
    ("max_m", "<u8"), ("max_m0", "<u8"), ("m", "<u8"), ("mult", "<f8"), ("ef_construction", "<u8"),
])
MAX_LEVEL = 64  # levels are drawn as -ln(U) / ln(M): above 64 is not a real graph


@dataclass(frozen=True)
class HNSWFile:
    """What a checked file holds: the stored vectors (count, dim) and each element's top level."""

    vectors: np.ndarray
    levels: np.ndarray


def expected_header(count: int, dim: int, M: int, ef_construction: int) -> dict[str, float]:
    """The header hnswlib writes for ``count`` vectors of ``dim`` floats built with ``M``, ``ef_construction``."""
    m = min(M, 10000)  # hnswlib caps M
    links0 = 4 + 8 * m
    return {"offset_level0": 0, "max_elements": count, "count": count, "size_per_element": links0 + 4 * dim + 8,
            "label_offset": links0 + 4 * dim, "offset_data": links0, "max_m": m, "max_m0": 2 * m, "m": m,
            "ef_construction": max(ef_construction, m)}


def check_file(path: str | Path, count: int, dim: int, M: int, ef_construction: int) -> HNSWFile:
    """Parse ``path``; `CheckpointError` unless it is a well-formed graph of ``count`` × ``dim`` vectors."""
    path = Path(path)
    raw = np.fromfile(path, dtype=np.uint8)

    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{path}: not an HNSW graph of {count} x {dim} vectors written by cfrec ({what})")

    if len(raw) < HEADER.itemsize:
        raise bad(f"{len(raw)} bytes, shorter than the header")
    header = raw[: HEADER.itemsize].view(HEADER)[0]
    for key, want in expected_header(count, dim, M, ef_construction).items():
        if int(header[key]) != want:
            raise bad(f"header field {key} is {int(header[key])}, expected {want}")
    m = int(header["max_m"])
    if m < 2 or not math.isclose(float(header["mult"]), 1 / math.log(m), rel_tol=1e-12):
        raise bad(f"header field mult is {float(header['mult'])!r}")
    max_level, enter = int(header["max_level"]), int(header["enter_point"])
    if count == 0:
        if max_level != -1 or len(raw) != HEADER.itemsize:
            raise bad("an empty graph with a level or data")
        return HNSWFile(np.zeros((0, dim), np.float32), np.zeros(0, np.int64))
    if not 0 <= max_level <= MAX_LEVEL or not 0 <= enter < count:
        raise bad(f"top level {max_level} or entry point {enter} out of range")
    size, links0 = int(header["size_per_element"]), int(header["offset_data"])
    level0_end = HEADER.itemsize + count * size
    if len(raw) < level0_end + 4 * count:
        raise bad(f"{len(raw)} bytes, too short for {count} elements")
    level0 = raw[HEADER.itemsize : level0_end].reshape(count, size)
    links = np.ascontiguousarray(level0[:, :links0]).view("<u4")  # (count, 1 + max_m0)
    vectors = np.ascontiguousarray(level0[:, links0 : links0 + 4 * dim]).view("<f4")  # (count, dim)
    labels = np.ascontiguousarray(level0[:, links0 + 4 * dim :]).view("<u8")[:, 0]
    _check_lists(links, count, bad, "level 0")
    if not np.array_equal(np.sort(labels), np.arange(count, dtype=np.uint64)):
        raise bad("labels are not 0..count-1, each once")
    if not np.isfinite(vectors).all():
        raise bad("a stored vector is not finite")
    levels, upper = _upper_levels(raw[level0_end:], count, 4 + 4 * m, bad)
    if levels.max() > max_level or levels[enter] != max_level:
        raise bad(f"element levels exceed the top level {max_level}, or the entry point is not on it")
    for level in range(1, max_level + 1):  # a neighbour at level L must itself reach level L
        members = upper.get(level, np.zeros((0, 1 + m), np.uint32))
        if len(members):
            targets = _check_lists(members, count, bad, f"level {level}")
            if (levels[targets] < level).any():
                raise bad(f"a level-{level} link points to an element below that level")
    return HNSWFile(vectors, levels)


def _targets(lists: np.ndarray) -> np.ndarray:
    """The neighbour ids in use in link lists (n, 1 + width): the first ``count`` of each row."""
    used = np.arange(lists.shape[1] - 1)[None, :] < lists[:, :1].astype(np.int64)
    return lists[:, 1:][used].astype(np.int64)


def _check_lists(lists: np.ndarray, count: int, bad, where: str) -> np.ndarray:
    """Counts within the list width (no delete mark, no high bits), ids below ``count``; the ids in use."""
    if (lists[:, 0] > lists.shape[1] - 1).any():
        raise bad(f"a {where} link count exceeds {lists.shape[1] - 1} or carries a delete mark")
    targets = _targets(lists)
    if len(targets) and targets.max() >= count:
        raise bad(f"a {where} link points past element {count - 1}")
    return targets


def _upper_levels(tail: np.ndarray, count: int, block: int, bad) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Element levels (count,) and, per level ≥ 1, the link lists (n, 1 + max_m) of the elements on it.

    The tail is ``count`` records of a uint32 size and that many bytes, all multiples of 4: as a
    uint32 array, record i starts where record i-1's size ends. Runs of level-0 elements (size 0)
    are skipped at once, so the walk steps once per element on an upper level.
    """
    if len(tail) % 4:
        raise bad("the link lists do not end on a 4-byte boundary")
    words = tail.view("<u4")
    nonzero = np.flatnonzero(words)
    levels = np.zeros(count, dtype=np.int64)
    starts: list[int] = []
    element, pos = 0, 0
    while element < count:
        at = np.searchsorted(nonzero, pos)
        nxt = int(nonzero[at]) if at < len(nonzero) else len(words)
        zeros = min(nxt - pos, count - element)  # elements with no upper levels
        element, pos = element + zeros, pos + zeros
        if element == count:
            break
        if pos >= len(words):
            raise bad(f"the link lists end after {element} of {count} elements")
        size = int(words[pos])
        if size % block or size // block > MAX_LEVEL or pos + 1 + size // 4 > len(words):
            raise bad(f"element {element}'s upper link lists have an impossible size {size}")
        levels[element] = size // block
        starts.append(pos + 1)
        element, pos = element + 1, pos + 1 + size // 4
    if pos != len(words):
        raise bad(f"{4 * (len(words) - pos)} bytes left over after the last element")
    width = block // 4
    upper: dict[int, np.ndarray] = {}
    owners = np.flatnonzero(levels)
    start = np.asarray(starts, dtype=np.int64)
    for level in range(1, int(levels.max(initial=0)) + 1):
        on = levels[owners] >= level
        rows = start[on][:, None] + (level - 1) * width + np.arange(width)[None, :]
        upper[level] = words[rows]
    return levels, upper
