"""``cfrec-cv``: k-fold cross-validation in one command, every fold and mean ± std of each metric.

    cfrec-cv data=movielens data.root=PATH/ml-100k            # 5 folds of the default model (cf)
    cfrec-cv data=ml-100k model=item_knn split.n_folds=10

The folds are those of ``split=kfold`` (each user's ratings dealt at random into ``n_folds``
parts; users with fewer than ``split.min_ratings`` ratings always train): fold ``f`` is fitted
and evaluated exactly as ``cfrec-train split=kfold split.fold=f`` would, into ``fold_<f>/`` of
the run folder. The run folder then holds ``cv.json`` (every fold's metrics, their mean and
standard deviation), ``cv.md`` (the same as a table, also printed) and ``metrics.json`` (the
means, so ``cfrec-runs`` lists the whole cross-validation as one run). Hydra receives the mean
of the validation metric the folds were monitored on (``valid_rmse`` for cf; never a test
metric), so sweepers can tune on cross-validated scores.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pandas as pd
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from cfrec.apps import guard
from cfrec.apps.pipeline import run
from cfrec.apps.schema import complete
from cfrec.apps.train import objective
from cfrec.errors import ConfigError
from cfrec.io import atomic_path, write_json
from cfrec.tables import to_markdown
from cfrec.validation import check_int

APP = "cfrec-cv"
log = logging.getLogger(__name__)

# Counts and timings are summed or averaged like any metric; these describe the run instead.
_NOT_AVERAGED = {"model", "data", "test"}


def summarize_folds(folds: Sequence[Mapping[str, Any]]) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and sample standard deviation (ddof=1) over folds of every numeric metric all folds have."""
    keys = [k for k, v in folds[0].items() if k not in _NOT_AVERAGED and isinstance(v, (int, float))
            and not isinstance(v, bool) and all(isinstance(f.get(k), (int, float)) for f in folds)]
    values = {k: np.array([float(f[k]) for f in folds]) for k in keys}
    mean = {k: float(v.mean()) for k, v in values.items()}
    std = {k: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for k, v in values.items()}
    return mean, std


def cv_table(folds: Sequence[Mapping[str, Any]], mean: Mapping[str, float], std: Mapping[str, float],
             columns: Sequence[str]) -> pd.DataFrame:
    """One row per fold, then ``mean ± std``, for ``columns`` (those the folds have)."""
    shown = [c for c in columns if c in mean]
    rows = [{"fold": str(i), **{c: f"{fold[c]:.4f}" for c in shown}} for i, fold in enumerate(folds)]
    rows.append({"fold": "mean ± std", **{c: f"{mean[c]:.4f} ± {std[c]:.4f}" for c in shown}})
    return pd.DataFrame(rows, columns=["fold", *shown])


TABLE_COLUMNS = ("rmse", "mae", "accuracy", "recall@10", "recall@50", "ndcg@10", "valid_rmse", "fit_seconds")


def cross_validate(cfg: Mapping[str, Any], run_dir: str | Path, label: str | None = None,
                   overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Fit and evaluate every fold of ``cfg`` (a cfrec-train config with ``split.name: kfold``)
    into ``run_dir/fold_<f>/``; write cv.json, cv.md and metrics.json; return the summary."""
    if cfg["split"].get("name") != "kfold":
        raise ConfigError("split", f"cross-validation needs split=kfold, got {cfg['split'].get('name')!r}")
    cfg = complete(cfg)
    run_dir = Path(run_dir)
    n_folds = check_int("split.n_folds", cfg["split"]["n_folds"], 2)  # before any fold folder is made
    # what cfrec-train needs to run (or resume) one fold: split=kfold is cv.yaml's default, not its
    fold_overrides = [*([] if any(o.startswith("split=") for o in overrides) else ["split=kfold"]),
                      *[o for o in overrides if not o.startswith("split.fold=")]]
    folds = []
    for fold in range(n_folds):
        fold_cfg = {**cfg, "split": {**cfg["split"], "fold": fold}}
        fold_dir = run_dir / f"fold_{fold}"
        _describe_fold(fold_dir, fold_cfg, [*fold_overrides, f"split.fold={fold}"])
        log.info("fold %d of %d", fold + 1, n_folds)
        metrics = run(fold_cfg, fold_dir, label=label)
        if metrics is None:  # a torchrun rank other than 0: nothing to summarise
            return {}
        folds.append(metrics)
    mean, std = summarize_folds(folds)
    summary = {"n_folds": n_folds, "model": folds[0].get("model"), "data": folds[0].get("data"),
               "mean": mean, "std": std, "folds": folds}
    write_json(run_dir / "cv.json", summary)
    table = cv_table(folds, mean, std, TABLE_COLUMNS)
    title = f"{summary['model']} on {summary['data']}, {n_folds}-fold cross-validation (mean ± sample std)\n\n"
    with atomic_path(run_dir / "cv.md") as tmp:
        tmp.write_text(title + to_markdown(table))
    monitor = {"monitor": folds[0]["monitor"]} if folds[0].get("monitor") else {}
    write_json(run_dir / "metrics.json", {"model": summary["model"], "data": summary["data"], "cv_folds": n_folds,
                                          **mean, **{f"{k}_std": v for k, v in std.items()}, **monitor})
    summary["mean"].update(monitor)
    print(title + table.to_string(index=False))
    return summary


def _describe_fold(fold_dir: Path, cfg: Mapping[str, Any], overrides: Sequence[str]) -> None:
    """``fold_<f>/.hydra/``: the fold's resolved config and overrides, as if cfrec-train had run it."""
    hydra_dir = fold_dir / ".hydra"
    hydra_dir.mkdir(parents=True, exist_ok=True)
    (hydra_dir / "config.yaml").write_text(yaml.safe_dump(dict(cfg), sort_keys=False))
    (hydra_dir / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))


@hydra.main(config_path="../conf", config_name="cv", version_base="1.3")
def hydra_main(cfg: DictConfig) -> float | None:
    """Mean over the folds of the monitored validation metric (see `cfrec.apps.train.objective`);
    None for a failed job. A user mistake is one line on stderr and ``FAILED`` (`cfrec.apps.guard`)."""
    hydra_cfg = HydraConfig.get()
    run_dir = hydra_cfg.runtime.output_dir

    def job() -> float | None:
        summary = cross_validate(OmegaConf.to_container(cfg, resolve=True), run_dir,
                                 label=hydra_cfg.runtime.choices.get("model"), overrides=list(hydra_cfg.overrides.task))
        return objective(summary.get("mean")) if summary else None

    return guard.run_job(job, run_dir, multirun=hydra_cfg.mode == RunMode.MULTIRUN)


def main() -> None:
    """The console script: Hydra's app, then the exit code of its jobs (1 on a failure, 130 on Ctrl-C)."""
    guard.set_app(APP)
    hydra_main()
    sys.exit(guard.exit_code())


if __name__ == "__main__":
    main()
