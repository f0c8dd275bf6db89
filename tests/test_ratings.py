"""The `Ratings` container and `IdMap`: conversions agree with each other and round-trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cfrec.data import IdMap, Ratings
from cfrec.errors import UnknownIdError


@pytest.fixture
def tiny() -> Ratings:
    return Ratings.from_arrays([30, 10, 10, 20], [7, 5, 7, 9], [4.0, 3.5, 1.0, 5.0], [4, 3, 2, 1])


def test_codes_follow_sorted_raw_ids(tiny):
    assert tiny.user_map.ids.tolist() == [10, 20, 30] and tiny.users.tolist() == [2, 0, 0, 1]
    assert tiny.item_map.ids.tolist() == [5, 7, 9] and tiny.items.tolist() == [1, 0, 1, 2]
    assert (len(tiny), tiny.n_users, tiny.n_items) == (4, 3, 3)


def test_conversions_agree(tiny):
    csr = tiny.to_csr().toarray()
    Y, R = tiny.to_dense()
    coo = tiny.to_coo_tensor().to_dense()
    np.testing.assert_array_equal(Y.numpy(), csr)
    np.testing.assert_array_equal(coo.numpy(), csr)
    assert R.sum() == 4 and R.dtype == torch.bool and bool(R[2, 1]) and not bool(R[1, 0])
    users, items, values = tiny.to_tensors()
    assert users.dtype == torch.int64 and values.tolist() == [4.0, 3.5, 1.0, 5.0]


def test_frame_round_trip(tiny):
    again = Ratings.from_frame(tiny.to_frame())
    assert again.users.tolist() == tiny.users.tolist() and again.items.tolist() == tiny.items.tolist()
    assert again.timestamps.tolist() == tiny.timestamps.tolist()


def test_subset_keeps_maps_and_order(tiny):
    part = tiny.subset(np.array([True, False, True, False]))
    assert part.user_map is tiny.user_map and part.values.tolist() == [4.0, 1.0]
    assert part.n_items == 3  # the id space is shared, not shrunk
    with pytest.raises(ValueError, match="mask has 2 entries for 4 ratings"):
        tiny.subset(np.array([True, False]))


def test_id_map_lookups_and_unknown_ids():
    ids = IdMap([10, 30, 20], kind="movie")
    assert ids.codes([20, 10]).tolist() == [2, 0] and ids.code(30) == 1 and ids.id(2) == 20
    assert 30 in ids and 40 not in ids
    assert ids.codes([10, 99], strict=False).tolist() == [0, -1]
    with pytest.raises(UnknownIdError, match="unknown movie id 99") as err:
        ids.codes([10, 99, 98])
    assert isinstance(err.value, KeyError) and "and 1 more" in str(err.value)
    with pytest.raises(UnknownIdError, match="unknown movie id 'x'"):
        ids.code("x")
    with pytest.raises(ValueError, match="movie id 10 appears twice"):
        IdMap([10, 10], kind="movie")


def test_shapes_are_validated():
    ids = IdMap([1, 2], "user")
    with pytest.raises(ValueError, match="item codes fall outside"):
        Ratings(np.array([0]), np.array([5]), np.array([1.0], np.float32), ids, IdMap([1], "item"))
    with pytest.raises(ValueError, match="values has 2 rows"):
        Ratings(np.array([0]), np.array([0]), np.array([1.0, 2.0], np.float32), ids, IdMap([1], "item"))


@pytest.mark.parametrize(
    "values",
    [
        np.array([5, -3, 5, 0, 7, -3]),  # dense span, negative ids
        np.array([10**15, 1, 10**15, 42]),  # wide span: the sorting path
        np.array([2**63 - 1, -(2**63), 0]),  # int64 extremes
        np.random.default_rng(0).integers(1, 60_000, 100_000),
        np.array([3, 1, 2], dtype=np.uint32),
    ],
)
def test_id_map_codes_agree_with_sorting(values):
    id_map, codes = IdMap.from_values(values, "item")
    ids, inverse = np.unique(values, return_inverse=True)
    np.testing.assert_array_equal(id_map.ids, ids)
    np.testing.assert_array_equal(codes, inverse)
    assert codes.dtype == np.int64 and id_map.ids.dtype == values.dtype


def test_an_unknown_id_whose_text_or_integer_twin_is_known_says_which_to_use():
    text, numbers = IdMap(["1", "2"], kind="user"), IdMap(np.array([1, 2]), kind="item")
    with pytest.raises(UnknownIdError, match=r"unknown user id 1; this data's ids are text: use '1'"):
        text.code(1)
    with pytest.raises(UnknownIdError, match=r"unknown user id 2 \(and 1 more unknown\); this data's ids are text: use '2'"):
        text.codes([2, 1])
    with pytest.raises(UnknownIdError, match=r"unknown item id '2'; this data's ids are integers: use 2$"):
        numbers.code("2")
    with pytest.raises(UnknownIdError, match=r"^unknown item id 3$"):  # no twin: no hint
        numbers.code(3)
