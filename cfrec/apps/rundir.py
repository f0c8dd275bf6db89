"""One run folder, one run: a used folder is refused (unless resumed in place) and a lock file
keeps two processes from writing the same folder at once.

`RunFolderGuard` (a Hydra callback, ``conf/config.yaml``) claims the folder before Hydra writes
``.hydra/`` into it, so a refused run leaves the earlier run's files untouched.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any, TextIO

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from cfrec.errors import ConfigError
from cfrec.train.distributed import launched_rank

LOCK = ".cfrec.lock"
"""The lock file of a run folder: held (``flock``) by the process writing it; released at its exit."""

DERIVED = ("metrics.json", "items.hnsw", "items.hnsw.json", "users.hnsw", "users.hnsw.json", "FAILED")
"""Files computed from a run's model: removed when a run is resumed in place, so none outlives its
model. ``model.pt``/``model.json`` stay: ``train_state.pt`` may keep its tensors there, and the
resumed run rewrites them as soon as it has trained."""

_held: dict[Path, TextIO] = {}  # folders this process has locked (the handles keep the locks)


LEFTOVERS = (LOCK, ".hydra", "FAILED")
"""What a run that failed before writing any result leaves (with its log): such a folder may be reused."""


def used(folder: Path) -> bool:
    """True when ``folder`` holds a run's results: anything but the lock, ``.hydra/``, logs and ``FAILED``."""
    return folder.is_dir() and any(e.name not in LEFTOVERS and e.suffix != ".log" for e in folder.iterdir())


def lock(folder: Path, key: str) -> None:
    """Hold ``folder``'s lock for the rest of this process; `ConfigError` naming ``key`` if another holds it."""
    folder = folder.resolve()
    if folder in _held:
        return
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / LOCK, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise ConfigError(key, f"{folder} is being written by another run ({holder}); give this run its own folder")
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    _held[folder] = handle


def release(folder: Path) -> None:
    """Give up ``folder``'s lock (the file stays; a later run takes it)."""
    handle = _held.pop(Path(folder).resolve(), None)
    if handle is not None:
        handle.close()


def claim(folder: str | Path, key: str, resume: str | None = None) -> None:
    """Make ``folder`` this run's own: refuse a used folder unless ``resume`` names it, then lock it."""
    folder = Path(folder)
    in_place = resume is not None and Path(resume).resolve() == folder.resolve()
    if used(folder) and not in_place:
        raise ConfigError(key, f"{folder} already holds another run's files; choose a new folder "
                               f"(or continue that run in place with train.resume={folder})")
    lock(folder, key)
    (folder / "FAILED").unlink(missing_ok=True)  # an earlier failed attempt's error is no longer this folder's


def clear_for_resume_in_place(folder: str | Path, resume: str | Path | None) -> None:
    """Before a run that resumes ``folder`` in place (``resume`` names it): rank 0 removes the old
    run's derived files (`clear_derived`), which the run writes anew."""
    if resume is not None and launched_rank() == 0 and Path(resume).resolve() == Path(folder).resolve():
        clear_derived(folder)


def clear_derived(folder: str | Path) -> list[str]:
    """Remove the files a resumed-in-place run will write anew (metrics, checkpoint, indexes, plots)."""
    folder = Path(folder)
    removed = []
    for path in [*(folder / name for name in DERIVED), *folder.glob("*.png")]:
        if path.is_file():
            path.unlink()
            removed.append(path.name)
    return removed


def _refuse(err: ConfigError) -> None:
    """End the process with the one-line error: nothing has been written yet."""
    from cfrec.apps.guard import app_name, show

    show(app_name(), str(err))
    raise SystemExit(1)


class RunFolderGuard(Callback):
    """Claims the run folder (single runs) or the sweep folder (multiruns) before Hydra writes."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if launched_rank() != 0:  # the other ranks of a torchrun job write nothing
            return
        try:
            folder = OmegaConf.select(config, "hydra.run.dir")
            claim(folder, "hydra.run.dir", OmegaConf.select(config, "train.resume", default=None))
        except ConfigError as err:
            _refuse(err)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            claim(OmegaConf.select(config, "hydra.sweep.dir"), "hydra.sweep.dir")
        except ConfigError as err:
            _refuse(err)

