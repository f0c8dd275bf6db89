"""The fast path for ratings files: a typed, multi-threaded columnar parse with ``pyarrow.csv``.

`read_typed` returns None whenever it cannot vouch for the result — pyarrow missing, a field
that does not parse as its declared type, a wrong number of fields, a blank line, a lone
carriage return, a NaN written out, an empty field where one is required — and the caller
then reads the file with the strict line-by-line parser (`cfrec.data.parsing.read_table`),
which names the file and line of the problem. So the fast path never changes what a file
means; it only skips work on clean files. Rows map one-to-one onto lines (blank lines are
refused), so errors found later (scale, duplicates) still name the right line.

``::`` (ML-1M) is read with ``:`` as the delimiter and an empty, null-typed column between
fields: a stray ``:`` anywhere makes a field non-empty or shifts a number, and is refused.
"""

from __future__ import annotations

import logging
import mmap
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from cfrec.data.parsing import Table, is_utf8, read_header

log = logging.getLogger(__name__)

Kind = Literal["int", "float", "text", "skip"]  # skip: any text, not returned
_BLOCK = 1 << 24  # bytes per parse block: large blocks, few chunks


@dataclass(frozen=True)
class Coded:
    """A text column as ``codes`` into ``uniques`` (first-seen order): 25M strings never exist."""

    codes: np.ndarray
    uniques: np.ndarray  # object array of str


def read_typed(
    path: Path,
    *,
    sep: str,
    kinds: Sequence[Kind],
    header: Sequence[str] | None = None,
    optional: Sequence[int] = (),
    encoding: str = "utf-8",
    quoted: bool = False,
) -> Table | None:
    """Columns ``0..len(kinds)-1`` typed by ``kinds``, or None when the strict parser must decide.

    ``header``: the first line must hold these names (else None). ``optional``: positions whose
    fields may be empty (NaN); elsewhere an empty field is refused. ``int`` columns come out
    int64, ``float`` float64, ``text`` as `Coded`; ``skip`` columns are parsed but not returned.
    """
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        from pyarrow import csv as pacsv
    except ImportError:
        return None
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0 or _needs_strict(path, "int" in kinds, header is not None):
        return None
    if header is not None and read_header(path, sep, encoding) != list(header):
        return None
    if len(sep) == 1:
        delimiter, layout = sep, list(kinds)
    elif len(sep) == 2 and sep[0] == sep[1]:  # "::": an empty column between every two fields
        delimiter, layout = sep[0], [k for kind in kinds for k in (kind, "empty")][:-1]
    else:
        return None
    names = [f"f{i}" for i in range(len(layout))]
    types = {"int": pa.int64(), "float": pa.float64(), "text": pa.string(), "skip": pa.string(), "empty": pa.null()}
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(
                column_names=names, skip_rows=1 if header is not None else 0, block_size=_BLOCK,
                encoding="utf8" if is_utf8(encoding) else encoding,
            ),
            parse_options=pacsv.ParseOptions(
                delimiter=delimiter, quote_char='"' if quoted else False, ignore_empty_lines=False,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={n: types[k] for n, k in zip(names, layout)}, null_values=[""],
                strings_can_be_null=True, quoted_strings_can_be_null=True,
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as err:  # a field, a line or a byte the strict parser must name
        log.debug("%s: fast reader refused the file (%s); reading it line by line", path, err)
        return None
    if table.num_rows == 0:
        return None
    columns = [table.column(names[i]) for i, kind in enumerate(layout) if kind != "empty"]
    del table  # each column's Arrow memory goes once it is converted
    for position, (column, kind) in enumerate(zip(columns, kinds)):
        if column.null_count and position not in optional:
            return None
        if kind == "float" and pc.any(pc.is_nan(column)).as_py():  # "nan" written out
            return None
    frame: dict[int, object] = {}
    for position, kind in enumerate(kinds):
        column, columns[position] = columns[position], None
        if kind != "skip":
            frame[position] = _to_numpy(column, kind, pa, pc)
        del column
    pa.default_memory_pool().release_unused()  # hand the parse buffers back before the next steps
    return Table(frame, None, path, first_line=2 if header is not None else 1)


def _to_numpy(column, kind: Kind, pa, pc) -> object:
    """One column as numpy, chunk by chunk, each chunk's Arrow memory released once copied."""
    if kind == "text":
        uniques = pc.unique(column)
        codes = pc.index_in(column, value_set=uniques).to_numpy().astype(np.int64)
        return Coded(codes, np.asarray(uniques.to_pylist(), dtype=object))
    chunks = column.chunks
    del column
    out = np.empty(sum(len(c) for c in chunks), dtype=np.float64 if kind == "float" else np.int64)
    start = 0
    for i, chunk in enumerate(chunks):
        out[start : start + len(chunk)] = chunk.to_numpy(zero_copy_only=False)  # float nulls come out NaN
        start += len(chunk)
        chunks[i] = None
    pa.default_memory_pool().release_unused()
    return out


def _needs_strict(path: Path, hex_matters: bool, skip_header: bool) -> bool:
    """True when bytes that pyarrow reads differently from the strict parser may be present.

    A lone ``\r`` (pyarrow ends a line there) and, where a column is an integer, an ``x``
    (pyarrow reads ``0x1F`` as 31; an id must be written in decimal).
    """
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        start = data.find(b"\n") + 1 if skip_header else 0
        if hex_matters and (data.find(b"x", start) >= 0 or data.find(b"X", start) >= 0):
            return True
        if data.find(b"\r") < 0:
            return False
        view = np.frombuffer(data, dtype=np.uint8)
        try:
            after = np.flatnonzero(view == 13) + 1
            return bool((after >= len(view)).any() or (view[np.minimum(after, len(view) - 1)] != 10).any())
        finally:
            del view
