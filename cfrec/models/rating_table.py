"""A sparse matrix laid out for fast batched cell reads (the lookups of neighbourhood models)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

BLOCK_MB = 64.0  # the largest dense block of just the rows one sparse lookup reads


class CellTable:
    """Reads many cells of a sparse (rows × cols) matrix at once, on CPU or GPU.

    Cells live in a dense row-major table when it fits in ``dense_mb`` MiB, else they are found by
    scattering the cells of just the rows a lookup reads into a dense block of them, while that
    block fits in `BLOCK_MB` (same results; else a binary search in the sorted cell keys, slower).
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
        """The most distinct rows one lookup should read for the sparse path's block to be used
        (None: any number, as the dense table reads any and a binary search, used where not even
        one row fits in a block, gains nothing from fewer)."""
        block_rows = self._block_rows()
        return None if self.dense is not None or block_rows == 0 else block_rows

    def _block_rows(self) -> int:
        """How many rows of the sparse path's block fit in `BLOCK_MB`."""
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
        for a dense block of them (`BLOCK_MB`), their cells are scattered into one and read by
        index (a memset and a gather: several times faster than a binary search per cell)."""
        if keys.numel() == 0 or len(self.keys) == 0:  # nothing read, or nothing stored: all absent
            return torch.full(keys.shape, float("nan"), dtype=torch.float32, device=keys.device)
        read = torch.unique(rows.reshape(-1)).long()  # ascending
        if len(read) > self._block_rows():
            pos = torch.searchsorted(self.keys, keys).clamp(max=len(self.keys) - 1)
            return torch.where(self.keys[pos] == keys, self.values[pos], float("nan"))
        starts = self.row_starts[read]
        lengths = self.row_starts[read + 1] - starts
        ends = torch.cumsum(lengths, 0)
        cells = torch.arange(int(ends[-1]), device=keys.device) + torch.repeat_interleave(starts - (ends - lengths), lengths)
        shift = torch.repeat_interleave((read - torch.arange(len(read), device=read.device)) * self.width, lengths)
        block = torch.full((len(read) * self.width,), float("nan"), dtype=torch.float32, device=keys.device)
        block[self.keys.index_select(0, cells) - shift] = self.values.index_select(0, cells)  # row j of the block: read[j]
        local = torch.searchsorted(read, rows.long().contiguous()) * self.width + cols.long()
        return block.index_select(0, local.reshape(-1)).view(keys.shape)
