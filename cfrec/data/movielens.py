"""MovieLens readers: one `read_movielens` that detects the release layout from the files present.

| layout | ratings | movies | users |
| --- | --- | --- | --- |
| ML-1M (``dat``) | ``ratings.dat`` ``UserID::MovieID::Rating::Timestamp`` | ``movies.dat`` | ``users.dat`` |
| ML-100K (``100k``) | ``u.data`` tab-separated | ``u.item`` ``|``-separated, 19 genre flags; ``u.genre`` | ``u.user`` |
| CSV (``csv``: ml-latest-small, ml-20m, ml-25m) | ``ratings.csv`` with header | ``movies.csv`` (quoted titles) | — |

Ratings files go through the fast typed reader first (`cfrec.data.fast`), the strict parser
when it refuses, then `cfrec.data.normalize.to_ratings`. Metadata files of the ML-1M and
ML-100K layouts are read as UTF-8 when they are valid UTF-8 (re-encoded copies), else as
latin-1 (the originals). A folder holding the ratings files of two layouts is an error: which
one was meant cannot be told, so keep one release per folder.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from cfrec.data.fast import read_typed
from cfrec.data.idmap import IdMap
from cfrec.data.normalize import to_ratings
from cfrec.data.parsing import OnDuplicate, Table, numeric_column, read_table
from cfrec.data.ratings import ItemInfo, Ratings
from cfrec.errors import DataFormatError

log = logging.getLogger(__name__)

_YEAR = re.compile(r"\((\d{4})(?:[-–]\d{0,4})?\)\s*$")
NO_GENRES = "(no genres listed)"
RATING_FIELDS = ("user id", "movie id", "rating", "timestamp")
META_ENCODING = ("utf-8", "latin-1")  # metadata files: UTF-8 when valid, else latin-1


@dataclass(frozen=True)
class Layout:
    """One MovieLens file layout: where ratings, movies and users live and how to read them."""

    name: str
    ratings_file: str
    sep: str
    header: tuple[str, ...] | None
    timestamp_optional: bool
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


def read_ratings_table(path: Path, layout: "Layout") -> Table:
    """The ratings file of ``layout``: fast typed reader, else the strict parser naming the line."""
    optional = (3,) if layout.timestamp_optional else ()
    table = read_typed(path, sep=layout.sep, kinds=("int", "int", "float", "float"), header=layout.header, optional=optional)
    if table is not None:
        return table
    table = read_table(
        path, sep=layout.sep, n_fields=4, header=layout.header is not None, min_fields=3 if optional else None,
        field_names=RATING_FIELDS, integer_fields=(0, 1),
    )
    if layout.header is not None:
        if list(table.frame.columns) != list(layout.header):
            raise DataFormatError(f"header {list(table.frame.columns)} is not {list(layout.header)}", path=path, line=1)
        table.frame.columns = range(4)
    return table


# -- ML-1M ---------------------------------------------------------------------------------
def _read_dat_movies(path: Path) -> MovieTable:
    table = read_table(path, sep="::", n_fields=3, encoding=META_ENCODING, text_fields=(1, 2), integer_fields=(0,))
    return _movies_from_genre_strings(table, 0, 1, 2)


def _read_dat_users(path: Path) -> pd.DataFrame:
    table = read_table(path, sep="::", n_fields=5, encoding=META_ENCODING, integer_fields=(0,))
    ids = _unique_ids(table, 0, "user id")
    frame = table.frame.iloc[:, 1:].set_axis(["gender", "age", "occupation", "zip"], axis=1)
    return frame.set_index(pd.Index(ids, name="user"))


# -- ML-100K -------------------------------------------------------------------------------
def _read_100k_movies(path: Path) -> MovieTable:
    table = read_table(path, sep="|", n_fields=24, encoding=META_ENCODING, min_fields=1, text_fields=(1, 2, 3, 4), integer_fields=(0,))
    genre_file = path.with_name("u.genre")
    if genre_file.is_file():
        genres = read_table(genre_file, sep="|", n_fields=2, encoding=META_ENCODING).frame
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
    table = read_table(path, sep="|", n_fields=5, encoding=META_ENCODING, integer_fields=(0,))
    ids = _unique_ids(table, 0, "user id")
    frame = table.frame.iloc[:, 1:].set_axis(["age", "gender", "occupation", "zip"], axis=1)
    return frame.set_index(pd.Index(ids, name="user"))


# -- CSV releases --------------------------------------------------------------------------
def _read_csv_movies(path: Path) -> MovieTable:
    table = read_table(path, sep=",", n_fields=3, header=True, quoted=True, text_fields=(1, 2), integer_fields=(0,))
    if list(table.frame.columns) != ["movieId", "title", "genres"]:
        raise DataFormatError(f"header {list(table.frame.columns)} is not ['movieId', 'title', 'genres']", path=path, line=1)
    return _movies_from_genre_strings(table, "movieId", "title", "genres")


LAYOUTS: tuple[Layout, ...] = (
    # the ML-1M timestamp may be empty ("3000::2987::4::"): missing, not an error
    Layout("ml-1m", "ratings.dat", "::", None, True, (1.0, 5.0), "movies.dat", _read_dat_movies, "users.dat", _read_dat_users),
    Layout("ml-100k", "u.data", "\t", None, False, (1.0, 5.0), "u.item", _read_100k_movies, "u.user", _read_100k_users),
    Layout("csv", "ratings.csv", ",", ("userId", "movieId", "rating", "timestamp"), True, (0.5, 5.0), "movies.csv", _read_csv_movies),
)


def detect_layout(folder: Path) -> Layout:
    """The layout whose ratings file is in ``folder``; a clear error when none is, or several are."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    found = [layout for layout in LAYOUTS if (folder / layout.ratings_file).is_file()]
    if len(found) > 1:
        names = " and ".join(layout.ratings_file for layout in found)
        raise DataFormatError(
            f"holds {names}, the ratings of different MovieLens layouts; which to read is ambiguous: "
            "keep one release per folder (or read one file with data=csv / cfrec.data.read_ratings)",
            path=folder,
        )
    if found:
        return found[0]
    wanted = ", ".join(layout.ratings_file for layout in LAYOUTS)
    raise FileNotFoundError(f"{folder}: no MovieLens ratings file here (looked for {wanted})")


def read_movielens(folder: str | Path, *, on_duplicate: OnDuplicate = "last", name: str | None = None) -> Ratings:
    """Read a MovieLens release folder into `Ratings`, with movie (and user) metadata."""
    folder = Path(folder)
    layout = detect_layout(folder)
    table = read_ratings_table(folder / layout.ratings_file, layout)
    ratings = to_ratings(
        table, {"user": 0, "item": 1, "rating": 2, "timestamp": 3}, scale=layout.scale, on_duplicate=on_duplicate,
        labels=("user id", "movie id"), name=name or folder.name, meta={"source": str(folder), "layout": layout.name},
    )
    del table
    item_info = user_info = None
    movies_path = folder / layout.movies_file
    if movies_path.is_file():
        item_info = _align_movies(layout.read_movies(movies_path), ratings.item_map, movies_path)
    if layout.users_file and (folder / layout.users_file).is_file():
        user_info = layout.read_users(folder / layout.users_file).reindex(ratings.user_map.ids).reset_index(drop=True)
    if item_info is None and user_info is None:
        return ratings
    return replace(ratings, item_info=item_info, user_info=user_info)


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
