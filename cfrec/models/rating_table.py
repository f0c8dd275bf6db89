"""A sparse matrix laid out for fast batched cell reads (the lookups of neighbourhood models)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor


class CellTable:
    """Reads many cells of a sparse (rows × cols) matrix at once, on CPU or GPU.

    Cells live in a dense row-major table when it fits in ``dense_mb`` MiB, else they are found by
    binary search in the sorted cell keys (same results, slower). Reading one row's cells for
    many columns touches one contiguous row, so batches should group reads by row. Column
    ``n_cols`` is a sentinel that is never stored: use it for empty slots.
    """

    def __init__(self, matrix: sp.spmatrix, *, device: str | torch.device = "cpu", dense_mb: float = 256.0):
        csr = sp.csr_matrix(matrix, dtype=np.float32)
        csr.sum_duplicates()  # canonical: sorted column indices, one entry per cell
        n_rows, n_cols = csr.shape
        self.width = n_cols + 1  # + the sentinel column
        rows = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(csr.indptr))
        keys = torch.as_tensor(rows * self.width + csr.indices, device=device)  # (nnz,) ascending
        values = torch.as_tensor(csr.data, device=device)  # (nnz,)
        self.dense: Tensor | None = None
        if n_rows * self.width * 4 <= dense_mb * 2**20:
            self.dense = torch.full((n_rows * self.width,), float("nan"), device=device)
            self.dense[keys] = values
        else:
            self.keys, self.values = keys, values

    def lookup(self, rows: Tensor, cols: Tensor) -> tuple[Tensor, Tensor]:
        """Cells (rows, cols), broadcast together: (values with 0 where absent, present mask)."""
        keys = rows * self.width + cols
        if self.dense is not None:
            found = self.dense[keys]
            present = ~torch.isnan(found)
        else:
            pos = torch.searchsorted(self.keys, keys).clamp(max=len(self.keys) - 1)
            found = self.values[pos]
            present = self.keys[pos] == keys
        return torch.where(present, found, 0.0), present
