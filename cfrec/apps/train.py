"""``cfrec-train``: fit one model, evaluate it, save everything in its run folder.

A user mistake ends the run with one line on stderr (``CFREC_DEBUG=1``: with its traceback) and
``FAILED`` in the run folder; a sweep (``-m``) records a failed job and runs the others; the
run ends by printing its folder and main metrics (`cfrec.apps.guard`).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from cfrec.apps import guard, rundir
from cfrec.apps.fitting import resume_command
from cfrec.apps.pipeline import run
from cfrec.apps.schema import complete
from cfrec.checkpoint import META, TRAIN_STATE
from cfrec.errors import RunStopped

APP = "cfrec-train"
log = logging.getLogger(__name__)


def train(cfg: dict[str, Any], run_dir: Path, label: str | None) -> dict[str, Any] | None:
    """One run into ``run_dir`` (resumed in place: the old run's derived files are removed first)."""
    rundir.clear_for_resume_in_place(run_dir, complete(cfg)["train"]["resume"])
    try:
        metrics = run(cfg, run_dir, label=label)
    except KeyboardInterrupt:
        raise interrupted_after_fit(run_dir) from None
    if metrics is not None:
        guard.report(run_dir, [metrics])
    return metrics


def interrupted_after_fit(run_dir: Path) -> RunStopped:
    """Ctrl-C outside training (loading, evaluating, writing): what was kept, how to go on."""
    kept = []
    if (run_dir / META).is_file():
        kept.append(f"the fitted model is saved in {run_dir} (cfrec.load works)")
    if (run_dir / TRAIN_STATE).is_file():
        kept.append(f"the training state too; finish evaluating with: {resume_command(run_dir)}")
    message = "interrupted: " + ("; ".join(kept) if kept else "nothing was fitted yet")
    log.warning("%s", message)
    return RunStopped(message, 130)


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def hydra_main(cfg: DictConfig) -> float | None:
    """The run's validation metric, for Hydra's sweepers (see `objective`); None for a failed job."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    label = hydra_cfg.runtime.choices.get("model")

    def job() -> float | None:
        return objective(train(OmegaConf.to_container(cfg, resolve=True), run_dir, label))

    return guard.run_job(job, run_dir, multirun=hydra_cfg.mode == RunMode.MULTIRUN)


def main() -> None:
    """The console script: Hydra's app, then the exit code of its jobs (1 when a sweep job failed)."""
    guard.set_app(APP)
    hydra_main()
    sys.exit(guard.exit_code())


def objective(metrics: dict | None) -> float | None:
    """The validation metric a run was monitored on (``valid_rmse`` — lower is better — or
    ``valid_ndcg@10``, higher, as ``metrics.json``'s ``monitor`` says). None where nothing was
    validated (models without training, ``train.val_fraction=0``, ranks other than 0): a test
    metric is never returned, so no sweep can tune on test."""
    if metrics is None or not metrics.get("monitor") or metrics.get(metrics["monitor"]) is None:
        return None
    return float(metrics[metrics["monitor"]])


if __name__ == "__main__":
    main()
