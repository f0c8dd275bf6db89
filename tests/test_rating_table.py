"""CellTable: batched cell reads against a brute-force read of the same sparse matrix."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from cfrec.models import rating_table
from cfrec.models.rating_table import CellTable


@pytest.fixture
def matrix() -> sp.csr_matrix:
    rng = np.random.default_rng(0)
    dense = rng.integers(1, 6, size=(40, 25)).astype(np.float32) * (rng.random((40, 25)) < 0.3)
    dense[3, 7] = -2.5  # negative and fractional values are stored as given
    dense[5] = 0  # a row without any stored cell
    return sp.csr_matrix(dense)


@pytest.mark.parametrize(("dense_mb", "block_mb", "search_cost"),
                         [(256.0, 64.0, 16), (0.0, 64.0, 1e9), (0.0, 64.0, 0), (0.0, 0.0, 16)])
def test_lookup_matches_brute_force_reads_and_marks_absent_cells(matrix, dense_mb, block_mb, search_cost, monkeypatch):
    """The dense table, the sparse path's block of the rows read, its search in their keys, and its
    search in all cells."""
    monkeypatch.setattr(rating_table, "BLOCK_MB", block_mb)
    monkeypatch.setattr(rating_table, "SEARCH_COST", search_cost)
    table = CellTable(matrix, dense_mb=dense_mb)
    assert (table.dense is not None) == (dense_mb > 0)
    rng = np.random.default_rng(1)
    rows = torch.as_tensor(np.append(rng.integers(0, 40, size=199), 5)[:, None])  # row 5: no cells
    cols = torch.as_tensor(rng.integers(0, 26, size=(200, 9)), dtype=torch.int32)  # 25: the sentinel column
    values, presence = table.lookup(rows, cols)
    full = np.hstack([matrix.toarray(), np.zeros((40, 1), np.float32)])  # + the never-stored sentinel
    stored = np.hstack([matrix.toarray() != 0, np.zeros((40, 1), bool)])
    r, c = rows.numpy(), cols.numpy()
    assert values.dtype == presence.dtype == torch.float32
    np.testing.assert_array_equal(values.numpy(), full[r, c])
    np.testing.assert_array_equal(presence.numpy(), stored[r, c].astype(np.float32))
    assert presence.sum() > 0 and (presence == 0).sum() > 0


def test_dense_keys_are_int32_only_while_every_cell_fits():
    small = CellTable(sp.csr_matrix((3, 4), dtype=np.float32))
    assert small.key_dtype == torch.int32
    sparse = CellTable(sp.csr_matrix((3, 4), dtype=np.float32), dense_mb=0)
    assert sparse.key_dtype == torch.int64


def test_an_empty_lookup_returns_empty_tensors(matrix):
    for table in (CellTable(matrix), CellTable(matrix, dense_mb=0)):
        values, presence = table.lookup(torch.zeros((0, 1), dtype=torch.long), torch.zeros((0, 4), dtype=torch.long))
        assert values.shape == presence.shape == (0, 4)


@pytest.mark.parametrize("search_cost", [1e9, 0])  # a block of the rows read, or a search in their keys
def test_a_lookup_of_rows_without_cells_finds_nothing(matrix, search_cost, monkeypatch):
    monkeypatch.setattr(rating_table, "SEARCH_COST", search_cost)
    values, presence = CellTable(matrix, dense_mb=0).lookup(torch.tensor([[5], [5]]), torch.tensor([[0, 24], [3, 25]]))
    assert torch.equal(values, torch.zeros(2, 2)) and torch.equal(presence, torch.zeros(2, 2))


def test_the_binary_search_of_a_table_without_cells_finds_nothing(monkeypatch):
    monkeypatch.setattr(rating_table, "BLOCK_MB", 0.0)  # no block: the search serves every lookup
    table = CellTable(sp.csr_matrix((4, 6), dtype=np.float32), dense_mb=0)
    values, presence = table.lookup(torch.tensor([[0], [3]]), torch.tensor([[1, 5], [0, 6]]))
    assert torch.equal(values, torch.zeros(2, 2)) and torch.equal(presence, torch.zeros(2, 2))


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_a_non_finite_value_is_refused_with_its_cell(bad):
    dense = np.zeros((3, 4), np.float32)
    dense[0, 1], dense[2, 3] = 4.0, bad
    with pytest.raises(ValueError, match=r"cell \(2, 3\)"):
        CellTable(sp.csr_matrix(dense))


@pytest.mark.parametrize("dense_mb", [256.0, 0.0])
def test_lookups_stay_float32_under_a_float64_default_dtype(matrix, dense_mb):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        table = CellTable(matrix, dense_mb=dense_mb)
        values, presence = table.lookup(torch.tensor([[0], [3]]), torch.tensor([[7], [7]]))
    finally:
        torch.set_default_dtype(previous)
    assert values.dtype == presence.dtype == torch.float32
    assert values[1, 0] == -2.5 and presence[1, 0] == 1.0


def test_a_row_wider_than_the_block_leaves_lookups_unchunked_and_searched(matrix, monkeypatch):
    """No block fits even one row: lookups gain nothing from reading fewer rows (no chunk limit)."""
    monkeypatch.setattr(rating_table, "BLOCK_MB", 26 * 4 / 2**20 * 0.5)  # half a row of 25 + 1 columns
    table = CellTable(matrix, dense_mb=0)
    assert table.rows_per_lookup is None
    rows, cols = torch.arange(40)[:, None], torch.arange(26)[None, :].expand(40, 26)
    values, _ = table.lookup(rows, cols)
    np.testing.assert_array_equal(values.numpy(), np.hstack([matrix.toarray(), np.zeros((40, 1), np.float32)]))
