"""Item feature matrices for `ContentBased`: genres multi-hot, release-year buckets, a constant."""

from __future__ import annotations

import numpy as np

from cfrec.data.ratings import ItemInfo
from cfrec.errors import ConfigError
from cfrec.validation import check_int


def item_features(
    info: ItemInfo, *, genres: bool = True, year_width: int | None = 10, constant: bool = True,
) -> tuple[np.ndarray, list[str]]:
    """(n_items, f) float32 features of every item and the name of each column.

    ``genres``: one 0/1 column per genre. ``year_width``: one-hot release-year buckets of that
    many years (1990-1999, ...), one column per bucket that occurs; items of unknown year get
    none. ``constant``: a column of ones.
    """
    columns: list[np.ndarray] = []
    names: list[str] = []
    if genres:
        columns.append(info.genres.astype(np.float32))
        names += [f"genre:{name}" for name in info.genre_names]
    if year_width is not None:
        check_int("year_width", year_width, 1)
        known = ~np.isnan(info.years)
        start = np.full(len(info), -1, dtype=np.int64)
        start[known] = (info.years[known] // year_width * year_width).astype(np.int64)
        buckets = np.unique(start[known])
        columns.append((start[:, None] == buckets[None, :]).astype(np.float32))  # (n_items, n_buckets)
        names += [f"year:{b}-{b + year_width - 1}" for b in buckets]
    if constant:
        columns.append(np.ones((len(info), 1), dtype=np.float32))
        names.append("constant")
    if not columns:
        raise ConfigError("genres", "no item features left: enable genres, year_width or constant")
    return np.concatenate(columns, axis=1), names
