"""Atomic file writes: a reader sees the old file or the new one, never half of either.

A write goes to ``.NAME.PID@HOST.RANDOM.cfrec-tmp`` beside ``NAME`` and is renamed over it. A
process killed mid-write (SIGKILL, power loss) leaves its temp behind: `remove_stale_temps`,
run by every atomic write and by checkpoint loads, deletes the temps of a folder whose writer
on this host is no longer running (temps of other hosts, and those of older cfrec versions,
once they are a day old).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}@{_HOST}.", suffix=TEMP_SUFFIX)
    os.close(handle)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as written:
            os.fsync(written.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


TEMP_SUFFIX = ".cfrec-tmp"
_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"
_TEMP = re.compile(r"^\..+\.(?P<pid>\d+)@(?P<host>[A-Za-z0-9_-]+)\.[^.]+" + re.escape(TEMP_SUFFIX) + "$")
_LEGACY_TEMP = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")  # mkstemp names of cfrec 0.1's first writes
STALE_SECONDS = 24 * 3600  # a temp whose writer cannot be asked is stale after a day


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temps in ``folder`` left by writers that died mid-write; returns what was removed."""
    folder = Path(folder)
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    removed = []
    for entry in entries:
        match = _TEMP.match(entry.name)
        if match is None and not _LEGACY_TEMP.match(entry.name):
            continue
        if match is not None and match["host"] == _HOST:
            stale = not _alive(int(match["pid"]))
        else:
            try:
                stale = time.time() - entry.stat().st_mtime > STALE_SECONDS
            except OSError:
                continue
        if stale:
            try:
                Path(entry.path).unlink(missing_ok=True)
            except OSError:  # a read-only folder (someone else's run): leave it
                continue
            removed.append(Path(entry.path))
    return removed


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process, or not a pid at all
        return pid < 1 << 22
    return True


def sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """JSON, indented, written atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_plain) + "\n")


def save_tensors(path: str | os.PathLike, tensors: dict[str, Any]) -> None:
    """``torch.save`` of plain tensors and primitives, written atomically."""
    with atomic_path(path) as tmp:
        torch.save(tensors, tmp)


def _plain(value: Any) -> Any:
    """numpy scalars and arrays → Python values, for json.dumps."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
