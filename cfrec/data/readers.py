"""`read_ratings`: any ratings file (CSV, TSV, parquet) with configurable columns and separator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cfrec.data.idmap import IdMap
from cfrec.data.parsing import OnDuplicate, Table, check_scale, numeric_column, read_bytes, read_table, resolve_duplicates
from cfrec.data.ratings import Ratings
from cfrec.errors import DataFormatError

# Column names recognised without configuration, first match wins.
ALIASES = {
    "user": ("user", "userId", "user_id", "userid", "UserID"),
    "item": ("item", "movieId", "item_id", "itemId", "movie_id", "MovieID", "itemid"),
    "rating": ("rating", "Rating", "score", "value"),
    "timestamp": ("timestamp", "Timestamp", "time", "ts"),
}
_SEPARATORS = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".dat": "::", ".data": "\t"}


def read_ratings(
    path: str | Path,
    *,
    sep: str | None = None,
    columns: dict[str, str] | None = None,
    header: bool = True,
    scale: tuple[float, float] | None = None,
    integer_ids: bool = False,
    encoding: str = "utf-8",
    on_duplicate: OnDuplicate = "last",
    name: str | None = None,
) -> Ratings:
    """Read a ratings table from CSV/TSV/``::``/parquet.

    ``columns`` maps the roles ``user``, ``item``, ``rating`` and optional ``timestamp`` to the
    file's column names (with a header) or 0-based positions as strings (without one, the
    default order is user, item, rating, timestamp). Unset roles are found by common names
    (``userId``, ``movieId``...). Ids stay strings unless ``integer_ids``; ``sep`` defaults by
    file extension. With a ``scale``, ratings outside it are errors naming the line.
    """
    path = Path(path)
    if path.suffix == ".parquet":
        table = _read_parquet(path)
    else:
        sep = sep or _SEPARATORS.get(path.suffix, ",")
        n_fields = _count_fields(path, sep, encoding)
        table = read_table(path, sep=sep, n_fields=n_fields, header=header, encoding=encoding, quoted=sep == ",")
    role = _resolve_columns(table, columns, path, header_line=1 if header and path.suffix != ".parquet" else None)
    ids = {
        key: numeric_column(table, role[key], f"{key} id", integer=True) if integer_ids else _id_strings(table, role[key])
        for key in ("user", "item")
    }
    values = numeric_column(table, role["rating"], "rating", integer=False)
    check_scale(values, scale, table)
    timestamps = None
    if "timestamp" in role:
        timestamps = numeric_column(table, role["timestamp"], "timestamp", integer=False, allow_missing=True)
    keep, values = resolve_duplicates(ids["user"], ids["item"], values, on_duplicate, table)
    user_map, users = IdMap.from_values(ids["user"][keep], "user")
    item_map, items = IdMap.from_values(ids["item"][keep], "item")
    return Ratings(
        users, items, values.astype(np.float32), user_map, item_map,
        timestamps=None if timestamps is None else timestamps[keep],
        scale=scale, name=name or path.stem, meta={"source": str(path), "layout": "generic"},
    )


def _count_fields(path: Path, sep: str, encoding: str) -> int:
    """Fields on the first non-blank line: the width every other line must match."""
    with open(path, "rb") as handle:
        for raw in handle:
            if raw.strip():
                return raw.decode(encoding, errors="replace").rstrip("\r\n").count(sep) + 1
    raise DataFormatError("the file is empty", path=path)


def _read_parquet(path: Path) -> Table:
    read_bytes(path)  # missing or empty file: the same clear errors as text files
    try:
        frame = pd.read_parquet(path)
    except ImportError as err:
        raise ImportError(f"{path}: reading parquet needs pyarrow (pip install 'cfrec[parquet]')") from err
    except Exception as err:  # pyarrow raises its own types for corrupt files
        raise DataFormatError(f"not a readable parquet file ({err})", path=path) from None
    return Table(frame.reset_index(drop=True), np.arange(len(frame), dtype=np.int64) + 1, path)


def _resolve_columns(
    table: Table, columns: dict[str, str] | None, path: Path, header_line: int | None
) -> dict[str, object]:
    """Role → actual column label, from ``columns`` first, then from the aliases or positions."""
    available = list(table.frame.columns)
    by_name = {str(c): c for c in available}
    role: dict[str, object] = {}
    for key, given in (columns or {}).items():
        if key not in ALIASES:
            raise ValueError(f"columns: unknown role {key!r}; roles are {', '.join(ALIASES)}")
        if str(given) not in by_name:
            raise DataFormatError(f"no column {given!r} for {key} (columns: {available})", path=path, line=header_line)
        role[key] = by_name[str(given)]
    positional = all(isinstance(c, int) for c in available)
    for position, key in enumerate(ALIASES):
        if key in role:
            continue
        if positional:
            if position < len(available):
                role[key] = available[position]
            continue
        match = next((by_name[a] for a in ALIASES[key] if a in by_name), None)
        if match is not None:
            role[key] = match
    missing = [key for key in ("user", "item", "rating") if key not in role]
    if missing:
        raise DataFormatError(
            f"cannot tell which column holds {', '.join(missing)} (columns: {available}); pass columns={{...}}",
            path=path, line=header_line,
        )
    return role


def _id_strings(table: Table, column: object) -> np.ndarray:
    series = table.frame[column]
    missing = series.isna().to_numpy()
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise DataFormatError(f"id in column {column!r} is missing", path=table.path, line=table.line_of(row))
    return series.astype(str).str.strip().to_numpy(dtype=object)
