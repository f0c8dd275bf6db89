"""``cfrec-train``: fit one model, evaluate it, save everything in its run folder."""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from cfrec.apps.pipeline import run


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """The run's objective for Hydra sweepers (e.g. Optuna, ``conf/hparams_search/``): see `objective`."""
    hydra_cfg = HydraConfig.get()
    metrics = run(OmegaConf.to_container(cfg, resolve=True), hydra_cfg.runtime.output_dir,
                  label=hydra_cfg.runtime.choices.get("model"))
    return objective(metrics)


def objective(metrics: dict | None) -> float | None:
    """Validation RMSE where training validated (``valid_rmse``), else test RMSE; None when the run
    has neither (a ranking-only model without validation, ``split=none`` without validation, or a
    torchrun rank other than 0)."""
    if metrics is None:
        return None
    for key in ("valid_rmse", "rmse"):
        if metrics.get(key) is not None:
            return float(metrics[key])
    return None


if __name__ == "__main__":
    main()
