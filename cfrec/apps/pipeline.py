"""One run, start to finish: config → data → split → fit → evaluate → run folder.

The run folder holds ``metrics.json``, the checkpoint (``model.pt`` + ``model.json``), the
HNSW indexes over the model's vectors, TensorBoard events under ``tb/`` and PNG plots; Hydra
adds ``.hydra/`` (the resolved config) and the log. In a torchrun job (``train.distributed``)
every rank trains its shard and rank 0 alone evaluates and writes (``docs/distributed.md``).
"""

from __future__ import annotations

import inspect
import logging
import time
from pathlib import Path
from typing import Any, Mapping

import torch

from cfrec import plots
from cfrec.apps.checks import check_against_data, check_config, check_eval  # noqa: F401 (check_eval: public)
from cfrec.apps.fitting import fit_model
from cfrec.checkpoint import load_model, save_model
from cfrec.data import Ratings, Split
from cfrec.errors import ConfigError
from cfrec.evaluate import evaluate, predict_pairs
from cfrec.apps.schema import complete
from cfrec.device import resolve_device
from cfrec.experiment import describe_split, load_data, make_split
from cfrec.io import write_json
from cfrec.models.base import Recommender
from cfrec.models.factor import FactorModel
from cfrec.models.registry import build_model, model_class
from cfrec.objectives import make_objective
from cfrec.tune import AUTO, auto_keys, search, with_value
from cfrec.index import HNSWIndex
from cfrec.monitor import TensorBoardLogger, overrides_of, run_hparams, run_name
from cfrec.threads import configure_run_threads
from cfrec.train import distributed
from cfrec.train.config import monitor_mode
from cfrec.serving import ITEM_INDEX, USER_INDEX

log = logging.getLogger(__name__)


def check_distributed(train_options: Mapping[str, Any], model: Recommender) -> None:
    """``train.distributed`` against the model and the way this process was started."""
    if train_options["distributed"]:
        if not isinstance(model, FactorModel):
            raise ConfigError("train.distributed", f"model {model.name!r} is not trained by gradient descent; "
                              "only the learned models (cf, cf_weighted, content) train data-parallel")
        distributed.check_launch("train.distributed")
    elif distributed.launched_world_size() > 1:
        raise ConfigError("train.distributed", f"false, but torchrun started {distributed.launched_world_size()} "
                          "processes: set train.distributed=true, or start one process")


def make_model(options: Mapping[str, Any], device: torch.device) -> Recommender:
    """An unfitted model from a ``model`` section; KNN ``embeddings`` may name another run folder.
    Options set to ``auto`` (chosen on validation, `cfrec.tune`) take their defaults here."""
    options = dict(options)
    for key in auto_keys(options):
        options = with_value(options, key, _default(str(options.get("name", "")), options, key))
    if isinstance(options.get("embeddings"), str):  # KNN over the vectors of another run's model
        options["embeddings"] = load_model(options["embeddings"]).model
    return build_model(str(options.pop("name", "")), options, device=str(device))


def _default(name: str, options: Mapping[str, Any], key: str) -> Any:
    """The code's default of dotted model option ``key`` (an objective's from its own defaults)."""
    head, _, rest = key.partition(".")
    if head == "objective":
        objective = options.get("objective", {})
        return make_objective({k: v for k, v in dict(objective).items() if v != AUTO}).config()[rest]
    return inspect.signature(model_class(name)).parameters[head].default


def fit_tuned(cfg: Mapping[str, Any], model: Recommender, train: Ratings, device: torch.device,
              progress: bool) -> tuple[Recommender, float, dict[str, Any]]:
    """Fit with every ``auto`` model option chosen on validation (`cfrec.tune.search`); returns
    (the best fitted model, the seconds of all fits, what was chosen)."""
    cfg = complete(cfg)
    options, chosen, start = dict(cfg["model"]), {}, time.perf_counter()
    monitor = cfg["train"]["monitor"]
    if not cfg["train"]["val_fraction"]:
        raise ConfigError("train.val_fraction", "must be > 0 when a model option is auto: the choice is made on it")
    for key in auto_keys(options):
        def fit(value: float) -> tuple[float, Recommender]:
            candidate = make_model(with_value(options, key, value), device)
            fit_model(candidate, train, cfg["train"], device=device, progress=progress)
            summary = validation_summary(candidate, monitor)
            sign = 1.0 if summary["monitor_mode"] == "min" else -1.0
            log.info("tuning model.%s: %.4g → %s %.5f", key, value, summary["monitor"], summary[summary["monitor"]])
            return sign * summary[summary["monitor"]], candidate

        value, model, tried = search(fit, float(_default(options["name"], options, key)))
        options = with_value(options, key, value)
        chosen[key] = {"value": value, "tried": [[v, abs(score)] for v, score in tried]}
        log.info("model.%s=auto chose %.4g (%d fits)", key, value, len(tried))
    return model, time.perf_counter() - start, chosen


def load_split(cfg: Mapping[str, Any]) -> Split:
    """Data and split of a run (the seed set first)."""
    cfg = complete(cfg)
    configure_run_threads(cfg)
    torch.manual_seed(cfg["seed"])
    return make_split(load_data(cfg["data"]), cfg["split"])


def prepare(cfg: Mapping[str, Any]) -> tuple[Recommender, Split, torch.device]:
    """Validate every section, build the model, then load the data and split it."""
    cfg = check_config(cfg)
    device = resolve_device(cfg["device"])
    model = make_model(cfg["model"], device)
    check_distributed(cfg["train"], model)
    split = load_split(cfg)
    check_against_data(cfg, split, learned=isinstance(model, FactorModel))
    try:
        model.validate(split.train)
    except ConfigError as err:
        raise err.under("model") from None
    return model, split, device


def run(cfg: Mapping[str, Any], run_dir: str | Path, label: str | None = None) -> dict[str, Any] | None:
    """Fit and evaluate the configured model; write the run folder; return the metrics.

    In a torchrun job, ranks other than 0 only train (their shard) and return None.
    """
    run_dir = Path(run_dir)
    model, split, device = prepare(cfg)
    cfg = complete(cfg)
    train, test = split
    label = label or model.name
    options = cfg["run"]
    main = distributed.launched_rank() == 0
    logger = (TensorBoardLogger(run_dir / "tb", run_name(label, overrides_of(run_dir)))
              if options["tensorboard"] and main else None)
    log.info("fitting %s on %s (%d ratings; test %d pairs)", label, train.name, len(train), len(test))
    tuned: dict[str, Any] = {}
    if auto_keys(cfg["model"]):
        model, fit_seconds, tuned = fit_tuned(cfg, model, train, device, options["progress"])
    else:
        fit_seconds = fit_model(
            model, train, cfg["train"], [logger.on_epoch_end] if logger else [], device=device,
            progress=options["progress"], run_dir=run_dir if main else None,
            describe={"model": dict(cfg["model"]), "data": dict(cfg["data"]), "split": dict(cfg["split"])},
        )
    if not main:
        return None
    if options["save_model"]:  # before evaluating: an interrupted evaluation keeps the model
        save_model(model, train, run_dir, config_name=label, trained_on=describe_split(cfg["split"]))
    if holds_out_nothing(cfg):
        metrics = untested_metrics(label, train, fit_seconds)
    else:
        start = time.perf_counter()
        metrics = evaluate(model, train, test, device=device, progress=options["progress"], **cfg["eval"])
        metrics.update({
            "model": label, "data": train.name.removesuffix("/train"), "fit_seconds": fit_seconds,
            "eval_seconds": time.perf_counter() - start, "n_train": len(train), "n_dropped": split.n_dropped,
        })
    metrics.update(validation_summary(model, cfg["train"]["monitor"]))
    if tuned:
        metrics["tuned"] = tuned
    write_json(run_dir / "metrics.json", metrics)
    log.info("%s: %s", label, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
    if options["build_index"]:
        build_indexes(model, cfg["index"], run_dir)
    if options["plots"]:
        write_plots(model, train, test, run_dir, label, device)
    if logger is not None:
        if model.item_vectors is not None:
            logger.log_item_embeddings(model.item_vectors, train.item_info, train.item_map.ids)
        logger.log_hparams(run_hparams(cfg, label, isinstance(model, FactorModel)), metrics)
        logger.close()
    return metrics


def validation_summary(model: Recommender, monitor: str = "auto") -> dict[str, Any]:
    """A learned model's validation metrics at its best epoch, as ``valid_*`` keys, and which one
    chose that epoch (``monitor``: e.g. ``valid_rmse``, lower is better; ``valid_ndcg@10``, higher).
    Sweeps sort on it; no test metric ever does."""
    history = getattr(model, "history", None) or []
    if isinstance(model, FactorModel) and monitor == "auto":
        monitor = model.monitor
    scored = [row for row in history if monitor in row]
    if not scored or monitor == "loss":
        return {}
    pick = min if monitor_mode(monitor) == "min" else max
    best = pick(scored, key=lambda row: row[monitor])
    summary: dict[str, Any] = {f"valid_{k[4:]}": v for k, v in best.items() if k.startswith("val_")}
    final = getattr(model, "final_validation", None) or {}  # the returned model, where `finish` changed it
    summary.update({f"valid_{k[4:]}" if k.startswith("val_") else k: v for k, v in final.items()})
    summary.update({"monitor": f"valid_{monitor[4:]}", "monitor_mode": monitor_mode(monitor),
                    "best_epoch": int(best["epoch"]), "epochs_run": len(history)})
    return summary


def build_indexes(model: Recommender, params: Mapping[str, Any], run_dir: Path) -> None:
    """HNSW indexes over the model's item and user vectors, saved beside the checkpoint."""
    for vectors, name in ((model.item_vectors, ITEM_INDEX), (model.user_vectors, USER_INDEX)):
        if vectors is not None:
            index = HNSWIndex(**params).build(vectors)
            index.save(run_dir / name)
            k = min(10, len(vectors) - 1)
            if k >= 1:  # a catalog of one has no neighbours to recall
                log.info("%s: HNSW recall@%d against exact search %.4f", name, k, index.recall(k, sample=500))


def write_plots(model: Recommender, train: Ratings, test: Ratings, run_dir: Path, label: str, device) -> None:
    """Rating distribution, error histogram and true-vs-predicted PNGs of one model (rating
    plots only for a model that predicts ratings, ranking plots for the others; the rating
    distribution and training curves alone without a test set), and its training curves."""
    if len(test) == 0 or not model.predicts_ratings:
        write_untested_or_ranking_plots(model, train, test, run_dir, label, device)
        return
    plots.rating_distribution(train.values, test.values, run_dir / "rating_distribution.png")
    if model.predicts_ratings:
        pred = predict_pairs(model, test.users, test.items, device=device).numpy()
        plots.error_histograms({label: pred - test.values}, run_dir / "prediction_errors.png")
        plots.true_vs_predicted(test.values, pred, run_dir / "true_vs_predicted.png", label)
    history = getattr(model, "history", None)
    if history:
        plots.training_curves(history, run_dir / "training_curves.png", getattr(model, "final_validation", None))


def holds_out_nothing(cfg: Mapping[str, Any]) -> bool:
    """``split=none``: the model is fitted on every rating for use, and nothing is evaluated."""
    return cfg["split"]["name"] == "none"


def untested_metrics(label: str, train: Ratings, fit_seconds: float) -> dict[str, Any]:
    """metrics.json of a run without a test set: what was fitted, on how much, how fast."""
    return {"model": label, "data": train.name.removesuffix("/all"), "test": None, "n_train": len(train),
            "fit_seconds": fit_seconds}


def write_untested_or_ranking_plots(model: Recommender, train: Ratings, test: Ratings, run_dir: Path, label: str,
                                    device) -> None:
    """Plots that need no predicted rating: rating distribution, training curves and, with a test
    set (a ranking-only model), Recall@K against K and the scores of held-out liked movies."""
    plots.rating_distribution(train.values, test.values if len(test) else None, run_dir / "rating_distribution.png")
    history = getattr(model, "history", None)
    if history:
        plots.training_curves(history, run_dir / "training_curves.png")
    if len(test):
        plots.ranking_plots(model, train, test, run_dir, label, device=device)

