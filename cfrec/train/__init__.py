"""The training loop shared by every learned model: config, data layouts, trainer."""

from cfrec.train.batches import DenseLayout, IndexLayout, choose_layout
from cfrec.train.config import TrainConfig
from cfrec.train.trainer import EpochCallback, Trainer

__all__ = ["DenseLayout", "EpochCallback", "IndexLayout", "TrainConfig", "Trainer", "choose_layout"]
