"""Property-based fuzzing of every ratings loader with random corruptions.

Each corrupted file must either load to exactly what an independent, line-by-line oracle
parser reads from it, or raise a cfrec `DataFormatError` naming the file (and the line when
a line is at fault). Never a bare pandas traceback, never silently different data.
"""

from __future__ import annotations

import csv
import os
import math
import re
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from cfrec.data import read_movielens, read_ratings
from cfrec.errors import DataFormatError


@dataclass(frozen=True)
class Format:
    name: str
    file: str
    sep: str
    header: str | None
    scale: tuple[float, float]
    timestamp_optional: bool


FORMATS = [
    Format("ml-1m", "ratings.dat", "::", None, (1, 5), True),
    Format("ml-100k", "u.data", "\t", None, (1, 5), False),
    Format("csv", "ratings.csv", ",", "userId,movieId,rating,timestamp", (0.5, 5), True),
]
_INT = re.compile(r"^[ \t]*[+-]?\d+[ \t]*$")  # ids are integers as written: "1.0" and "1e3" are errors
_FLOAT = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?\s*$", re.IGNORECASE)


class Rejected(Exception):
    """The oracle finds the file malformed (at ``line``, or as a whole when None)."""

    def __init__(self, line: int | None):
        self.line = line


def oracle(data: bytes, fmt: Format) -> list[tuple[int, int, float, float]]:
    """Plain-Python reading of a ratings file, as strict as the format allows."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if not data.strip():
        raise Rejected(None)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise Rejected(data[: err.start].count(b"\n") + 1) from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    rows = []
    width = 4
    for number, line in enumerate(lines, start=1):
        line = line[:-1] if line.endswith("\r") else line
        if fmt.header is not None and number == 1:
            names = [name.strip() for name in line.split(fmt.sep)]
            if fmt.name == "generic":  # columns are found by name: more columns after them are fine
                width = len(names)
                names = names[:4]
            if names != fmt.header.split(fmt.sep):
                raise Rejected(1)
            continue
        if line == "":
            continue
        fields = _quoted_fields(line, number) if fmt.name == "generic" else line.split(fmt.sep)
        if len(fields) == 3 and fmt.timestamp_optional and fmt.name == "csv":
            fields.append("")
        if len(fields) != width or any(f == "" for f in fields[4:]):
            raise Rejected(number)
        user, item, rating, ts = fields[:4]
        if not (_INT.match(user) and _INT.match(item) and _FLOAT.match(rating)):
            raise Rejected(number)
        u, i, r = int(user), int(item), float(rating)
        if max(abs(u), abs(i)) >= 2**63 or not fmt.scale[0] <= r <= fmt.scale[1]:
            raise Rejected(number)
        if (ts == "" or ts.strip().lower() in ("nan", "+nan", "-nan")) and fmt.timestamp_optional:
            t = math.nan
        elif _FLOAT.match(ts):
            t = float(ts)
        else:
            raise Rejected(number)
        rows.append((u, i, r, t))
    if not rows:
        raise Rejected(None)
    return rows


def _quoted_fields(line: str, number: int) -> list[str]:
    """CSV fields with quotes removed, as any CSV reader reads them."""
    try:
        return next(csv.reader([line]))
    except (csv.Error, StopIteration):
        raise Rejected(number) from None


def render(rows, fmt: Format) -> list[str]:
    lines = [fmt.header] if fmt.header else []
    return lines + [fmt.sep.join(str(v) for v in row) for row in rows]


TOKENS = ["", "x", "nan", "NaN", "inf", "-inf", "1e400", "99999999999999999999", "-1", "0", "6", "4.5",
          "3.0", "NA", "NULL", '"5"', " 3", "1_0", "\x00", "é", "2e0", "+4", "0x5", "5 5", "1,5"]


@st.composite
def corrupted(draw, fmt: Format) -> bytes:
    n = draw(st.integers(1, 6))
    rows = [
        (draw(st.integers(1, 9)), draw(st.integers(1, 9)), draw(st.sampled_from([1, 2, 3, 4, 5])),
         draw(st.integers(0, 10**9)))
        for _ in range(n)
    ]
    lines = render(rows, fmt)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(lines) - 1)) if lines else 0
        action = draw(st.sampled_from(
            ["truncate", "separator", "field", "extra", "header", "blank", "latin1", "join", "crlf", "empty", "drop"]
        ))
        if not lines:
            break
        line = lines[at]
        if action == "truncate":
            lines[at] = line[: draw(st.integers(0, len(line)))]
        elif action == "separator" and fmt.sep in line:
            lines[at] = line.replace(fmt.sep, draw(st.sampled_from([",", ";", ":", "\t", "|", " ", "::"])), 1)
        elif action == "field":
            fields = line.split(fmt.sep)
            fields[draw(st.integers(0, len(fields) - 1))] = draw(st.sampled_from(TOKENS))
            lines[at] = fmt.sep.join(fields)
        elif action == "extra":
            lines[at] = line + fmt.sep + draw(st.sampled_from(["7", ""]))
        elif action == "header":
            lines.insert(at, fmt.header or "UserID::MovieID::Rating::Timestamp")
        elif action == "blank":
            lines.insert(at, "")
        elif action == "latin1":
            lines[at] = line + "\udce9"  # a lone latin-1 byte, invalid as utf-8
        elif action == "join" and at + 1 < len(lines):
            lines[at : at + 2] = [lines[at] + lines[at + 1]]
        elif action == "crlf":
            lines = [x + "\r" for x in lines]
        elif action == "empty":
            lines = []
        elif action == "drop":
            del lines[at]
    text = "\n".join(lines) + ("\n" if lines and draw(st.booleans()) else "")
    return text.encode("utf-8", errors="surrogateescape")


def check(data: bytes, fmt: Format, path, load) -> None:
    path.write_bytes(data)
    try:
        expected = oracle(data, fmt)
    except Rejected:
        expected = None
    try:
        ratings = load()
    except DataFormatError as err:
        assert err.path == str(path), f"error names {err.path}, not the file"
        assert err.line is not None or expected is None, f"no line named for {data!r}: {err}"
        return
    assert expected is not None, f"loaded a file the oracle rejects: {data!r}"
    frame = ratings.to_frame()
    got = list(zip(frame.user.tolist(), frame.item.tolist(), frame.rating.tolist(),
                   frame.timestamp.tolist() if "timestamp" in frame else [math.nan] * len(frame)))
    last = {}
    for row in expected:  # repeated pairs: the last one wins, at its own position
        last[(row[0], row[1])] = row
    want = [row for row in expected if last[(row[0], row[1])] is row]
    assert len(got) == len(want), (data, got, want)
    for g, w in zip(got, want):
        assert g[:3] == pytest.approx(w[:3]) and (g[3] == w[3] or (math.isnan(g[3]) and math.isnan(w[3]))), (data, g, w)


ROLES = ("user", "item", "rating", "timestamp")
FUZZ = settings(max_examples=int(os.environ.get("CFREC_FUZZ_EXAMPLES", 150)), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize("fmt", FORMATS, ids=[f.name for f in FORMATS])
@FUZZ
@given(data=st.data())
def test_movielens_loader_survives_corruption(tmp_path, fmt, data):
    folder = tmp_path / fmt.name
    folder.mkdir(exist_ok=True)
    check(data.draw(corrupted(fmt)), fmt, folder / fmt.file, lambda: read_movielens(folder))


@FUZZ
@given(data=st.data())
def test_generic_reader_survives_corruption(tmp_path, data):
    fmt = Format("generic", "r.csv", ",", "userId,movieId,rating,timestamp", (0.5, 5), True)
    path = tmp_path / fmt.file
    check(data.draw(corrupted(fmt)), fmt, path,
          lambda: read_ratings(path, integer_ids=True, scale=fmt.scale, columns=dict(zip(ROLES, fmt.header.split(",")))))


def test_oracle_agrees_on_a_clean_file(tmp_path):
    fmt = FORMATS[0]
    data = "\n".join(render([(1, 2, 3, 4), (2, 2, 5, 6)], fmt)).encode()
    check(data, fmt, tmp_path / fmt.file, lambda: read_movielens(tmp_path))
    assert np.isfinite(oracle(data, fmt)[0][3])


MOVIE_FORMATS = {
    "ml-1m": ("ratings.dat", "1::{m}::3::1\n", "movies.dat", "::", "latin-1"),
    "ml-100k": ("u.data", "1\t{m}\t3\t1\n", "u.item", "|", "latin-1"),
    "csv": ("ratings.csv", "1,{m},3,1\n", "movies.csv", ",", "utf-8"),
}


def movie_line(kind: str, movie: int, title: str, genres: list[str]) -> str:
    if kind == "ml-100k":
        flags = ["1" if g in genres else "0" for g in GENRES_100K]
        return "|".join([str(movie), title, "01-Jan-1995", "", "http://x"] + flags)
    sep = MOVIE_FORMATS[kind][3]
    return sep.join([str(movie), f'"{title}"' if kind == "csv" and "," in title else title, "|".join(genres)])


GENRES_100K = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
               "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
               "War", "Western"]


def movie_oracle(kind: str, data: bytes) -> dict[int, tuple[str, frozenset]]:
    """id → (title, genres) by a plain reading of a movies file."""
    _, _, _, sep, encoding = MOVIE_FORMATS[kind]
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError:
        raise Rejected(None) from None
    lines = text.split("\n")
    if kind == "csv":
        if lines[0].split(",") != ["movieId", "title", "genres"]:
            raise Rejected(1)
        lines = lines[1:]
    movies = {}
    for line in lines:
        if line == "":
            continue
        if kind == "csv":
            try:
                fields = next(csv.reader([line]))
            except csv.Error:
                raise Rejected(None) from None
        else:
            fields = line.split(sep)
        if len(fields) != (24 if kind == "ml-100k" else 3) or not _INT.match(fields[0]):
            raise Rejected(None)
        movie = int(fields[0])
        if movie in movies:
            raise Rejected(None)
        if kind == "ml-100k":
            if any(f not in ("0", "1") for f in fields[5:]):
                raise Rejected(None)
            genres = frozenset(g for g, f in zip(GENRES_100K, fields[5:]) if f == "1")
        else:
            genres = frozenset(g for g in fields[2].strip().split("|") if g and g != "(no genres listed)")
        movies[movie] = (fields[1].strip(), genres)
    return movies


@pytest.mark.parametrize("kind", list(MOVIE_FORMATS))
@FUZZ
@given(data=st.data())
def test_movie_files_survive_corruption(tmp_path, kind, data):
    ratings_file, rating_line, movies_file, sep, encoding = MOVIE_FORMATS[kind]
    folder = tmp_path / kind
    folder.mkdir(exist_ok=True)
    (folder / ratings_file).write_text(
        ("userId,movieId,rating,timestamp\n" if kind == "csv" else "") + "".join(rating_line.format(m=m) for m in range(1, 5))
    )
    if kind == "ml-100k":
        (folder / "u.genre").write_text("".join(f"{g}|{i}\n" for i, g in enumerate(GENRES_100K)))
    titles = st.sampled_from(["Heat (1995)", "Amélie (2001)", "Big, Bad (1990)", "NA", "x|y (2000)", "", "1984", "2.50"])
    genres = st.lists(st.sampled_from(["Action", "Comedy", "Drama"]), unique=True, max_size=2)
    lines = [movie_line(kind, m, data.draw(titles), data.draw(genres)) for m in range(1, 5)]
    for _ in range(data.draw(st.integers(0, 2))):
        at = data.draw(st.integers(0, len(lines) - 1))
        action = data.draw(st.sampled_from(["truncate", "separator", "duplicate", "blank", "drop", "junk_id"]))
        if action == "truncate":
            lines[at] = lines[at][: data.draw(st.integers(0, len(lines[at])))]
        elif action == "separator":
            lines[at] = lines[at].replace(sep, data.draw(st.sampled_from([",", ";", "\t", "::", "|"])), 1)
        elif action == "duplicate":
            lines.insert(at, lines[at])
        elif action == "blank":
            lines.insert(at, "")
        elif action == "drop" and len(lines) > 1:
            del lines[at]
        elif action == "junk_id":
            lines[at] = data.draw(st.sampled_from(["x", "1.5", "-", ""])) + lines[at][1:]
    header = "movieId,title,genres\n" if kind == "csv" else ""
    raw = (header + "\n".join(lines) + "\n").encode(encoding, errors="replace")
    (folder / movies_file).write_bytes(raw)
    try:
        expected = movie_oracle(kind, raw)
    except Rejected:
        expected = None
    try:
        ratings = read_movielens(folder)
    except DataFormatError as err:
        assert err.path == str(folder / movies_file)
        return
    assert expected is not None, f"loaded a movies file the oracle rejects: {raw!r}"
    info = ratings.item_info
    for code, movie in enumerate(ratings.item_map.ids.tolist()):
        title, genre_set = expected.get(movie, ("", frozenset()))
        assert info.titles[code] == title and set(info.genre_list(code)) == genre_set, (raw, movie)
