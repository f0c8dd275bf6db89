"""MovieLens readers: one `read_movielens` that detects the release layout from the files present.

| layout | ratings | movies | users |
| --- | --- | --- | --- |
| ML-1M (``dat``) | ``ratings.dat`` ``UserID::MovieID::Rating::Timestamp`` | ``movies.dat`` (latin-1) | ``users.dat`` |
| ML-100K (``100k``) | ``u.data`` tab-separated | ``u.item`` ``|``-separated, 19 genre flags; ``u.genre`` | ``u.user`` |
| CSV (``csv``: ml-latest-small, ml-20m, ml-25m) | ``ratings.csv`` with header | ``movies.csv`` (quoted titles) | — |
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from cfrec.data.idmap import IdMap
from cfrec.data.parsing import OnDuplicate, Table, check_scale, numeric_column, read_table, resolve_duplicates
from cfrec.data.ratings import ItemInfo, Ratings
from cfrec.errors import DataFormatError

log = logging.getLogger(__name__)

_YEAR = re.compile(r"\((\d{4})(?:[-–]\d{0,4})?\)\s*$")
NO_GENRES = "(no genres listed)"
RATING_FIELDS = ("user id", "movie id", "rating", "timestamp")


@dataclass(frozen=True)
class Layout:
    """One MovieLens file layout: where ratings, movies and users live and how to read them."""

    name: str
    ratings_file: str
    read_ratings: Callable[[Path], Table]
    scale: tuple[float, float]
    movies_file: str
    read_movies: Callable[[Path], "MovieTable"]
    users_file: str | None = None
    read_users: Callable[[Path], pd.DataFrame] | None = None


@dataclass
class MovieTable:
    """Movies as read from a movies file: raw ids and metadata rows in file order."""

    ids: np.ndarray
    titles: np.ndarray
    years: np.ndarray
    genres: np.ndarray  # (n, n_genres) bool
    genre_names: tuple[str, ...]


def year_from_title(titles: pd.Series) -> np.ndarray:
    """Release year from a trailing ``(1995)`` in each title; NaN where there is none."""
    return pd.to_numeric(titles.str.extract(_YEAR, expand=False), errors="coerce").to_numpy(np.float64)


def _movies_from_genre_strings(table: Table, id_col: object, title_col: object, genre_col: object) -> MovieTable:
    frame = table.frame
    ids = _unique_ids(table, id_col)
    titles = frame[title_col].fillna("").str.strip()
    genre_lists = frame[genre_col].fillna("").str.strip().replace(NO_GENRES, "")
    dummies = genre_lists.str.get_dummies(sep="|")
    dummies = dummies.loc[:, [c for c in dummies.columns if c]]
    return MovieTable(ids, titles.to_numpy(object), year_from_title(titles), dummies.to_numpy(bool), tuple(dummies.columns))


def _unique_ids(table: Table, column: object, label: str = "movie id") -> np.ndarray:
    """The id column of a movies or users file; a repeated id is an error naming its second line."""
    ids = numeric_column(table, column, label, integer=True)
    repeated = pd.Index(ids).duplicated()
    if repeated.any():
        row = int(np.flatnonzero(repeated)[0])
        raise DataFormatError(f"{label} {ids[row]} appears twice", path=table.path, line=table.line_of(row))
    return ids


# -- ML-1M ---------------------------------------------------------------------------------
def _read_dat_ratings(path: Path) -> Table:
    # the timestamp may be empty ("3000::2987::4::"): missing, not an error
    return read_table(path, sep="::", n_fields=4, min_fields=3, field_names=RATING_FIELDS)


def _read_dat_movies(path: Path) -> MovieTable:
    table = read_table(path, sep="::", n_fields=3, encoding="latin-1", text_fields=(1, 2))
    return _movies_from_genre_strings(table, 0, 1, 2)


def _read_dat_users(path: Path) -> pd.DataFrame:
    table = read_table(path, sep="::", n_fields=5, encoding="latin-1")
    ids = _unique_ids(table, 0, "user id")
    frame = table.frame.iloc[:, 1:].set_axis(["gender", "age", "occupation", "zip"], axis=1)
    return frame.set_index(pd.Index(ids, name="user"))


# -- ML-100K -------------------------------------------------------------------------------
def _read_100k_ratings(path: Path) -> Table:
    return read_table(path, sep="\t", n_fields=4, field_names=RATING_FIELDS)


def _read_100k_movies(path: Path) -> MovieTable:
    table = read_table(path, sep="|", n_fields=24, encoding="latin-1", min_fields=1, text_fields=(1, 2, 3, 4))
    genre_file = path.with_name("u.genre")
    if genre_file.is_file():
        genres = read_table(genre_file, sep="|", n_fields=2, encoding="latin-1").frame
        names = tuple(genres.sort_values(1)[0].astype(str))
    else:
        names = tuple(f"genre_{g}" for g in range(19))
    if len(names) != 19:
        raise DataFormatError(f"expected 19 genres, found {len(names)}", path=genre_file)
    flags = np.stack([numeric_column(table, c, "genre flag", integer=True) for c in range(5, 24)], axis=1)
    bad = ~np.isin(flags, (0, 1)).all(axis=1)
    if bad.any():
        raise DataFormatError("genre flags must be 0 or 1", path=path, line=table.line_of(int(np.flatnonzero(bad)[0])))
    titles = table.frame[1].fillna("").str.strip()
    years = year_from_title(titles)
    dates = pd.to_datetime(table.frame[2], format="%d-%b-%Y", errors="coerce")
    years = np.where(np.isnan(years), dates.dt.year.to_numpy(np.float64), years)
    ids = _unique_ids(table, 0)
    return MovieTable(ids, titles.to_numpy(object), years, flags.astype(bool), names)


def _read_100k_users(path: Path) -> pd.DataFrame:
    table = read_table(path, sep="|", n_fields=5, encoding="latin-1")
    ids = _unique_ids(table, 0, "user id")
    frame = table.frame.iloc[:, 1:].set_axis(["age", "gender", "occupation", "zip"], axis=1)
    return frame.set_index(pd.Index(ids, name="user"))


# -- CSV releases --------------------------------------------------------------------------
_CSV_RATING_HEADER = ["userId", "movieId", "rating", "timestamp"]


def _read_csv_ratings(path: Path) -> Table:
    table = read_table(path, sep=",", n_fields=4, header=True, min_fields=3, field_names=RATING_FIELDS)
    if list(table.frame.columns) != _CSV_RATING_HEADER:
        raise DataFormatError(f"header {list(table.frame.columns)} is not {_CSV_RATING_HEADER}", path=path, line=1)
    table.frame.columns = range(4)
    return table


def _read_csv_movies(path: Path) -> MovieTable:
    table = read_table(path, sep=",", n_fields=3, header=True, quoted=True, text_fields=(1, 2))
    return _movies_from_genre_strings(table, "movieId", "title", "genres")


LAYOUTS: tuple[Layout, ...] = (
    Layout("ml-1m", "ratings.dat", _read_dat_ratings, (1.0, 5.0), "movies.dat", _read_dat_movies, "users.dat", _read_dat_users),
    Layout("ml-100k", "u.data", _read_100k_ratings, (1.0, 5.0), "u.item", _read_100k_movies, "u.user", _read_100k_users),
    Layout("csv", "ratings.csv", _read_csv_ratings, (0.5, 5.0), "movies.csv", _read_csv_movies),
)


def detect_layout(folder: Path) -> Layout:
    """The layout whose ratings file is in ``folder``; a clear error when none is."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    for layout in LAYOUTS:
        if (folder / layout.ratings_file).is_file():
            return layout
    wanted = ", ".join(layout.ratings_file for layout in LAYOUTS)
    raise FileNotFoundError(f"{folder}: no MovieLens ratings file here (looked for {wanted})")


def read_movielens(folder: str | Path, *, on_duplicate: OnDuplicate = "last", name: str | None = None) -> Ratings:
    """Read a MovieLens release folder into `Ratings`, with movie (and user) metadata."""
    folder = Path(folder)
    layout = detect_layout(folder)
    table = layout.read_ratings(folder / layout.ratings_file)
    users = numeric_column(table, 0, "user id", integer=True)
    items = numeric_column(table, 1, "movie id", integer=True)
    values = numeric_column(table, 2, "rating", integer=False)
    check_scale(values, layout.scale, table)
    timestamps = numeric_column(table, 3, "timestamp", integer=False, allow_missing=True)
    keep, values = resolve_duplicates(users, items, values, on_duplicate, table)
    users, items, timestamps = users[keep], items[keep], timestamps[keep]
    n_missing_ts = int(np.isnan(timestamps).sum())
    if n_missing_ts:
        log.info("%s: %d rating(s) have no timestamp", table.path, n_missing_ts)

    user_map, user_codes = IdMap.from_values(users, "user")
    item_map, item_codes = IdMap.from_values(items, "item")
    item_info = None
    movies_path = folder / layout.movies_file
    if movies_path.is_file():
        item_info = _align_movies(layout.read_movies(movies_path), item_map, movies_path)
    user_info = None
    if layout.users_file and (folder / layout.users_file).is_file():
        user_info = layout.read_users(folder / layout.users_file).reindex(user_map.ids).reset_index(drop=True)
    return Ratings(
        user_codes, item_codes, values.astype(np.float32), user_map, item_map,
        timestamps=timestamps, item_info=item_info, user_info=user_info, scale=layout.scale,
        name=name or folder.name, meta={"source": str(folder), "layout": layout.name},
    )


def _align_movies(movies: MovieTable, item_map: IdMap, path: Path) -> ItemInfo:
    """Metadata rows in item-code order; rated movies absent from the movies file get blanks."""
    rows = pd.Index(movies.ids).get_indexer(item_map.ids)
    found = rows >= 0
    if not found.all():
        log.warning("%s: %d rated movie(s) have no entry; their title and genres are blank", path, int((~found).sum()))
    n = len(item_map)
    titles = np.full(n, "", dtype=object)
    years = np.full(n, np.nan)
    genres = np.zeros((n, len(movies.genre_names)), dtype=bool)
    titles[found], years[found], genres[found] = movies.titles[rows[found]], movies.years[rows[found]], movies.genres[rows[found]]
    return ItemInfo(titles, years, genres, movies.genre_names)
