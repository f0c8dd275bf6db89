"""``cfrec-compare``: several models on one split; a table (markdown + CSV) and comparison plots."""

from __future__ import annotations

import logging
import time
from importlib.resources import files
from pathlib import Path
from typing import Any, Mapping

import hydra
import numpy as np
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from cfrec import plots
from cfrec.apps.fitting import fit_model
from cfrec.apps.pipeline import check_eval, load_split, make_model
from cfrec.checkpoint import save_model
from cfrec.errors import ConfigError
from cfrec.evaluate import evaluate, predict_pairs
from cfrec.experiment import check_data_source, resolve_device
from cfrec.io import atomic_path, write_json
from cfrec.tables import to_markdown

log = logging.getLogger(__name__)

TABLE_COLUMNS = ["model", "accuracy", "rmse", "mae", "recall@50", "ndcg@10", "fit_seconds", "eval_seconds"]


def model_entry(label: str, entry: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(model options, train options or None) of one compare entry, from its conf/model defaults."""
    entry = dict(entry)
    choice = entry.pop("model", None)
    conf = files("cfrec.conf")
    if choice is None or not conf.joinpath("model", f"{choice}.yaml").is_file():
        raise ConfigError(f"compare.models.{label}.model", f"no conf/model/{choice}.yaml")
    options = model_preset(choice)
    train_options = entry.pop("train", None)
    train_file = conf.joinpath("train", f"{choice}.yaml")
    if train_file.is_file():
        base = OmegaConf.to_container(OmegaConf.load(train_file))
        train_options = {**base, **(train_options or {})}
    unknown = set(entry) - set(options)
    if unknown:
        raise ConfigError(f"compare.models.{label}.{sorted(unknown)[0]}", f"not an option of {choice}")
    options.update(entry)
    return options, train_options


def model_preset(choice: str) -> dict[str, Any]:
    """conf/model/<choice>.yaml with its defaults list applied (its ``objective`` preset)."""
    conf = files("cfrec.conf").joinpath("model")
    options = OmegaConf.to_container(OmegaConf.load(conf.joinpath(f"{choice}.yaml")))
    for default in options.pop("defaults", []):
        if isinstance(default, Mapping):
            for group, name in default.items():
                options[group] = OmegaConf.to_container(OmegaConf.load(conf.joinpath(group, f"{name}.yaml")))
    return options


def compare(cfg: Mapping[str, Any], run_dir: str | Path) -> pd.DataFrame:
    """Fit and evaluate every entry of ``compare.models`` on one split; write the report."""
    run_dir = Path(run_dir)
    settings = cfg["compare"]
    entries = dict(settings["models"])
    if settings.get("only"):
        missing = set(settings["only"]) - set(entries)
        if missing:
            raise ConfigError("compare.only", f"no entries named {sorted(missing)}")
        entries = {k: v for k, v in entries.items() if k in settings["only"]}
    device = resolve_device(str(cfg.get("device", "auto")))
    check_data_source(cfg["data"])
    check_eval(cfg["eval"])
    if cfg["split"].get("name") == "none":
        raise ConfigError("split", "none holds out no test set, and cfrec-compare measures on one; use a split")
    specs = {label: model_entry(label, entry) for label, entry in entries.items()}
    models = {label: make_model(options, device) for label, (options, _) in specs.items()}  # all valid before work
    train, test = load_split(cfg)
    for label, model in models.items():  # settings that do not fit this data fail before any fit
        try:
            model.validate(train)
        except ConfigError as err:
            raise err.under(f"compare.models.{label}") from None
    rows, errors = [], {}
    for label, model in models.items():
        fit_seconds = fit_model(model, train, specs[label][1], device=device,
                                progress=cfg.get("run", {}).get("progress", True))
        start = time.perf_counter()
        metrics = evaluate(model, train, test, device=device, **{**cfg["eval"], "ks": sorted({*cfg["eval"]["ks"], 50})})
        metrics.update(model=label, fit_seconds=fit_seconds, eval_seconds=time.perf_counter() - start)
        head = int(settings.get("head") or 0)
        if head and model.predicts_ratings:
            first = evaluate(model, train, test, limit=head, ranking=False, device=device)
            metrics.update({f"accuracy@first{head}": first["accuracy"], f"rmse@first{head}": first["rmse"]})
        metrics["predicts_ratings"] = model.predicts_ratings
        if metrics["predicts_ratings"]:  # ranking scores (the weighted mask) have no rating error to plot
            pred = predict_pairs(model, test.users, test.items, device=device).numpy()
            errors[label] = pred - test.values
            plots.true_vs_predicted(test.values, pred, run_dir / f"true_vs_predicted_{label}.png", label)
        if settings.get("save_models"):
            save_model(model, train, run_dir / "models" / label)
        log.info("%s: %s, recall@50 %.4f, fit %.2f s", label,
                 f"rmse {metrics['rmse']:.4f}, accuracy {metrics['accuracy']:.4f}" if model.predicts_ratings
                 else "ranking only", metrics["recall@50"], fit_seconds)
        rows.append(metrics)
    table = pd.DataFrame(rows)
    head_columns = [c for c in table.columns if "@first" in c]
    table = table.reindex(columns=TABLE_COLUMNS[:1] + head_columns + TABLE_COLUMNS[1:])
    write_report(table, rows, errors, train.values, test.values, run_dir)
    return table


def write_report(table: pd.DataFrame, rows: list[dict], errors: dict[str, np.ndarray], train_values: np.ndarray,
                 test_values: np.ndarray, run_dir: Path) -> None:
    """comparison.md / .csv, metrics.json (every metric of every model) and the PNGs."""
    with atomic_path(run_dir / "comparison.csv") as tmp:
        table.to_csv(tmp, index=False)
    scores_only = [row["model"] for row in rows if not row["predicts_ratings"]]
    note = (f"\n{', '.join(scores_only)}: ranking models (their scores are not ratings): accuracy, RMSE and MAE "
            f"do not apply and are left empty.\n" if scores_only else "")
    with atomic_path(run_dir / "comparison.md") as tmp:
        tmp.write_text(to_markdown(table) + note)
    write_json(run_dir / "metrics.json", {row["model"]: row for row in rows})
    plots.rating_distribution(train_values, test_values, run_dir / "rating_distribution.png")
    if errors:
        plots.error_histograms(errors, run_dir / "prediction_errors.png")
    rated = np.array([row["predicts_ratings"] for row in rows])
    bars = {"accuracy": np.where(rated, table["accuracy"], np.nan), "RMSE": np.where(rated, table["rmse"], np.nan),
            "Recall@50": table["recall@50"].to_numpy()}
    plots.metric_bars(table["model"].tolist(), bars, run_dir / "metrics.png")
    log.info("comparison:\n%s", to_markdown(table))


@hydra.main(config_path="../conf", config_name="compare", version_base="1.3")
def main(cfg: DictConfig) -> None:
    compare(OmegaConf.to_container(cfg, resolve=True), HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    main()
