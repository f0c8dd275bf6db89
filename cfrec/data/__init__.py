"""Data layer: MovieLens and generic readers, synthetic data, the `Ratings` container, splits."""

from __future__ import annotations

from cfrec.data.download import RELEASES, data_root, fetch
from cfrec.data.idmap import IdMap
from cfrec.data.movielens import read_movielens
from cfrec.data.ratings import ItemInfo, Ratings
from cfrec.data.readers import read_ratings
from cfrec.data.sources import SOURCES, check_data, load, load_data
from cfrec.data.split import Split, kfold_split, per_user_split, random_split, temporal_split
from cfrec.data.synthetic import SyntheticData, synthetic

__all__ = [
    "IdMap", "ItemInfo", "Ratings", "Split", "SyntheticData", "RELEASES", "SOURCES", "data_root", "fetch", "load",
    "check_data", "load_data",
    "read_movielens", "read_ratings", "synthetic", "per_user_split", "random_split", "temporal_split",
    "kfold_split",
]
