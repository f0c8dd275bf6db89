"""A sparse matrix laid out for fast batched cell reads (the lookups of neighbourhood models)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

# A read by binary search costs about as much as filling this many cells of a dense block (one thread:
# ~48 ns against ~3.6 ns, ML-1M's and an ML-25M-shaped table's item-KNN predictions, 2026-12-01)
SEARCH_COST = 16
BLOCK_MB = 64.0  # one sparse lookup reads at most the rows whose dense width would fill this (its chunk of rows)


class CellTable:
    """Reads many cells of a sparse (rows × cols) matrix at once, on CPU or GPU.

    Cells live in a dense row-major table when it fits in ``dense_mb`` MiB, else they are found among
    the cells of just the rows a lookup reads (a dense block of them, or a search in their keys),
    while those rows number at most `rows_per_lookup` (same results; else a binary search in all the
    sorted cell keys, slower).
    Reading one row's cells for many columns touches one contiguous row, so batches should group
    reads by row. Stored values must be finite (absent cells are NaN inside); a `ValueError` names
    the first one that is not. Column ``n_cols`` is a sentinel that is never stored: use it for
    empty slots. The dense table is
    addressed with ``key_dtype`` (int32 whenever its cells fit: half the index traffic), so
    callers that keep their column lists in that dtype skip a conversion per lookup.
    """

    def __init__(self, matrix: sp.spmatrix, *, device: str | torch.device = "cpu", dense_mb: float = 256.0):
        csr = sp.csr_matrix(matrix, dtype=np.float32)
        csr.sum_duplicates()  # canonical: sorted column indices, one entry per cell
        n_rows, n_cols = csr.shape
        bad = np.flatnonzero(~np.isfinite(csr.data))
        if len(bad):
            row = int(np.searchsorted(csr.indptr, bad[0], side="right") - 1)
            raise ValueError(f"CellTable holds finite values only: cell ({row}, {csr.indices[bad[0]]}) is {csr.data[bad[0]]}")
        self.width = n_cols + 1  # + the sentinel column
        rows = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(csr.indptr))
        keys = torch.as_tensor(rows * self.width + csr.indices, device=device)  # (nnz,) ascending
        values = torch.as_tensor(csr.data, device=device)  # (nnz,)
        self.dense: Tensor | None = None
        self.key_dtype = torch.int64
        if n_rows * self.width * 4 <= dense_mb * 2**20:
            self.dense = torch.full((n_rows * self.width,), float("nan"), dtype=torch.float32, device=device)
            self.dense[keys] = values
            if n_rows * self.width < 2**31:
                self.key_dtype = torch.int32
        else:
            self.keys, self.values = keys, values
            self.row_starts = torch.as_tensor(csr.indptr.astype(np.int64), device=device)  # (n_rows + 1,)

    @property
    def rows_per_lookup(self) -> int | None:
        """The most distinct rows one lookup should read for the sparse path to search just their
        keys (None: any number, as the dense table reads any and a search in all keys, used where
        not even one row's width fits in `BLOCK_MB`, gains nothing from fewer)."""
        block_rows = self._block_rows()
        return None if self.dense is not None or block_rows == 0 else block_rows

    def _block_rows(self) -> int:
        """How many rows' dense width fits in `BLOCK_MB`: the rows one sparse lookup reads at most."""
        return int(BLOCK_MB * 2**20 // (self.width * 4))

    def lookup(self, rows: Tensor, cols: Tensor) -> tuple[Tensor, Tensor]:
        """Cells (rows, cols), broadcast together: (values, 0 where absent; presence, 1.0 where the
        cell is stored, 0.0 where absent). Both are float: masks kept as floats let every later
        step run on vectorised float kernels (CPU ``where`` and ``masked_fill`` with a bool mask
        run several times slower)."""
        keys = rows.to(self.key_dtype) * self.width + cols.to(self.key_dtype)
        if self.dense is not None:  # index_select on the flat keys: far faster than advanced indexing
            found = self.dense.index_select(0, keys.reshape(-1)).view(keys.shape)  # NaN where absent
        else:
            found = self._sparse_lookup(rows, cols, keys)
        presence = found.mul(0.0).add_(1.0).nan_to_num_(0.0)  # NaN · 0 + 1 stays NaN (values are finite)
        return found.nan_to_num_(0.0), presence

    def _sparse_lookup(self, rows: Tensor, cols: Tensor, keys: Tensor) -> Tensor:
        """Cells by key from the sorted cells, NaN where absent. When the rows read are few enough
        (`rows_per_lookup`), either their cells are scattered into a dense block of them and read by
        index (where the reads are many for the block's size, `SEARCH_COST`: ML-1M's predictions, 2.35
        µs a pair against 15.45 searching), or the search runs in just their keys, which stay in cache
        (few reads a row: the 25M default's blend predicting 409k validation pairs × 30 neighbours of a
        162,540 × 59,047 table, 7.0 s against 36.1 s with a block per chunk; one thread)."""
        if keys.numel() == 0 or len(self.keys) == 0:  # nothing read, or nothing stored: all absent
            return _absent(keys)
        read = torch.unique(rows.reshape(-1)).long()  # ascending
        if len(read) > self._block_rows():
            pos, hit = _find(self.keys, keys)
            return torch.where(hit, self.values[pos], float("nan"))
        starts = self.row_starts[read]
        lengths = self.row_starts[read + 1] - starts
        ends = torch.cumsum(lengths, 0)
        cells = torch.arange(int(ends[-1]), device=keys.device) + torch.repeat_interleave(starts - (ends - lengths), lengths)
        if len(cells) == 0:  # the rows read hold no cell
            return _absent(keys)
        if keys.numel() * SEARCH_COST >= len(read) * self.width:  # reads dense enough to pay for a block of the rows
            shift = torch.repeat_interleave((read - torch.arange(len(read), device=read.device)) * self.width, lengths)
            block = torch.full((len(read) * self.width,), float("nan"), dtype=torch.float32, device=keys.device)
            block[self.keys.index_select(0, cells) - shift] = self.values.index_select(0, cells)  # row j: read[j]
            local = torch.searchsorted(read, rows.long().contiguous()) * self.width + cols.long()
            return block.index_select(0, local.reshape(-1)).view(keys.shape)
        near = self.keys.index_select(0, cells)  # the read rows' keys, still ascending: a search in them stays in cache
        pos, hit = _find(near, keys.reshape(-1))
        return torch.where(hit, self.values.index_select(0, cells.index_select(0, pos)), float("nan")).view(keys.shape)


def _absent(keys: Tensor) -> Tensor:
    """NaN, "no cell", for each of ``keys``."""
    return torch.full(keys.shape, float("nan"), dtype=torch.float32, device=keys.device)


def _find(sorted_keys: Tensor, keys: Tensor) -> tuple[Tensor, Tensor]:
    """(position, found) of each of ``keys`` among ``sorted_keys`` (ascending, not empty): where it
    is, or would be inserted (clamped to the last), and whether it is there."""
    pos = torch.searchsorted(sorted_keys, keys).clamp_(max=len(sorted_keys) - 1)
    return pos, sorted_keys.index_select(0, pos.reshape(-1)).view(pos.shape) == keys
