"""``cfrec-runs``: the run folders under ``runs/`` (or a given folder), newest first.

    cfrec-runs                  # every run under ./runs
    cfrec-runs runs/multirun    # a sweep's jobs
    cfrec-runs -n 5 --markdown  # the five newest, as a markdown table

One row per run folder: when it started, model, data, the main metrics where the run has them
(rmse, recall@50, ndcg@10; ranking-only models have no rmse) and its status:

- ``ok``: ``metrics.json`` is there (``ok (5-fold cv, means)`` for a ``cfrec-cv`` folder, whose
  metrics are the means over its folds, listed below it as ``fold_<f>``);
- ``FAILED: message``: the run stopped on an error (its ``FAILED`` file holds the message);
- ``running``: no metrics yet, but its log or training state changed in the last few minutes;
- ``incomplete``: no metrics and nothing written lately (killed, or stopped by Ctrl-C);
- ``unreadable <file>``: a file the listing reads (``metrics.json``, ``cv.json``, ``.hydra/config.yaml``,
  ``.hydra/hydra.yaml``) cannot be read, parsed, or holds no mapping; the row shows what the other files give.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from cfrec.tables import to_markdown

METRICS = ("rmse", "recall@50", "ndcg@10")
MARKERS = ("metrics.json", "FAILED", ".hydra", "model.json")
RUNNING_WITHIN_S = 300.0  # a run without metrics whose files changed this recently is running
_NOT_RUN_DIRS = {"tb", ".hydra"}


def find_runs(root: str | Path) -> list[Path]:
    """Folders under ``root`` (``root`` included) that hold a run: metrics, a FAILED note, a Hydra config or a model."""
    root = Path(root)
    found = {path.parent for marker in MARKERS for path in root.rglob(marker)
             if not _NOT_RUN_DIRS & set(path.parent.relative_to(root).parts)}
    return sorted(found)


def started(run_dir: Path) -> float:
    """When the run started: its saved Hydra config's time, else the folder's."""
    config = run_dir / ".hydra" / "config.yaml"
    return (config if config.is_file() else run_dir).stat().st_mtime


def status(run_dir: Path, now: float | None = None) -> str:
    """ok / FAILED: message / running / incomplete (see the module docstring)."""
    failed = run_dir / "FAILED"
    if failed.is_file():
        lines = failed.read_text(errors="replace").strip().splitlines()
        return "FAILED: " + (lines[0] if lines else "(no message)")
    if (run_dir / "metrics.json").is_file():
        if not (run_dir / "cv.json").is_file():
            return "ok"
        cv = _load(run_dir / "cv.json")
        return "unreadable cv.json" if cv is None else f"ok ({cv.get('n_folds', '?')}-fold cv, means)"
    now = time.time() if now is None else now
    latest = max((p.stat().st_mtime for p in run_dir.iterdir() if p.is_file()), default=0.0)
    tb = run_dir / "tb"
    if tb.is_dir():
        latest = max([latest, *(p.stat().st_mtime for p in tb.rglob("events.out.tfevents.*"))])
    return "running" if now - latest < RUNNING_WITHIN_S else "incomplete"


def describe(run_dir: Path, root: Path, now: float | None = None) -> dict[str, Any]:
    """One listing row for ``run_dir``; a damaged file is named in its status (``unreadable <file>``)."""
    files = {name: _load(run_dir / name) for name in ("metrics.json", ".hydra/config.yaml", ".hydra/hydra.yaml")}
    damaged = [f"unreadable {name}" for name, loaded in files.items() if loaded is None]
    metrics, config, hydra = (loaded or {} for loaded in files.values())
    data_root = _get(config, "data", "root")
    row = {
        "run": str(run_dir.relative_to(root)) if run_dir != root else str(root),
        "started": datetime.fromtimestamp(started(run_dir)).strftime("%Y-%m-%d %H:%M"),
        "model": (metrics.get("model") or _get(hydra, "hydra", "runtime", "choices", "model")
                  or _get(config, "model", "name") or ""),
        "data": metrics.get("data") or (Path(str(data_root)).name if data_root else _get(config, "data", "name") or ""),
    }
    for key in METRICS:
        value = metrics.get(key)
        row[key] = float(value) if isinstance(value, (int, float)) else float("nan")
    row["status"] = "; ".join(damaged) or status(run_dir, now)
    return row


def _load(path: Path) -> dict[str, Any] | None:
    """The mapping saved in ``path`` (JSON or YAML, by its suffix): ``{}`` where there is no such file,
    None where it cannot be read, is not JSON / YAML, or holds no mapping."""
    if not path.is_file():
        return {}
    try:
        text = path.read_text()
        loaded = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError):  # ValueError: bad JSON or not UTF-8
        return None
    return loaded if isinstance(loaded, dict) else None


def _get(mapping: dict[str, Any], *keys: str) -> Any:
    """``mapping[key][key]...``; None where a key is missing or a level holds no mapping."""
    value: Any = mapping
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def list_runs(root: str | Path = "runs", limit: int | None = None, now: float | None = None) -> pd.DataFrame:
    """The runs under ``root`` as a table, newest first (``limit`` rows at most, a positive number)."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of runs, got {limit}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder (runs are written under ./runs by default)")
    dirs = sorted(find_runs(root), key=started, reverse=True)[:limit]
    columns = ["run", "started", "model", "data", *METRICS, "status"]
    return pd.DataFrame([describe(d, root, now) for d in dirs], columns=columns)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cfrec-runs", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", default="runs", help="where to look (default: runs)")
    parser.add_argument("-n", "--limit", type=int, default=None, help="show only the N newest runs")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        print(f"cfrec-runs: -n must be a positive number of runs, got {args.limit}", file=sys.stderr)
        return 2
    try:
        table = list_runs(args.folder, args.limit)
    except FileNotFoundError as err:
        print(f"cfrec-runs: {err}", file=sys.stderr)
        return 2
    if table.empty:
        print(f"no runs under {args.folder}")
        return 0
    if args.markdown:
        print(to_markdown(table), end="")
    else:
        shown = table.copy()
        for key in METRICS:
            shown[key] = shown[key].map(lambda v: "" if pd.isna(v) else f"{v:.4f}")
        print(shown.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
