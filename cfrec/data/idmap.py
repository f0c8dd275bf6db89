"""`IdMap`: the bijection between raw ids (as written in the files) and dense codes 0..n-1."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from cfrec.errors import UnknownIdError


class IdMap:
    """Raw ids ↔ codes. Code ``c`` stands for raw id ``ids[c]``.

    ``IdMap.from_values`` assigns codes in sorted raw-id order, the order pandas'
    ``category`` dtype uses, so codes match the reference notebook's.
    """

    def __init__(self, ids: Iterable, kind: str = "item"):
        ids = np.asarray(ids)
        if ids.ndim != 1:
            raise ValueError(f"{kind} ids must be one-dimensional, got shape {ids.shape}")
        index = pd.Index(ids)
        if not index.is_unique:
            dup = index[index.duplicated()][0]
            raise ValueError(f"{kind} id {_plain(dup)!r} appears twice in the id map")
        ids.setflags(write=False)
        self._ids = ids
        self._index = index
        self.kind = kind

    @classmethod
    def from_values(cls, values: np.ndarray, kind: str = "item") -> tuple[IdMap, np.ndarray]:
        """Map of the distinct ``values`` (sorted) and the code of every value.

        Integer ids spanning a range not much larger than their count (MovieLens ids) are
        mapped through a lookup table in linear time instead of sorting.
        """
        values = np.asarray(values)
        if values.dtype.kind in "iu" and values.size:
            found = _dense_integer_codes(values)
            if found is not None:
                return cls(found[0], kind), found[1]
        ids, codes = np.unique(values, return_inverse=True)
        return cls(ids, kind), codes.astype(np.int64).reshape(-1)

    @property
    def ids(self) -> np.ndarray:
        """Raw ids in code order (read-only)."""
        return self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, raw_id: object) -> bool:
        return raw_id in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and np.array_equal(self._ids, other._ids)

    def __hash__(self) -> int:  # maps are compared by content; not meant as dict keys
        return hash((self.kind, len(self._ids)))

    def __repr__(self) -> str:
        return f"IdMap({self.kind}, n={len(self)})"

    def codes(self, raw_ids: Iterable, *, strict: bool = True) -> np.ndarray:
        """Codes of ``raw_ids``; unknown ids raise `UnknownIdError`, or give -1 when not ``strict``."""
        raw = np.asarray(raw_ids)
        if raw.ndim == 0:
            raw = raw.reshape(1)
        codes = self._index.get_indexer(raw).astype(np.int64)
        if strict:
            unknown = codes < 0
            if unknown.any():
                first = _plain(raw[np.flatnonzero(unknown)[0]])
                raise UnknownIdError(self.kind, first, int(unknown.sum()), self._type_hint(first))
        return codes

    def code(self, raw_id: object) -> int:
        """Code of one raw id; `UnknownIdError` naming the id if it is not in the map."""
        try:
            found = self._index.get_loc(raw_id)
        except (KeyError, TypeError):
            raise UnknownIdError(self.kind, raw_id, hint=self._type_hint(raw_id)) from None
        if not isinstance(found, (int, np.integer)):
            raise UnknownIdError(self.kind, raw_id)
        return int(found)

    def _type_hint(self, raw_id: object) -> str:
        """What to say when ``raw_id`` is unknown but its text (or integer) twin is known."""
        if isinstance(raw_id, (int, np.integer)) and not isinstance(raw_id, bool) and str(raw_id) in self:
            return (f"this data's ids are text: use {str(raw_id)!r} (a ratings file read with "
                    "data.integer_ids=true has integer ids)")
        if isinstance(raw_id, str) and raw_id.strip().lstrip("-").isdigit() and int(raw_id) in self:
            return f"this data's ids are integers: use {int(raw_id)}"
        return ""

    def to_ids(self, codes: Iterable) -> np.ndarray:
        """Raw ids of ``codes``."""
        return self._ids[np.asarray(codes, dtype=np.int64)]

    def id(self, code: int) -> object:
        """Raw id of one code, as a plain Python value."""
        return _plain(self._ids[int(code)])


def _dense_integer_codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(sorted distinct values, code of each value) via a presence table, or None if the span is wide."""
    low, high = int(values.min()), int(values.max())
    span = high - low + 1
    if span > max(4 * values.size, 1 << 20):
        return None
    offsets = values - values.dtype.type(low)
    present = np.zeros(span, dtype=bool)
    present[offsets] = True
    ids = (np.flatnonzero(present) + low).astype(values.dtype)
    rank = np.cumsum(present, dtype=np.int64) - 1
    del present
    return ids, rank[offsets]


def _plain(value: object) -> object:
    """numpy scalar → Python scalar, so messages and JSON show ``42`` not ``np.int64(42)``."""
    return value.item() if isinstance(value, np.generic) else value
