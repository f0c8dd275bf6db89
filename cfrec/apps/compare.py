"""``cfrec-compare``: several models on one split; a table (markdown + CSV) and comparison plots.

Every entry takes the run's ``train.*`` (an entry's own ``train:`` keys win). A model that
fails is reported as failed (comparison.md/.csv, metrics.json) and the others are kept.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pandas as pd
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from cfrec import plots
from cfrec.apps import guard
from cfrec.apps.checks import check_against_data, check_config, check_train
from cfrec.apps.fitting import fit_model
from cfrec.apps.guard import describe, report
from cfrec.apps.pipeline import load_split, make_model
from cfrec.apps.schema import check_section, model_preset
from cfrec.checkpoint import save_model
from cfrec.data import Split
from cfrec.device import resolve_device
from cfrec.errors import CfrecError, ConfigError, RunStopped
from cfrec.evaluate import evaluate, predict_pairs
from cfrec.io import atomic_path, write_json
from cfrec.models.base import Recommender
from cfrec.models.factor import FactorModel
from cfrec.tables import to_markdown

log = logging.getLogger(__name__)

MODEL_FAILURES = (CfrecError, MemoryError, torch.cuda.OutOfMemoryError)
"""How one model of a comparison fails and the others go on: a user mistake, a divergence, an
interrupted fit, too little memory. Anything else is a bug: it ends the run with its traceback."""
TABLE_COLUMNS = ["model", "accuracy", "rmse", "mae", "recall@50", "ndcg@10", "fit_seconds", "eval_seconds"]


def model_entry(label: str, entry: Mapping[str, Any],
                train: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(model options, train options) of one compare entry: the preset ``model=<entry's model>``
    with the entry's keys, and the run's ``train`` section with the keys of the train preset that
    model preset chooses, if any, and the entry's own ``train:`` keys on top."""
    key = f"compare.models.{label}"
    entry = dict(entry)
    choice = entry.pop("model", None)
    options, preset_train = model_preset(choice, f"{key}.model")
    own = entry.pop("train", None) or {}
    train_options = {**{k: v for k, v in (train or {}).items() if k != "resume"}, **preset_train, **own}
    try:
        check_train(train_options)
    except ConfigError as err:
        raise (err.under(key) if own else err) from None
    options.update(entry)
    check_section(key, "model", options)  # an option the model lacks, or of the wrong type, named by its key
    return options, train_options


def _entry_model(label: str, options: Mapping[str, Any], device: torch.device) -> Recommender:
    """The model of one compare entry; a bad option value is named under the entry's key."""
    try:
        return make_model(options, device)
    except ConfigError as err:
        raise ConfigError(f"compare.models.{label}.{err.key.removeprefix('model.')}", err.message) from None


def compare(cfg: Mapping[str, Any], run_dir: str | Path) -> pd.DataFrame:
    """Fit and evaluate every entry of ``compare.models`` on one split; write the report."""
    run_dir = Path(run_dir)
    cfg = check_config(cfg, extra=("compare",))
    settings = cfg["compare"]
    if cfg["train"]["resume"] is not None:
        raise ConfigError("train.resume", "cfrec-compare fits every model afresh; resume a run with cfrec-train")
    entries = dict(settings["models"])
    if settings["only"]:
        missing = set(settings["only"]) - set(entries)
        if missing:
            raise ConfigError("compare.only", f"no entries named {sorted(missing)}")
        entries = {k: v for k, v in entries.items() if k in settings["only"]}
    device = resolve_device(cfg["device"])
    if cfg["split"]["name"] == "none":
        raise ConfigError("split", "none holds out no test set, and cfrec-compare measures on one; use a split")
    specs = {label: model_entry(label, entry, cfg["train"]) for label, entry in entries.items()}
    models = {label: _entry_model(label, options, device) for label, (options, _) in specs.items()}  # all valid before work
    split = load_split(cfg)
    train, test = split
    check_against_data(cfg, split, learned=any(isinstance(m, FactorModel) for m in models.values()))
    for label, model in models.items():  # settings that do not fit this data fail before any fit
        try:
            model.validate(train)
        except ConfigError as err:
            raise err.under(f"compare.models.{label}") from None
    rows: list[dict[str, Any]] = []
    errors: dict[str, np.ndarray] = {}
    reported = False
    try:
        for label, model in models.items():
            try:
                rows.append(fit_and_evaluate(label, model, specs[label][1], split, cfg, run_dir, device, errors))
            except MODEL_FAILURES as err:  # a failing model is reported; the others go on
                message, _, _ = describe(err)
                log.error("%s failed: %s", label, message)
                rows.append({"model": label, "status": "failed", "error": message})
    except KeyboardInterrupt:  # keep what is done; the rest is reported as interrupted
        done = {row["model"] for row in rows}
        rows += [{"model": label, "status": "failed", "error": "interrupted"} for label in models if label not in done]
        reported = True
        write_report(rows, errors, train.values, test.values, run_dir)
        raise RunStopped(f"interrupted: the finished models' results are in {run_dir}", 130) from None
    finally:
        if not reported and len(rows) < len(models) and rows:  # a bug: keep what is done, then its traceback
            write_report(rows, errors, train.values, test.values, run_dir)
    table = write_report(rows, errors, train.values, test.values, run_dir)
    report(run_dir, rows, keys=("status", "rmse", "accuracy", "recall@50", "ndcg@10", "fit_seconds"))
    failed = [row for row in rows if row["status"] != "ok"]
    if failed:
        summary = "; ".join(f"{row['model']}: {row['error']}" for row in failed)
        raise CfrecError(f"{len(failed)} of {len(rows)} models failed ({summary}); the others' results are in {run_dir}")
    return table


def fit_and_evaluate(label: str, model: Recommender, train_options: Mapping[str, Any] | None, split: Split,
                     cfg: Mapping[str, Any], run_dir: Path, device: torch.device,
                     errors: dict[str, np.ndarray]) -> dict[str, Any]:
    """One model of the comparison: fit, evaluate, plot; its metrics row (``status`` ok)."""
    train, test = split
    settings = cfg["compare"]
    fit_seconds = fit_model(model, train, train_options, device=device, progress=cfg["run"]["progress"])
    start = time.perf_counter()
    metrics: dict[str, Any] = {"model": label, "status": "ok"}
    metrics.update(evaluate(model, train, test, device=device,
                            **{**cfg["eval"], "ks": sorted({*cfg["eval"]["ks"], min(50, train.n_items)})}))
    metrics.update(fit_seconds=fit_seconds, eval_seconds=time.perf_counter() - start)
    head = settings["head"]
    if head and model.predicts_ratings:
        first = evaluate(model, train, test, limit=head, ranking=False, device=device)
        metrics.update({f"accuracy@first{head}": first["accuracy"], f"rmse@first{head}": first["rmse"]})
    metrics["predicts_ratings"] = model.predicts_ratings
    if metrics["predicts_ratings"]:  # ranking scores (the weighted mask) have no rating error to plot
        pred = predict_pairs(model, test.users, test.items, device=device).numpy()
        errors[label] = pred - test.values
        plots.true_vs_predicted(test.values, pred, run_dir / f"true_vs_predicted_{label}.png", label)
    if settings["save_models"]:
        save_model(model, train, run_dir / "models" / label)
    log.info("%s: %s, recall@50 %.4f, fit %.2f s", label,
             f"rmse {metrics['rmse']:.4f}, accuracy {metrics['accuracy']:.4f}" if model.predicts_ratings
             else "ranking only", metrics.get("recall@50", float("nan")), fit_seconds)
    return metrics


def write_report(rows: list[dict[str, Any]], errors: dict[str, np.ndarray], train_values: np.ndarray,
                 test_values: np.ndarray, run_dir: Path) -> pd.DataFrame:
    """comparison.md / .csv, metrics.json (every metric of every model; failed ones with their
    error) and the PNGs of the models that finished; returns the table."""
    table = pd.DataFrame(rows)
    for column in TABLE_COLUMNS:
        if column not in table:
            table[column] = np.nan
    head_columns = [c for c in table.columns if "@first" in c]
    columns = TABLE_COLUMNS[:1] + ["status"] + head_columns + TABLE_COLUMNS[1:] + (["error"] if "error" in table else [])
    table = table[columns]
    with atomic_path(run_dir / "comparison.csv") as tmp:
        table.to_csv(tmp, index=False)
    finished = [row for row in rows if row["status"] == "ok"]
    scores_only = [row["model"] for row in finished if not row["predicts_ratings"]]
    note = (f"\n{', '.join(scores_only)}: ranking models (their scores are not ratings): accuracy, RMSE and MAE "
            f"do not apply and are left empty.\n" if scores_only else "")
    failed = [f"{row['model']}: failed: {row['error']}" for row in rows if row["status"] != "ok"]
    note += "".join(f"\n{line}\n" for line in failed)
    with atomic_path(run_dir / "comparison.md") as tmp:
        tmp.write_text(to_markdown(table.drop(columns=["error"], errors="ignore")) + note)
    write_json(run_dir / "metrics.json", {row["model"]: row for row in rows})
    plots.rating_distribution(train_values, test_values, run_dir / "rating_distribution.png")
    if errors:
        plots.error_histograms(errors, run_dir / "prediction_errors.png")
    if finished:
        done = table[table["status"] == "ok"]
        rated = np.array([row["predicts_ratings"] for row in finished])
        bars = {"accuracy": np.where(rated, done["accuracy"], np.nan), "RMSE": np.where(rated, done["rmse"], np.nan),
                "Recall@50": done["recall@50"].to_numpy()}
        plots.metric_bars(done["model"].tolist(), bars, run_dir / "metrics.png")
    log.info("comparison:\n%s", to_markdown(table.drop(columns=["error"], errors="ignore")))
    return table


@hydra.main(config_path="../conf", config_name="compare", version_base="1.3")
def hydra_main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    guard.run_job(lambda: compare(OmegaConf.to_container(cfg, resolve=True), run_dir), run_dir,
                  multirun=hydra_cfg.mode == RunMode.MULTIRUN)


def main() -> None:
    """The console script: Hydra's app, then the exit code (1 when a model failed, 130 on Ctrl-C)."""
    guard.set_app("cfrec-compare")
    hydra_main()
    sys.exit(guard.exit_code())


if __name__ == "__main__":
    main()
