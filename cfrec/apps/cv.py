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

Stopped part-way (Ctrl-C prints the command), ``cfrec-cv <the same options> train.resume=RUN_DIR``
continues it into a new folder (or in place, with ``hydra.run.dir=RUN_DIR``): finished folds are
kept (copied), a fold stopped mid-training resumes from its saved state, the rest are fitted;
folds made with other options are refused, naming them.
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
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

from cfrec.apps import guard, rundir
from cfrec.apps.fitting import changed_keys
from cfrec.apps.pipeline import run
from cfrec.apps.schema import complete
from cfrec.apps.train import objective
from cfrec.checkpoint import TRAIN_STATE
from cfrec.errors import ConfigError, RunStopped
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
    resume = cfg["train"]["resume"]
    kept_overrides = overrides_without_resume(overrides)
    # what cfrec-train needs to run (or resume) one fold: split=kfold is cv.yaml's default, not its
    fold_overrides = [*([] if any(o.startswith("split=") for o in overrides) else ["split=kfold"]),
                      *[o for o in kept_overrides if not o.startswith("split.fold=")]]
    resume_hint = shlex.join(["cfrec-cv", *kept_overrides, f"train.resume={run_dir}"])
    folds = []
    for fold in range(n_folds):
        fold_cfg = {**cfg, "split": {**cfg["split"], "fold": fold}, "train": {**cfg["train"], "resume": None}}
        fold_dir = run_dir / f"fold_{fold}"
        earlier = Path(resume) / fold_dir.name if resume else None
        finished = _keep_finished_fold(earlier, fold_dir, fold_cfg) if earlier else None
        if finished is not None:
            log.info("fold %d of %d: finished in %s, kept", fold + 1, n_folds, earlier)
            folds.append(finished)
            continue
        log.info("fold %d of %d", fold + 1, n_folds)
        try:
            metrics = _fit_fold(fold_cfg, fold_dir, earlier, [*fold_overrides, f"split.fold={fold}"], label)
        except (RunStopped, KeyboardInterrupt) as stop:
            if isinstance(stop, RunStopped) and stop.code != 130:
                raise
            message = (f"interrupted in fold {fold + 1} of {n_folds} ({fold_dir.name}): resume the "
                       f"cross-validation (finished folds are kept) with: {resume_hint}")
            log.warning("%s", message)
            raise RunStopped(message, 130) from None
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


def overrides_without_resume(overrides: Sequence[str]) -> list[str]:
    """A run's command-line overrides, less where it resumed from and where it wrote."""
    return [o for o in overrides if not o.startswith(("train.resume=", "hydra.run.dir="))]


def _fit_fold(cfg: dict[str, Any], fold_dir: Path, earlier: Path | None, overrides: Sequence[str],
              label: str | None) -> dict[str, Any] | None:
    """Fit and evaluate one fold into ``fold_dir``, continuing ``earlier``'s training state where
    it stopped mid-training."""
    if earlier is not None and (earlier / TRAIN_STATE).is_file():
        cfg["train"]["resume"] = str(earlier)
        rundir.clear_for_resume_in_place(fold_dir, earlier)
    _describe_fold(fold_dir, cfg, overrides)
    return run(cfg, fold_dir, label=label)


def _keep_finished_fold(earlier: Path, fold_dir: Path, cfg: Mapping[str, Any]) -> dict[str, Any] | None:
    """The metrics of ``earlier`` when that fold finished (its folder copied to ``fold_dir`` unless
    it is that folder), else None."""
    finished = _finished_fold(earlier, cfg)
    if finished is not None and earlier.resolve() != fold_dir.resolve():
        shutil.copytree(earlier, fold_dir)
    return finished


def _finished_fold(folder: Path, cfg: Mapping[str, Any]) -> dict[str, Any] | None:
    """The metrics of a fold ``folder`` finished with ``cfg`` (None when it did not finish);
    a `ConfigError` naming the options when it was made with others."""
    metrics_file = folder / "metrics.json"
    if not metrics_file.is_file() or (folder / "FAILED").exists():
        return None
    try:
        metrics = json.loads(metrics_file.read_text())
        saved = yaml.safe_load((folder / ".hydra" / "config.yaml").read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return None  # unreadable: fitted again
    if not isinstance(metrics, dict) or not isinstance(saved, dict):
        return None
    changed = changed_keys(_fold_options(saved), _fold_options(cfg))
    if changed:
        raise ConfigError("train.resume", f"{folder} was cross-validated with other options ({'; '.join(changed)}): "
                          "resume with the same options, or start afresh without train.resume")
    return metrics


def _fold_options(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """What a fold's results depend on: its config less ``run`` and ``hydra`` (how it showed
    progress) and ``train.resume`` (where it came from)."""
    train = {k: v for k, v in (cfg.get("train") or {}).items() if k != "resume"}
    return {**{k: v for k, v in cfg.items() if k not in ("run", "hydra")}, "train": train}


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
