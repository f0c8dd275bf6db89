"""Data layer: MovieLens and generic readers, synthetic data, the `Ratings` container, splits."""

from __future__ import annotations

import os
from pathlib import Path

from cfrec.data.download import RELEASES, data_root, fetch
from cfrec.data.idmap import IdMap
from cfrec.data.movielens import read_movielens
from cfrec.data.parsing import OnDuplicate
from cfrec.data.ratings import ItemInfo, Ratings
from cfrec.data.readers import read_ratings
from cfrec.data.split import Split, kfold_split, per_user_split, random_split, temporal_split
from cfrec.data.synthetic import SyntheticData, synthetic

__all__ = [
    "IdMap", "ItemInfo", "Ratings", "Split", "SyntheticData", "RELEASES", "data_root", "fetch", "load",
    "read_movielens", "read_ratings", "synthetic", "per_user_split", "random_split", "temporal_split",
    "kfold_split",
]


def load(
    source: str | os.PathLike,
    *,
    root: str | os.PathLike | None = None,
    download: bool = True,
    on_duplicate: OnDuplicate = "last",
) -> Ratings:
    """Ratings from a MovieLens-layout folder, a ratings file, or a known release name.

    ``source`` may be a folder laid out like any MovieLens release (layout detected from the
    files present), a single ratings file (CSV/TSV/parquet, see `read_ratings`), or one of
    ``ml-100k``, ``ml-1m``, ``ml-latest-small``, ``ml-20m``, ``ml-25m``: looked up under the data
    root (``root``, ``$CFREC_DATA``, or ``~/.cache/cfrec``) and downloaded, checksum-verified, when
    absent. Repeated (user, item) pairs are resolved by ``on_duplicate`` and counted in the log.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return read_movielens(path, on_duplicate=on_duplicate)
    if path.is_file():
        return read_ratings(path, on_duplicate=on_duplicate)
    if str(source) in RELEASES:
        folder = fetch(str(source), root, download=download)
        return read_movielens(folder, on_duplicate=on_duplicate, name=str(source))
    raise FileNotFoundError(
        f"{source}: neither a folder, a file, nor a known data set ({', '.join(RELEASES)})"
    )
