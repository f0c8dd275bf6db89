"""`Ratings`: every rating of a data set as parallel arrays of codes, plus id maps and metadata."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cfrec.data.idmap import IdMap

if TYPE_CHECKING:  # torch is imported where tensors are made: `import cfrec.data` stays light
    import torch


@dataclass(frozen=True, eq=False)
class ItemInfo:
    """Item metadata aligned with item codes: row ``c`` describes item code ``c``."""

    titles: np.ndarray  # (n_items,) str; "" where unknown
    years: np.ndarray  # (n_items,) float64; NaN where unknown
    genres: np.ndarray  # (n_items, n_genres) bool multi-hot
    genre_names: tuple[str, ...]

    def __post_init__(self) -> None:
        n = len(self.titles)
        if len(self.years) != n or self.genres.shape != (n, len(self.genre_names)):
            raise ValueError(
                f"item metadata shapes disagree: {n} titles, {len(self.years)} years, "
                f"genres {self.genres.shape} for {len(self.genre_names)} genre names"
            )

    def __len__(self) -> int:
        return len(self.titles)

    def take(self, codes: np.ndarray) -> "ItemInfo":
        """Metadata of the items ``codes``, in that order."""
        return ItemInfo(self.titles[codes], self.years[codes], self.genres[codes], self.genre_names)

    def genre_list(self, code: int) -> list[str]:
        """Genre names of one item."""
        return [self.genre_names[g] for g in np.flatnonzero(self.genres[code])]

    def to_frame(self) -> pd.DataFrame:
        """One row per item code: title, year and genres joined by ``|``."""
        names = np.array(self.genre_names, dtype=object)
        joined = ["|".join(names[row]) for row in self.genres]
        return pd.DataFrame({"title": self.titles, "year": self.years, "genres": joined})


@dataclass(frozen=True, eq=False)
class Ratings:
    """Ratings as parallel arrays over internal codes.

    ``users[r]`` rated ``items[r]`` with ``values[r]`` (at ``timestamps[r]``, unix seconds,
    NaN where unknown). Codes run 0..n-1; ``user_map``/``item_map`` translate them to the raw
    ids of the files and back. Subsets (splits) share their parent's maps, so codes mean the
    same thing in train and test. Rows keep the order of the source file.
    """

    users: np.ndarray  # (n,) int64 codes
    items: np.ndarray  # (n,) int64 codes
    values: np.ndarray  # (n,) float32 ratings
    user_map: IdMap
    item_map: IdMap
    timestamps: np.ndarray | None = None  # (n,) float64 unix seconds, NaN = unknown
    item_info: ItemInfo | None = None
    user_info: pd.DataFrame | None = None  # one row per user code, where the data set has it
    scale: tuple[float, float] | None = None  # declared rating scale (min, max)
    name: str = "ratings"
    meta: dict = field(default_factory=dict)  # free-form provenance (loader, counts dropped...)

    def __post_init__(self) -> None:
        n = len(self.users)
        for label, arr in (("items", self.items), ("values", self.values)):
            if len(arr) != n:
                raise ValueError(f"Ratings.{label} has {len(arr)} rows, users has {n}")
        if self.timestamps is not None and len(self.timestamps) != n:
            raise ValueError(f"Ratings.timestamps has {len(self.timestamps)} rows, users has {n}")
        if n:
            if self.users.min() < 0 or self.users.max() >= len(self.user_map):
                raise ValueError("user codes fall outside the user map")
            if self.items.min() < 0 or self.items.max() >= len(self.item_map):
                raise ValueError("item codes fall outside the item map")
        if self.item_info is not None and len(self.item_info) != len(self.item_map):
            raise ValueError(
                f"item_info describes {len(self.item_info)} items, the item map has {len(self.item_map)}"
            )

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_arrays(
        cls,
        user_ids: Sequence,
        item_ids: Sequence,
        values: Sequence[float],
        timestamps: Sequence[float] | None = None,
        *,
        user_map: IdMap | None = None,
        item_map: IdMap | None = None,
        **kwargs,
    ) -> "Ratings":
        """Ratings from raw ids. Maps are built from the ids (sorted) unless given."""
        user_ids, item_ids = np.asarray(user_ids), np.asarray(item_ids)
        if user_map is None:
            user_map, users = IdMap.from_values(user_ids, "user")
        else:
            users = user_map.codes(user_ids)
        if item_map is None:
            item_map, items = IdMap.from_values(item_ids, "item")
        else:
            items = item_map.codes(item_ids)
        ts = None if timestamps is None else np.asarray(timestamps, dtype=np.float64)
        vals = np.asarray(values, dtype=np.float32)
        return cls(users, items, vals, user_map, item_map, timestamps=ts, **kwargs)

    @classmethod
    def from_dense(
        cls,
        matrix: np.ndarray | Sequence[Sequence[float]],
        *,
        user_ids: Sequence | None = None,
        item_ids: Sequence | None = None,
        **kwargs,
    ) -> "Ratings":
        """Ratings from a users × items matrix with NaN where a user did not rate (the notes' Y).

        Row ``u`` becomes user code ``u`` and column ``i`` item code ``i``, also for rows or
        columns without any rating; raw ids are ``user_ids``/``item_ids`` or 0..n-1.
        """
        Y = np.asarray(matrix, dtype=np.float64)
        if Y.ndim != 2:
            raise ValueError(f"from_dense needs a 2-d users × items matrix, got shape {Y.shape}")
        if np.isinf(Y).any():
            raise ValueError("from_dense: ratings must be finite or NaN (missing), found inf")
        user_ids = np.arange(Y.shape[0]) if user_ids is None else np.asarray(user_ids)
        item_ids = np.arange(Y.shape[1]) if item_ids is None else np.asarray(item_ids)
        if len(user_ids) != Y.shape[0] or len(item_ids) != Y.shape[1]:
            raise ValueError(
                f"from_dense: {len(user_ids)} user ids and {len(item_ids)} item ids for a {Y.shape} matrix"
            )
        users, items = np.nonzero(~np.isnan(Y))  # row-major: user by user
        return cls(
            users.astype(np.int64), items.astype(np.int64), Y[users, items].astype(np.float32),
            IdMap(user_ids, "user"), IdMap(item_ids, "item"), **kwargs,
        )

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        *,
        user: str = "user",
        item: str = "item",
        rating: str = "rating",
        timestamp: str | None = "timestamp",
        **kwargs,
    ) -> "Ratings":
        """Ratings from a DataFrame of raw ids (column names configurable)."""
        ts = frame[timestamp].to_numpy() if timestamp is not None and timestamp in frame else None
        return cls.from_arrays(
            frame[user].to_numpy(), frame[item].to_numpy(), frame[rating].to_numpy(), ts, **kwargs
        )

    # -- sizes ----------------------------------------------------------------------------
    @property
    def n_users(self) -> int:
        return len(self.user_map)

    @property
    def n_items(self) -> int:
        return len(self.item_map)

    def __len__(self) -> int:
        return len(self.users)

    @property
    def density(self) -> float:
        return len(self) / max(1, self.n_users * self.n_items)

    @property
    def has_timestamps(self) -> bool:
        return self.timestamps is not None and not np.isnan(self.timestamps).all()

    def user_counts(self) -> np.ndarray:
        """Ratings per user code, shape (n_users,)."""
        return np.bincount(self.users, minlength=self.n_users)

    def item_counts(self) -> np.ndarray:
        """Ratings per item code, shape (n_items,)."""
        return np.bincount(self.items, minlength=self.n_items)

    def __repr__(self) -> str:
        return (
            f"Ratings({self.name!r}: {len(self):,} ratings, {self.n_users:,} users, "
            f"{self.n_items:,} items, density {self.density:.2%})"
        )

    # -- subsets --------------------------------------------------------------------------
    def subset(self, rows: np.ndarray, name: str | None = None) -> "Ratings":
        """The rows selected by a boolean mask or an index array, same id maps and metadata."""
        rows = np.asarray(rows)
        if rows.dtype == bool and len(rows) != len(self):
            raise ValueError(f"mask has {len(rows)} entries for {len(self)} ratings")
        ts = None if self.timestamps is None else self.timestamps[rows]
        return replace(
            self,
            users=self.users[rows],
            items=self.items[rows],
            values=self.values[rows],
            timestamps=ts,
            name=name or self.name,
            meta=dict(self.meta),
        )

    # -- conversions ----------------------------------------------------------------------
    def to_frame(self, raw_ids: bool = True) -> pd.DataFrame:
        """Columns user, item, rating (and timestamp), with raw ids or codes."""
        users = self.user_map.to_ids(self.users) if raw_ids else self.users
        items = self.item_map.to_ids(self.items) if raw_ids else self.items
        frame = pd.DataFrame({"user": users, "item": items, "rating": self.values})
        if self.timestamps is not None:
            frame["timestamp"] = self.timestamps
        return frame

    def to_csr(self, dtype: np.dtype = np.float32) -> sp.csr_matrix:
        """Users × items scipy CSR matrix of the ratings (unrated cells are structural zeros)."""
        return sp.csr_matrix(
            (self.values.astype(dtype), (self.users, self.items)), shape=(self.n_users, self.n_items)
        )

    def to_tensors(self, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(users int64, items int64, values float32) tensors, the gathered-index layout."""
        import torch

        return (
            torch.as_tensor(self.users, device=device),
            torch.as_tensor(self.items, device=device),
            torch.as_tensor(self.values, device=device),
        )

    def to_coo_tensor(self, device: str | torch.device = "cpu") -> torch.Tensor:
        """Coalesced sparse COO tensor of shape (n_users, n_items)."""
        import torch

        users, items, values = self.to_tensors(device)
        return torch.sparse_coo_tensor(
            torch.stack([users, items]), values, (self.n_users, self.n_items), check_invariants=False
        ).coalesce()  # codes were range-checked when the Ratings was built

    def to_dense(self, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Dense (Y, R): Y (n_users, n_items) float32 ratings with 0 where unrated, R the bool mask."""
        import torch

        users, items, values = self.to_tensors(device)
        Y = torch.zeros(self.n_users, self.n_items, dtype=torch.float32, device=device)
        R = torch.zeros(self.n_users, self.n_items, dtype=torch.bool, device=device)
        Y[users, items] = values
        R[users, items] = True
        return Y, R
