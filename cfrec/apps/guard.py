"""How every app's job ends: a user mistake is one line (no traceback), a bug keeps its traceback,
a failed job leaves ``FAILED`` (its one-line error) in its folder, and a sweep goes on with its
other jobs. ``CFREC_DEBUG=1`` shows the traceback of every error.

Exit codes: 0 done, 1 an error (or a job of a sweep failed), 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

from cfrec.errors import CfrecError, RunStopped
from cfrec.train.distributed import launched_rank

log = logging.getLogger(__name__)

DEBUG_ENV = "CFREC_DEBUG"
FAILED = "FAILED"
SUMMARY_KEYS = ("rmse", "mae", "accuracy", "valid_rmse", "recall@10", "recall@50", "ndcg@10", "fit_seconds")

T = TypeVar("T")


@dataclass
class Failure:
    folder: Path
    message: str
    code: int


FAILURES: list[Failure] = []  # failed jobs of this process (a multirun runs its jobs in-process)
_app = {"name": "cfrec"}


def set_app(name: str) -> None:
    _app["name"] = name


def app_name() -> str:
    return _app["name"]


def debug() -> bool:
    """True when ``CFREC_DEBUG`` asks for tracebacks of every error."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def show(app: str, message: str) -> None:
    """The one line a user sees on stderr (ranks other than 0 of a torchrun job say which they are)."""
    rank = launched_rank()
    print(f"{app}{f' (rank {rank})' if rank else ''}: {message}", file=sys.stderr, flush=True)


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def describe(err: BaseException) -> tuple[str, int, bool]:
    """(one-line message, exit code, is a bug) of an exception that ended a job."""
    if isinstance(err, KeyboardInterrupt):
        return "interrupted", 130, False
    if isinstance(err, RunStopped):
        return one_line(str(err)), err.code, False
    if isinstance(err, CfrecError):
        return one_line(str(err)), 1, False
    if isinstance(err, MemoryError):
        return "out of memory (lower eval.memory_budget_mb, train.batch_size or the data size)", 1, False
    return one_line(f"{type(err).__name__}: {err}"), 1, True


def write_failed(folder: str | Path, message: str) -> None:
    """``FAILED`` in the run folder: the job's one-line error, for listings and sweep summaries."""
    folder = Path(folder)
    if launched_rank() != 0 or not folder.is_dir():
        return
    try:
        (folder / FAILED).write_text(message + "\n")
    except OSError:  # a full disk must not hide the error itself
        pass


def run_job(body: Callable[[], T], folder: str | Path, *, multirun: bool = False) -> T | None:
    """``body()``; on an error: log it (bugs with their traceback), write ``FAILED``, print one line.

    A single run then exits with the error's code; a job of a sweep returns None so the sweep
    goes on (Ctrl-C still stops the whole sweep).
    """
    try:
        return body()
    except (Exception, KeyboardInterrupt) as err:
        message, code, bug = describe(err)
        if not isinstance(err, RunStopped):  # a stopped run has logged why already
            log.error("%s", message, exc_info=bug or debug())
        write_failed(folder, message)
        FAILURES.append(Failure(Path(folder), message, code))
        show(app_name(), message if not multirun else f"job {Path(folder).name}: {message}")
        if multirun and code == 130:  # Ctrl-C stops the sweep: summarize the jobs run so far
            from cfrec.apps.sweep import write_summary

            write_summary(Path(folder).parent)
        if not multirun or code == 130:
            raise SystemExit(code) from None
        return None


def exit_code() -> int:
    """The process's exit code after its jobs: 0, or the first failure's (130 wins: an interrupt)."""
    codes = [f.code for f in FAILURES]
    return 130 if 130 in codes else (codes[0] if codes else 0)


def fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def metrics_table(rows: Sequence[Mapping[str, Any]], first: str, keys: Sequence[str] = SUMMARY_KEYS) -> str:
    """A compact aligned text table: ``first`` column, then each of ``keys`` any row has."""
    keys = [k for k in keys if any(k in row for row in rows)]
    header = [first, *keys]
    body = [[fmt(row.get(first, "")), *(fmt(row.get(k)) for k in keys)] for row in rows]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in [header, *body])


def report(folder: str | Path, rows: Sequence[Mapping[str, Any]], first: str = "model",
           keys: Sequence[str] = SUMMARY_KEYS) -> None:
    """What every app prints last: the run folder and its main metrics."""
    if launched_rank() != 0:
        return
    print(f"\n{metrics_table(rows, first, keys)}\nrun folder: {folder}", flush=True)
