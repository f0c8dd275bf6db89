"""`read_ratings`: any ratings file (CSV, TSV, parquet) with configurable columns and separator."""

from __future__ import annotations

import codecs
from pathlib import Path

import numpy as np
import pandas as pd

from cfrec.data.fast import Kind, read_typed
from cfrec.data.normalize import to_ratings
from cfrec.data.parsing import OnDuplicate, Table, read_bytes, read_header, read_table
from cfrec.data.ratings import Ratings
from cfrec.errors import ConfigError, DataFormatError

# Column names recognised without configuration, first match wins.
ALIASES = {
    "user": ("user", "userId", "user_id", "userid", "UserID"),
    "item": ("item", "movieId", "item_id", "itemId", "movie_id", "MovieID", "itemid"),
    "rating": ("rating", "Rating", "score", "value"),
    "timestamp": ("timestamp", "Timestamp", "time", "ts"),
}
_SEPARATORS = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".dat": "::", ".data": "\t"}
DUPLICATE_RULES = ("last", "first", "mean", "error")


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
    (``userId``, ``movieId``...). Ids stay strings (as written, stripped) unless
    ``integer_ids``, when they must be written as integers; ``sep`` defaults by file
    extension. With a ``scale``, ratings outside it are errors naming the line. Invalid
    options raise `ConfigError` naming the option.
    """
    path = Path(path)
    scale = check_options(sep=sep, columns=columns, scale=scale, encoding=encoding, on_duplicate=on_duplicate)
    if path.suffix == ".parquet":
        table = _read_parquet(path)
        role = _resolve_columns(list(table.frame.columns), columns, path, header_line=None)
    else:
        sep = sep or _SEPARATORS.get(path.suffix, ",")
        n_fields = _count_fields(path, sep, encoding)
        names = read_header(path, sep, encoding) if header else list(range(n_fields))
        role = _resolve_columns(names, columns, path, header_line=1 if header else None)
        position = {key: names.index(label) for key, label in role.items()}  # roles as positions
        kinds: list[Kind] = ["skip"] * n_fields  # columns without a role: any text
        for key, at in position.items():
            kinds[at] = ("int" if integer_ids else "text") if key in ("user", "item") else "float"
        table = read_typed(path, sep=sep, kinds=kinds, header=names if header else None, encoding=encoding, quoted=sep == ",")
        if table is None:
            ids = tuple(position[key] for key in ("user", "item"))
            table = read_table(
                path, sep=sep, n_fields=n_fields, header=header, encoding=encoding, quoted=sep == ",",
                **({"integer_fields": ids} if integer_ids else {"text_fields": ids}),
            )
            table.frame.columns = range(n_fields)
        role = position
    return to_ratings(
        table, role, integer_ids=integer_ids, scale=scale, on_duplicate=on_duplicate,
        labels=("user id", "item id"), name=name or path.stem, meta={"source": str(path), "layout": "generic"},
    )


def check_options(
    *,
    sep: str | None = None,
    columns: dict[str, str] | None = None,
    scale: object = None,
    encoding: str = "utf-8",
    on_duplicate: str = "last",
) -> tuple[float, float] | None:
    """Validate `read_ratings` options before any reading; `ConfigError` names the option.

    Returns ``scale`` as a ``(low, high)`` tuple of floats (or None).
    """
    if sep is not None and (not isinstance(sep, str) or not sep or "\n" in sep or '"' in sep):
        raise ConfigError("sep", f"must be a separator such as ',' '\\t' or '::', got {sep!r}")
    unknown = [key for key in (columns or {}) if key not in ALIASES]
    if unknown:
        raise ConfigError("columns", f"unknown role {unknown[0]!r}; roles are {', '.join(ALIASES)}")
    named: dict[str, str] = {}  # column → the role given it
    for key, given in (columns or {}).items():
        if str(given) in named:
            raise ConfigError("columns", f"{named[str(given)]} and {key} both name column {str(given)!r}; "
                                         "each role needs a column of its own")
        named[str(given)] = key
    try:
        codecs.lookup(encoding)
    except (LookupError, TypeError):
        raise ConfigError("encoding", f"unknown text encoding {encoding!r} (e.g. utf-8, latin-1)") from None
    if on_duplicate not in DUPLICATE_RULES:
        raise ConfigError("on_duplicate", f"must be one of {', '.join(DUPLICATE_RULES)}; got {on_duplicate!r}")
    if scale is None:
        return None
    try:
        low, high = (float(v) for v in scale)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ConfigError("scale", f"must be [low, high], got {scale!r}") from None
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ConfigError("scale", f"must be [low, high] with low < high, got {list(scale)}")  # type: ignore[arg-type]
    return low, high


def _count_fields(path: Path, sep: str, encoding: str) -> int:
    """Fields on the first non-blank line: the width every other line must match."""
    read_bytes(path)  # missing or empty file: the same clear errors everywhere
    with open(path, "rb") as handle:
        for raw in handle:
            if raw.strip():
                return raw.decode(encoding, errors="replace").rstrip("\r\n").count(sep) + 1
    raise DataFormatError("the file is empty", path=path)


def _read_parquet(path: Path) -> Table:
    read_bytes(path)  # missing or empty file: the same clear errors as text files
    try:
        import pyarrow  # noqa: F401  (pandas reads parquet through it)
    except ImportError as err:
        raise ImportError(f"{path}: reading parquet needs pyarrow (pip install 'cfrec[parquet]')") from err
    try:
        frame = pd.read_parquet(path)
    except (ValueError, OSError) as err:  # pyarrow's ArrowInvalid is a ValueError, ArrowIOError an OSError
        raise DataFormatError(f"not a readable parquet file ({err})", path=path) from None
    return Table(frame.reset_index(drop=True), None, path)


def _resolve_columns(
    available: list, columns: dict[str, str] | None, path: Path, header_line: int | None
) -> dict[str, object]:
    """Role → column label (a header name, or a position without header), from ``columns`` first,
    then from the aliases or the default order."""
    by_name = {str(c): c for c in available}
    role: dict[str, object] = {}
    for key, given in (columns or {}).items():
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
    _check_distinct(role, set(columns or {}), path)
    missing = [key for key in ("user", "item", "rating") if key not in role]
    if missing:
        raise DataFormatError(
            f"cannot tell which column holds {', '.join(missing)} (columns: {available}); pass columns={{...}}",
            path=path, line=header_line,
        )
    return role


def _check_distinct(role: dict[str, object], given: set[str], path: Path) -> None:
    """One column per role: a `ConfigError` naming both roles when ``columns`` gives a role the
    column another role was found in; a timestamp found (not given) in a taken column is dropped."""
    owner: dict[object, str] = {}  # column label → role
    for key in ALIASES:
        if key not in role:
            continue
        label = role[key]
        if label in owner:
            if key == "timestamp" and key not in given:
                del role[key]
                continue
            raise ConfigError("columns", f"{owner[label]} and {key} both name column {label!r} of {path}; "
                                         "each role needs a column of its own")
        owner[label] = key
