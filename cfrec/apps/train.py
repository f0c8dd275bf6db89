"""``cfrec-train``: fit one model, evaluate it, save everything in its run folder."""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from cfrec.apps.pipeline import run


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Test RMSE of the run (None on the ranks other than 0 of a torchrun job: they do not evaluate)."""
    hydra_cfg = HydraConfig.get()
    metrics = run(OmegaConf.to_container(cfg, resolve=True), hydra_cfg.runtime.output_dir,
                  label=hydra_cfg.runtime.choices.get("model"))
    return None if metrics is None else float(metrics["rmse"])


if __name__ == "__main__":
    main()
