"""The one path from a parsed ratings table to `Ratings`, shared by every reader.

numeric check (ids, ratings, timestamps) → scale check → id maps → duplicate policy →
`Ratings`, built once. Every error names the file and the line.
"""

from __future__ import annotations

import logging
from typing import Mapping

import numpy as np
import pandas as pd

from cfrec.data.fast import Coded
from cfrec.data.idmap import IdMap
from cfrec.data.parsing import OnDuplicate, Table, check_scale, numeric_column, resolve_duplicates
from cfrec.data.ratings import Ratings
from cfrec.errors import DataFormatError

log = logging.getLogger(__name__)


def to_ratings(
    table: Table,
    role: Mapping[str, object],
    *,
    integer_ids: bool = True,
    scale: tuple[float, float] | None = None,
    on_duplicate: OnDuplicate = "last",
    labels: tuple[str, str] = ("user id", "item id"),
    name: str = "ratings",
    meta: dict | None = None,
) -> Ratings:
    """`Ratings` from ``table``'s columns ``role["user"|"item"|"rating"]`` (and ``"timestamp"``).

    Integer ids must be written as integers; otherwise ids are the text as written, stripped.
    The id columns are taken out of ``table`` once mapped, to keep peak memory low.
    With a ``scale``, ratings outside it are errors; repeated (user, item) pairs follow
    ``on_duplicate`` (see `resolve_duplicates`).
    """
    maps, codes = [], []
    for key, label in zip(("user", "item"), labels):
        column = role[key]
        if integer_ids:
            id_map, code = IdMap.from_values(numeric_column(table, column, label, integer=True), key)
        else:
            id_map, code = _text_ids(table, column, key)
        table.frame.pop(column)  # raw ids are no longer needed: a 25M-row file holds 200 MB per column
        maps.append(id_map)
        codes.append(code)
    values = numeric_column(table, role["rating"], "rating", integer=False)
    check_scale(values, scale, table)
    timestamps = None
    if "timestamp" in role:
        timestamps = numeric_column(table, role["timestamp"], "timestamp", integer=False, allow_missing=True)
    users, items = codes

    def describe(row: int) -> str:
        return f"user {maps[0].id(users[row])!r} rated item {maps[1].id(items[row])!r}"

    keep, values = resolve_duplicates(users, items, values, on_duplicate, table, describe)
    if keep is not None:
        users, items = users[keep], items[keep]
        timestamps = None if timestamps is None else timestamps[keep]
    if timestamps is not None and (n_missing := int(np.isnan(timestamps).sum())):
        log.info("%s: %d rating(s) have no timestamp", table.path, n_missing)
    return Ratings(
        users, items, values.astype(np.float32, copy=False), maps[0], maps[1], timestamps=timestamps,
        scale=scale, name=name, meta=dict(meta or {}),
    )


def _text_ids(table: Table, column: object, kind: str) -> tuple[IdMap, np.ndarray]:
    """Id map and codes of a text id column: ids are the fields as written, stripped."""
    values = table.frame[column]
    if isinstance(values, Coded):
        codes, uniques = values.codes, values.uniques
    else:
        codes, uniques = pd.factorize(pd.Series(values), use_na_sentinel=True)
        if (codes < 0).any():
            row = int(np.flatnonzero(codes < 0)[0])
            raise DataFormatError(f"id in column {column!r} is missing", path=table.path, line=table.line_of(row))
    stripped = pd.Index(np.asarray(uniques, dtype=object)).astype(str).str.strip().to_numpy(dtype=object)
    ids, inverse = np.unique(stripped, return_inverse=True)  # sorted, as for integer ids
    return IdMap(ids, kind), inverse.reshape(-1).astype(np.int64)[codes]
