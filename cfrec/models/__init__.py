"""Models behind one protocol (`Recommender`): baselines, neighbourhood models, learned factor models."""

from cfrec.models.base import NotFittedError, Recommender
from cfrec.models.baseline import BiasBaseline, GlobalMean, Popularity

__all__ = ["BiasBaseline", "GlobalMean", "NotFittedError", "Popularity", "Recommender"]
