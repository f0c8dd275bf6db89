"""Models behind one protocol (`Recommender`): baselines, neighbourhood models, learned factor models."""

from cfrec.models.base import NotFittedError, Recommender
from cfrec.models.baseline import BiasBaseline, GlobalMean, Popularity
from cfrec.models.collaborative import CollaborativeFiltering
from cfrec.models.content import ContentBased
from cfrec.models.foldin import FoldedUsers
from cfrec.models.knn import ItemKNN, UserKNN

__all__ = [
    "BiasBaseline", "CollaborativeFiltering", "ContentBased", "FoldedUsers", "GlobalMean", "ItemKNN",
    "NotFittedError", "Popularity", "Recommender", "UserKNN",
]
