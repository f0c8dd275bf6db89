"""``cfrec-train``: fit one model, evaluate it, save everything in its run folder."""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from cfrec.apps.pipeline import run


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """The run's validation metric, for Hydra's sweepers (see `objective`)."""
    hydra_cfg = HydraConfig.get()
    metrics = run(OmegaConf.to_container(cfg, resolve=True), hydra_cfg.runtime.output_dir,
                  label=hydra_cfg.runtime.choices.get("model"))
    return objective(metrics)


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
