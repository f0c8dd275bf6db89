"""Reading delimited text tables strictly: any malformed line is an error naming file and line.

`read_table` parses with pandas' C engine and re-examines a column only when it did not come
out numeric. It is the strict reference: ratings files are first tried by the typed columnar
reader of `cfrec.data.fast`, and come here when that one refuses them, so that the error names
the file and line. `numeric_column`, `check_scale` and `resolve_duplicates` validate the
columns of either reader (see `cfrec.data.normalize`).
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import pandas as pd

from cfrec.errors import DataFormatError

log = logging.getLogger(__name__)

OnDuplicate = Literal["last", "first", "mean", "error"]
_FIELD_SEP = "\x1f"  # ASCII unit separator: stands in for multi-character separators such as "::"
_BOM = b"\xef\xbb\xbf"
_ASCII_SUPERSETS = {"utf-8", "utf-8-sig", "iso8859-1", "ascii", "cp1252", "iso8859-15"}
_INTEGER = r"\s*[+-]?\d+\s*"  # how an integer id is written: no decimal point, no exponent
Encoding = str | tuple[str, ...]  # one encoding, or candidates tried in order ("utf-8", "latin-1")


@dataclass
class Table:
    """A parsed table: columns by label, and the 1-based source line of every row.

    ``frame`` is a DataFrame (strict reader) or a mapping label → array (fast reader).
    ``lines`` may be None when row ``r`` is line ``first_line + r`` (no blank line skipped).
    """

    frame: pd.DataFrame | dict
    lines: np.ndarray | None
    path: Path
    first_line: int = 1

    def line_of(self, row: int) -> int:
        return int(self.lines[row]) if self.lines is not None else self.first_line + int(row)


def read_bytes(path: Path) -> bytes:
    """The file's bytes; a clear error when it is missing or empty."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    data = path.read_bytes()
    if not data.strip():
        raise DataFormatError("the file is empty", path=path)
    return data


def is_utf8(encoding: str) -> bool:
    return codecs.lookup(encoding).name in ("utf-8", "utf-8-sig")


def strip_bom(data: bytes, encoding: str) -> bytes:
    """``data`` without a leading UTF-8 byte-order mark (Excel writes one) when reading UTF-8."""
    return data[len(_BOM):] if data.startswith(_BOM) and is_utf8(encoding) else data


def decode_check(data: bytes, encoding: Encoding, path: Path) -> str:
    """The first of ``encoding`` (one name or candidates in order) that decodes ``data``.

    When none does, a `DataFormatError` names the first line the first candidate cannot decode.
    """
    candidates = (encoding,) if isinstance(encoding, str) else tuple(encoding)
    first_error: UnicodeDecodeError | None = None
    for candidate in candidates:
        if codecs.lookup(candidate).name in _ASCII_SUPERSETS and data.isascii():
            return candidate  # no copy of a large file just to learn it is plain ASCII
        try:
            data.decode(candidate)
            return candidate
        except UnicodeDecodeError as err:
            first_error = first_error or err
    assert first_error is not None
    line = data[: first_error.start].count(b"\n") + 1
    raise DataFormatError(
        f"byte {data[first_error.start]:#04x} is not valid {candidates[0]} (is the file in another encoding?)",
        path=path, line=line,
    )


def read_header(path: Path, sep: str, encoding: str) -> list[str]:
    """Column names on the first line (BOM dropped, names stripped); an error naming line 1."""
    with open(path, "rb") as handle:
        first = strip_bom(handle.readline(), encoding).rstrip(b"\r\n")
    try:
        text = first.decode(encoding)
    except UnicodeDecodeError:
        raise DataFormatError(f"the header is not valid {encoding}", path=path, line=1) from None
    if len(sep) > 1:
        return [name.strip() for name in text.split(sep)]
    try:
        return [name.strip() for name in next(csv.reader([text], delimiter=sep))]
    except (csv.Error, StopIteration) as err:
        raise DataFormatError(f"cannot parse the header ({err})", path=path, line=1) from None


def read_table(
    path: Path,
    *,
    sep: str,
    n_fields: int,
    header: bool = False,
    encoding: Encoding = "utf-8",
    quoted: bool = False,
    min_fields: int | None = None,
    field_names: tuple[str, ...] | None = None,
    text_fields: tuple[int, ...] = (),
    integer_fields: tuple[int, ...] = (),
) -> Table:
    """Parse a delimited file of ``n_fields`` columns (0, 1, ... or the header's names).

    A line with another number of fields, or an empty field among the first ``min_fields``
    (default all), is an error naming the line (and the field, by ``field_names``). Blank lines are
    skipped and counted in the log. Only an empty field is missing ("NA" or "null" are text).
    Numeric-looking columns come out numeric, others and ``text_fields`` (positions) as strings;
    ``integer_fields`` come out int64 when every field is an integer, else as strings.
    ``encoding`` may list candidates: the first that decodes the whole file is used.
    """
    path = Path(path)
    data = read_bytes(path)
    encoding = decode_check(data, encoding, path)
    data = strip_bom(data, encoding)
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")  # Windows line ends; a lone "\r" stays an error
    if len(sep) > 1:
        data = data.replace(sep.encode(encoding), _FIELD_SEP.encode(encoding))
        sep = _FIELD_SEP
    names: list[str] | None = None
    if header:  # read apart, so that the first data line sets the width and longer lines fail
        first, _, data = data.partition(b"\n")
        try:
            names = [name.strip() for name in next(csv.reader([first.decode(encoding)], delimiter=sep))]
        except csv.Error as err:
            raise DataFormatError(f"cannot parse the header ({err})", path=path, line=1) from None
        if len(names) != n_fields:
            raise DataFormatError(f"header has {len(names)} columns {names}, expected {n_fields}", path=path, line=1)
    leading_blank = len(data) - len(data.lstrip(b"\n"))  # pandas cannot size a table by a blank line
    data = data[leading_blank:]
    first_data_line = (2 if header else 1) + leading_blank
    if not data.strip():
        raise DataFormatError("the file holds no data rows", path=path)
    def parse(text: tuple[int, ...]) -> pd.DataFrame:
        try:
            return pd.read_csv(
                io.BytesIO(data), sep=sep, header=None, index_col=False, skip_blank_lines=False,
                encoding=encoding, engine="c", keep_default_na=False, na_values=[""], lineterminator="\n",
                quoting=csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE, dtype={i: str for i in text},
            )
        except pd.errors.ParserError as err:
            raise _parser_error(err, path, n_fields, first_data_line) from None
        except pd.errors.EmptyDataError:
            raise DataFormatError("the file holds no data rows", path=path) from None

    frame = parse(tuple(text_fields))
    if any(i < frame.shape[1] and frame[i].dtype != np.int64 for i in integer_fields):
        frame = parse(tuple(text_fields) + tuple(integer_fields))  # judge them as written: "1.0" is no integer
    lines = np.arange(len(frame), dtype=np.int64) + first_data_line
    blank = frame.isna().all(axis=1).to_numpy()
    if blank.any():  # truly empty lines only: "::" or "," alone is a broken row, not a blank one
        starts, ends = _line_spans(data)
        not_empty = blank & (ends - starts > 0)[: len(blank)]
        if not_empty.any():
            row = int(np.flatnonzero(not_empty)[0])
            raise DataFormatError("the line holds separators but no values", path=path, line=int(lines[row]))
        log.info("%s: skipped %d blank line(s)", path, int(blank.sum()))
        frame, lines = frame.loc[~blank].reset_index(drop=True), lines[~blank]
    if frame.empty:
        raise DataFormatError("the file holds no data rows", path=path)
    if frame.shape[1] > n_fields:  # the first line was the long one: pandas sized the table by it
        extra = frame.iloc[:, n_fields:].notna().any(axis=1).to_numpy()
        row = int(np.flatnonzero(extra)[0]) if extra.any() else 0  # else: empty trailing fields
        raise DataFormatError(f"expected {n_fields} fields, found more", path=path, line=int(lines[row]))
    if frame.shape[1] < n_fields:
        frame = frame.reindex(columns=list(frame.columns) + list(range(frame.shape[1], n_fields)))
    if names is not None:
        frame.columns = names
    need = n_fields if min_fields is None else min_fields
    if need < n_fields and not quoted and frame.iloc[:, need:].isna().to_numpy().any():
        # an optional field may be empty ("4::"), not absent ("4"): count separators per line
        fields = _fields_per_line(data, sep.encode(encoding))[lines - first_data_line]
        if (fields < n_fields).any():
            row = int(np.flatnonzero(fields < n_fields)[0])
            raise DataFormatError(
                f"expected {n_fields} fields, found {fields[row]}", path=path, line=int(lines[row])
            )
    short = frame.iloc[:, :need].isna().any(axis=1).to_numpy()
    if short.any():
        row = int(np.flatnonzero(short)[0])
        column = int(np.flatnonzero(frame.iloc[row, :need].isna().to_numpy())[0])
        label = field_names[column] if field_names else f"field {column + 1}"
        raise DataFormatError(
            f"{label} is missing or empty (expected {n_fields} fields separated by {_show(sep)})",
            path=path, line=int(lines[row]),
        )
    return Table(frame, lines, path)


def _line_spans(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Start and end byte offsets of every line of ``data``."""
    newlines = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == ord("\n"))
    return np.r_[0, newlines + 1], np.r_[newlines, len(data)]


def _fields_per_line(data: bytes, sep: bytes) -> np.ndarray:
    """Number of ``sep``-separated fields on each line of ``data`` (unquoted text)."""
    starts, ends = _line_spans(data)
    separators = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == sep[0])
    return np.searchsorted(separators, ends) - np.searchsorted(separators, starts) + 1


def _show(sep: str) -> str:
    return {"\t": "tabs", _FIELD_SEP: "'::'", ",": "commas", "|": "'|'"}.get(sep, repr(sep))


def _parser_error(err: Exception, path: Path, n_fields: int, first_data_line: int) -> DataFormatError:
    """Turn pandas' tokenizer message into one naming the file and the real culprit line."""
    text = str(err).strip()
    offset = first_data_line - 1
    found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", text)
    if found:
        expected, line, saw = map(int, found.groups())
        if expected < n_fields:  # the first data line was short and set the width
            return DataFormatError(f"expected {n_fields} fields, found {expected}", path=path, line=first_data_line)
        return DataFormatError(f"expected {n_fields} fields, found {saw}", path=path, line=line + offset)
    found = re.search(r"row (\d+)", text)
    line = int(found.group(1)) + first_data_line if found else None
    return DataFormatError(f"cannot parse: {text.split('C error: ')[-1]}", path=path, line=line)


def numeric_column(
    table: Table, column: object, label: str, *, integer: bool, allow_missing: bool = False
) -> np.ndarray:
    """Column as int64 (``integer``) or float64; the first bad field raises naming its line.

    Read as text (id columns are), an integer is digits with an optional sign: ``1.0`` or
    ``1e3`` are errors, not 1 and 1000.
    """
    series = table.frame[column]
    dtype = series.dtype
    if integer and dtype == np.int64:
        return np.asarray(series)  # the fast path: every field parsed as an int64
    if pd.api.types.is_float_dtype(dtype) or dtype == np.int64:
        values = np.asarray(series, dtype=np.float64)
    else:  # text, or integers beyond int64 (uint64): find the first field that is not a number
        series = pd.Series(series)
        values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)
        present = series.notna().to_numpy()
        bad = np.isnan(values) & present
        if integer and series.dtype != np.uint64:
            bad |= present & ~series.astype(object).where(present, "0").astype(str).str.fullmatch(_INTEGER).to_numpy(bool)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            what = "an integer" if integer and not np.isnan(values[row]) else "a number"
            raise DataFormatError(f"{label} '{series.iloc[row]}' is not {what}", path=table.path, line=table.line_of(row))
    missing = np.isnan(values)
    if missing.any() and not allow_missing:
        row = int(np.flatnonzero(missing)[0])
        raise DataFormatError(f"{label} is missing", path=table.path, line=table.line_of(row))
    if not integer:
        if allow_missing and np.isinf(values).any():  # optional fields: missing, or a finite value
            row = int(np.flatnonzero(np.isinf(values))[0])
            raise DataFormatError(f"{label} '{_at(series, row)}' is not finite", path=table.path, line=table.line_of(row))
        return values
    bad = (np.abs(values) >= 2.0**63) | (~missing & (values != np.round(values)))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataFormatError(
            f"{label} '{_at(series, row)}' is not an integer that fits in 64 bits",
            path=table.path, line=table.line_of(row),
        )
    if dtype == np.int64:
        return np.asarray(series)
    if pd.api.types.is_float_dtype(dtype):
        return values.astype(np.int64)
    return pd.Series(series).astype(str).str.strip().astype(np.int64).to_numpy()  # text: exact beyond 2**53


def _at(series: object, row: int) -> object:
    return series.iloc[row] if isinstance(series, pd.Series) else series[row]


def check_scale(values: np.ndarray, scale: tuple[float, float] | None, table: Table, label: str = "rating") -> None:
    """Every value finite and, with a ``scale``, inside it; else an error naming the line."""
    bad = ~np.isfinite(values)
    if scale is not None:
        bad |= (values < scale[0]) | (values > scale[1])
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        where = f" outside the scale {scale[0]:g}–{scale[1]:g}" if scale is not None else " not finite"
        raise DataFormatError(f"{label} {values[row]:g} is{where}", path=table.path, line=table.line_of(row))


def resolve_duplicates(
    users: np.ndarray,
    items: np.ndarray,
    values: np.ndarray,
    rule: OnDuplicate,
    table: Table,
    describe: Callable[[int], str] | None = None,
) -> tuple[np.ndarray | None, np.ndarray]:
    """Rows to keep (ascending; None = all) and the ratings for them, after resolving repeated pairs.

    ``users`` and ``items`` are non-negative codes. ``last`` keeps the last occurrence in file
    order (a re-rating supersedes), ``first`` the first, ``mean`` keeps the first row with the
    mean rating, ``error`` raises naming both lines (``describe(row)`` names the pair).
    """
    if rule not in ("first", "last", "mean", "error"):
        raise ValueError(f"on_duplicate must be one of last, first, mean, error; got {rule!r}")
    key = users * np.int64(int(items.max()) + 1 if len(items) else 1) + items
    if len(key) < 2 or bool((key[1:] > key[:-1]).all()):
        return None, values  # strictly increasing: no pair repeats (files sorted by user, then item)
    repeated = pd.Series(key).duplicated(keep="first").to_numpy()  # every occurrence after the first
    if not repeated.any():
        return None, values
    if rule == "error":
        row = int(np.flatnonzero(repeated)[0])
        same = np.flatnonzero(key == key[row])
        pair = describe(row) if describe else f"user {users[row]} rated item {items[row]}"
        raise DataFormatError(
            f"{pair} more than once (lines {', '.join(str(table.line_of(r)) for r in same)})",
            path=table.path, line=table.line_of(row),
        )
    log.warning("%s: %d repeated (user, item) pair(s) resolved by rule %r", table.path, int(repeated.sum()), rule)
    if rule == "first":
        keep = np.flatnonzero(~repeated)
        return keep, values[keep]
    if rule == "last":
        keep = np.flatnonzero(~pd.Series(key).duplicated(keep="last").to_numpy())
        return keep, values[keep]
    group = pd.factorize(key)[0]
    means = np.bincount(group, weights=values) / np.bincount(group)
    keep = np.flatnonzero(~repeated)
    return keep, means[group[keep]].astype(values.dtype)
