"""MovieLens and generic readers on tiny files written in each original format."""

from __future__ import annotations

import numpy as np
import pytest

from cfrec.data import load, read_movielens, read_ratings
from cfrec.data.movielens import detect_layout
from cfrec.errors import DataFormatError


def write(path, text: str, encoding: str = "utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


@pytest.fixture
def ml1m(tmp_path):
    write(tmp_path / "ratings.dat", "1::10::5::978300760\n1::20::3::978302109\n2::10::4::\n3::30::1::978301968\n")
    write(tmp_path / "movies.dat", "10::Amélie (2001)::Comedy|Romance\n20::Toy Story (1995)::Animation|Children's|Comedy\n"
          "30::Heat (1995)::Action|Crime|Thriller\n40::Never Rated (1999)::Drama\n", "latin-1")
    write(tmp_path / "users.dat", "1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::15::55117\n")
    return tmp_path


def test_ml1m_layout(ml1m):
    ratings = load(ml1m)
    assert (len(ratings), ratings.n_users, ratings.n_items) == (4, 3, 3)
    assert ratings.user_map.ids.tolist() == [1, 2, 3] and ratings.item_map.ids.tolist() == [10, 20, 30]
    assert ratings.values.tolist() == [5, 3, 4, 1]
    assert np.isnan(ratings.timestamps[2]) and ratings.timestamps[0] == 978300760
    info = ratings.item_info
    assert info.titles.tolist() == ["Amélie (2001)", "Toy Story (1995)", "Heat (1995)"]
    assert info.years.tolist() == [2001, 1995, 1995]
    assert info.genre_list(1) == ["Animation", "Children's", "Comedy"]
    assert ratings.user_info["gender"].tolist() == ["F", "M", "M"]
    assert ratings.scale == (1.0, 5.0)


def test_ml100k_layout(tmp_path):
    write(tmp_path / "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t242\t1\t878887116\n")
    genres = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
              "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
              "War", "Western"]
    write(tmp_path / "u.genre", "".join(f"{g}|{i}\n" for i, g in enumerate(genres)) + "\n")
    flags = ["0"] * 19
    flags[5] = "1"
    write(tmp_path / "u.item",
          f"242|Kolya (1996)|24-Jan-1997||http://us.imdb.com/M/title-exact?Kolya%20(1996)|{'|'.join(flags)}\n"
          f"302|L.A. Confidential (1997)|01-Jan-1997||http://x|{'|'.join(['0'] * 16 + ['1', '0', '0'])}\n", "latin-1")
    ratings = load(tmp_path)
    assert detect_layout(tmp_path).name == "ml-100k"
    assert ratings.item_map.ids.tolist() == [242, 302]
    assert ratings.item_info.genre_names == tuple(genres)
    assert ratings.item_info.genre_list(0) == ["Comedy"] and ratings.item_info.genre_list(1) == ["Thriller"]
    assert ratings.item_info.years.tolist() == [1996, 1997]
    assert ratings.timestamps.tolist() == [881250949, 891717742, 878887116]


def test_csv_release_keeps_half_stars_and_quoted_titles(tmp_path):
    write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,0.5,964981247\n2,1,3.5,1\n")
    write(tmp_path / "movies.csv", 'movieId,title,genres\n1,"American President, The (1995)",Comedy|Drama|Romance\n'
          '3,Nothing (2003),(no genres listed)\n')
    ratings = load(tmp_path)
    assert ratings.values.dtype == np.float32 and ratings.values.tolist() == [4.0, 0.5, 3.5]
    assert ratings.item_info.titles[0] == "American President, The (1995)"
    assert ratings.item_info.genres[1].sum() == 0 and "(no genres listed)" not in ratings.item_info.genre_names
    assert ratings.scale == (0.5, 5.0)


@pytest.mark.parametrize(
    "content, line, message",
    [
        ("1::10::5::1\n1::20::x::2\n", 2, "rating 'x' is not a number"),
        ("1::10::5::1\n1::20\n", 2, "expected 4 fields, found 2"),
        ("1::10::5::1\n1::20::4\n", 2, "expected 4 fields, found 3"),
        ("1::10::5::1\n1::20::4::2::9\n", 2, "expected 4 fields, found 5"),
        ("1::10::5::1::9\n1::20::4::2\n", 1, "expected 4 fields"),
        ("1::10::5::1\n2::20::7::2\n", 2, "outside the scale 1–5"),
        ("1::10::5::1\n2::20::nan::2\n", 2, "rating 'nan' is not a number"),
        ("1::10::5::1\n2::20::::2\n", 2, "rating is missing"),
        ("1::10::5::1\n2.5::20::3::2\n", 2, "user id '2.5' is not an integer"),
        ("1::10::5::1\n2::99999999999999999999::3::2\n", 2, "not an integer that fits in 64 bits"),
        ("1\t10\t5\t1\n", 1, "expected 4 fields"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, content, line, message):
    path = write(tmp_path / "ratings.dat", content)
    with pytest.raises(DataFormatError, match=message) as err:
        read_movielens(tmp_path)
    assert err.value.path == str(path) and err.value.line == line


def test_empty_file_is_a_clear_error(tmp_path):
    write(tmp_path / "u.data", "\n")
    with pytest.raises(DataFormatError, match="empty"):
        load(tmp_path)


def test_folder_without_ratings_names_what_it_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError, match="ratings.dat, u.data, ratings.csv"):
        load(tmp_path)


def test_wrong_encoding_names_the_line(tmp_path):
    write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,1\n")
    (tmp_path / "movies.csv").write_bytes(b"movieId,title,genres\n1,Am\xe9lie (2001),Comedy\n")
    with pytest.raises(DataFormatError, match="not valid utf-8") as err:
        load(tmp_path)
    assert err.value.line == 2


@pytest.mark.parametrize("rule, expected", [("last", [2.0, 5.0]), ("first", [1.0, 2.0]), ("mean", [3.0, 2.0])])
def test_duplicate_pairs_follow_the_rule(tmp_path, rule, expected, caplog):
    write(tmp_path / "ratings.dat", "1::10::1::1\n1::20::2::2\n1::10::5::3\n")
    ratings = load(tmp_path, on_duplicate=rule)
    assert ratings.values.tolist() == expected
    assert "1 repeated (user, item) pair(s)" in caplog.text


def test_duplicate_pairs_can_be_an_error(tmp_path):
    write(tmp_path / "ratings.dat", "1::10::1::1\n1::20::2::2\n1::10::5::3\n")
    with pytest.raises(DataFormatError, match=r"more than once \(lines 1, 3\)"):
        load(tmp_path, on_duplicate="error")


def test_generic_reader_with_custom_columns_and_string_ids(tmp_path):
    path = write(tmp_path / "likes.tsv", "who\twhat\tstars\nann\tdune\t4.5\nbob\tdune\t2\nann\theat\t3\n")
    ratings = read_ratings(path, columns={"user": "who", "item": "what", "rating": "stars"}, scale=(1, 5))
    assert ratings.user_map.ids.tolist() == ["ann", "bob"] and ratings.item_map.ids.tolist() == ["dune", "heat"]
    assert ratings.values.tolist() == [4.5, 2.0, 3.0] and ratings.timestamps is None


def test_generic_reader_recognises_common_names_and_parquet(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    frame = pd.DataFrame({"userId": [3, 1], "movieId": [7, 7], "rating": [4.0, 2.0], "timestamp": [5, 6]})
    frame.to_parquet(tmp_path / "r.parquet")
    ratings = read_ratings(tmp_path / "r.parquet", integer_ids=True)
    assert ratings.user_map.ids.tolist() == [1, 3] and ratings.users.tolist() == [1, 0]
    assert ratings.timestamps.tolist() == [5, 6]


def test_generic_reader_without_header_uses_positions(tmp_path):
    path = write(tmp_path / "r.csv", "1,2,3.5\n2,2,4\n")
    ratings = read_ratings(path, header=False, integer_ids=True)
    assert ratings.values.tolist() == [3.5, 4.0] and ratings.item_map.ids.tolist() == [2]


def test_generic_reader_unknown_columns_are_named(tmp_path):
    path = write(tmp_path / "r.csv", "a,b,c\n1,2,3\n")
    with pytest.raises(DataFormatError, match="cannot tell which column holds user, item, rating"):
        read_ratings(path)
