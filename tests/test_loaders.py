"""MovieLens and generic readers on tiny files written in each original format."""

from __future__ import annotations

import numpy as np
import pytest

from cfrec.data import load, read_movielens, read_ratings
from cfrec.data.movielens import detect_layout
from cfrec.errors import ConfigError, DataFormatError
from cfrec.experiment import check_data_source, load_data


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


# -- issue 15 item 14: reader defects, each reproduced first --------------------------------
BOM = "\ufeff"


def test_bom_in_csv_release_files_is_ignored(tmp_path):
    write(tmp_path / "ratings.csv", BOM + "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n2,1,3.5,1\n")
    write(tmp_path / "movies.csv", BOM + "movieId,title,genres\n1,Heat (1995),Action\n")
    ratings = load(tmp_path)
    assert ratings.values.tolist() == [4.0, 3.5] and ratings.item_info.titles.tolist() == ["Heat (1995)"]


def test_bom_in_a_generic_file_and_in_the_strict_path(tmp_path):
    path = write(tmp_path / "r.csv", BOM + "userId,movieId,rating\n1,7,4\n1,8, 3\n")  # " 3": strict path
    ratings = read_ratings(path, integer_ids=True)
    assert ratings.user_map.ids.tolist() == [1] and ratings.values.tolist() == [4.0, 3.0]


@pytest.mark.parametrize("token", ["1e3", "1.0", "1.", "2E1", "0x5"])
@pytest.mark.parametrize("layout", ["dat", "csv", "generic"])
def test_ids_written_as_decimals_are_errors_naming_the_line(tmp_path, token, layout):
    if layout == "dat":
        path = write(tmp_path / "ratings.dat", f"1::10::5::1\n{token}::20::4::2\n")
        reader = lambda: load(tmp_path)  # noqa: E731
    elif layout == "csv":
        path = write(tmp_path / "ratings.csv", f"userId,movieId,rating,timestamp\n1,10,5,1\n2,{token},4,2\n")
        reader = lambda: load(tmp_path)  # noqa: E731
    else:
        path = write(tmp_path / "r.tsv", f"user\titem\trating\n1\t10\t5\n2\t{token}\t4\n")
        reader = lambda: read_ratings(path, integer_ids=True)  # noqa: E731
    with pytest.raises(DataFormatError, match=f"id '{token}' is not (an integer|a number)") as err:
        reader()
    assert err.value.path == str(path) and err.value.line == (2 if layout == "dat" else 3)


def test_movie_ids_written_as_decimals_are_errors(tmp_path):
    write(tmp_path / "ratings.dat", "1::10::5::1\n")
    path = write(tmp_path / "movies.dat", "10.0::Heat (1995)::Action\n")
    with pytest.raises(DataFormatError, match="movie id '10.0' is not an integer") as err:
        load(tmp_path)
    assert err.value.path == str(path) and err.value.line == 1


@pytest.mark.parametrize("layout", ["ml-1m", "ml-100k"])
def test_utf8_titles_in_latin1_layouts_are_not_mojibake(tmp_path, layout):
    title = "Amélie – Le Fabuleux Destin (2001)"
    if layout == "ml-1m":
        write(tmp_path / "ratings.dat", "1::10::5::1\n")
        write(tmp_path / "movies.dat", f"10::{title}::Comedy\n")  # re-encoded to UTF-8
    else:
        write(tmp_path / "u.data", "1\t10\t5\t1\n")
        write(tmp_path / "u.item", f"10|{title}|01-Jan-2001||http://x|{'|'.join(['0'] * 19)}\n")
    assert load(tmp_path).item_info.titles.tolist() == [title]


def test_folder_with_two_layouts_is_an_error_naming_both(tmp_path):
    write(tmp_path / "ratings.dat", "1::10::5::1\n")
    write(tmp_path / "u.data", "1\t10\t5\t1\n")
    with pytest.raises(DataFormatError, match="ratings.dat and u.data") as err:
        load(tmp_path)
    assert err.value.path == str(tmp_path)
    with pytest.raises(ConfigError, match=r"^data\.root: .*ratings.dat and u.data"):
        check_data_source({"name": "movielens", "root": str(tmp_path)})


@pytest.fixture
def csv_file(tmp_path):
    return write(tmp_path / "r.csv", "userId,movieId,rating\n1,7,4\n")


@pytest.mark.parametrize(
    "options, key",
    [
        ({"encoding": "bogus"}, "data.encoding"),
        ({"scale": [5, 1]}, "data.scale"),
        ({"scale": [1]}, "data.scale"),
        ({"scale": ["a", 5]}, "data.scale"),
        ({"on_duplicate": "keep"}, "data.on_duplicate"),
        ({"columns": {"person": "userId"}}, "data.columns"),
        ({"sep": ""}, "data.sep"),
        ({"header": "yes"}, "data.header"),
        ({"nonsense": 1}, "data.nonsense"),
    ],
)
def test_bad_file_options_are_config_errors_naming_the_key(csv_file, options, key):
    section = {"name": "csv", "path": str(csv_file), **options}
    for call in (check_data_source, load_data):
        with pytest.raises(ConfigError, match=f"^{key.replace('.', '[.]')}:"):
            call(section)


@pytest.mark.parametrize(
    "options, key",
    [
        ({"noise": -1}, "data.noise"),
        ({"noise": float("nan")}, "data.noise"),
        ({"n_users": 0}, "data.n_users"),
        ({"n_items": 2.5}, "data.n_items"),
        ({"rank": 0}, "data.rank"),
        ({"step": -0.5}, "data.step"),
        ({"seed": -1}, "data.seed"),
        ({"n_ratings": 10**9}, "data.n_ratings"),
        ({"n_users": True}, "data.n_users"),
    ],
)
def test_bad_synthetic_options_are_config_errors_before_any_work(options, key):
    section = {"name": "synthetic", "n_users": 50, "n_items": 40, "n_ratings": 500, **options}
    for call in (check_data_source, load_data):
        with pytest.raises(ConfigError, match=f"^{key.replace('.', '[.]')}:"):
            call(section)


def test_registry_serves_every_config_source(tmp_path, ml1m):
    path = write(tmp_path / "likes.csv", "who,what,stars\nann,dune,4\n")
    assert len(load_data({"name": "movielens", "root": str(ml1m)})) == 4
    assert len(load_data({"name": "csv", "path": str(path), "columns": {"user": "who", "item": "what", "rating": "stars"}})) == 1
    assert len(load_data({"name": "synthetic", "n_users": 50, "n_items": 40, "n_ratings": 500})) == 500
    with pytest.raises(ConfigError, match="^data.name: unknown data set 'nope'"):
        check_data_source({"name": "nope"})


def test_lone_carriage_return_is_an_error(tmp_path):
    path = write(tmp_path / "ratings.dat", "1::10::5::1\r2::20::3::4\n")
    with pytest.raises(DataFormatError) as err:
        load(tmp_path)
    assert err.value.path == str(path) and err.value.line == 1


def test_windows_line_ends_load(tmp_path):
    write(tmp_path / "ratings.dat", "1::10::5::1\r\n2::20::3::4\r\n")
    assert load(tmp_path).timestamps.tolist() == [1, 4]


def test_text_ids_are_kept_as_written(tmp_path):
    path = write(tmp_path / "r.csv", "user,item,rating\n007,a b,4\n7, a b ,3\n")
    ratings = read_ratings(path)
    assert ratings.user_map.ids.tolist() == ["007", "7"] and ratings.item_map.ids.tolist() == ["a b"]


def test_corrupt_parquet_is_a_data_format_error(tmp_path):
    pytest.importorskip("pyarrow")
    path = tmp_path / "r.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataFormatError, match="not a readable parquet file"):
        read_ratings(path)


# -- the fast typed reader agrees with the strict parser --------------------------------------
def _clean_file(tmp_path, sep: str, n: int = 3000, seed: int = 0):
    rng = np.random.default_rng(seed)
    users, items = rng.integers(1, 200, n), rng.integers(1, 300, n)
    stars = rng.integers(1, 11, n) / 2
    stamps = rng.integers(9 * 10**8, 10**9, n)
    lines = [f"{u}{sep}{i}{sep}{s:g}{sep}{t if k % 7 else ''}" for k, (u, i, s, t) in enumerate(zip(users, items, stars, stamps))]
    return write(tmp_path / ("ratings.dat" if sep == "::" else "ratings.csv"),
                 ("userId,movieId,rating,timestamp\n" if sep == "," else "") + "\n".join(lines) + "\n")


@pytest.mark.parametrize("sep", ["::", ","])
def test_fast_reader_matches_the_strict_parser(tmp_path, sep):
    pytest.importorskip("pyarrow")
    from cfrec.data.fast import read_typed
    from cfrec.data.normalize import to_ratings
    from cfrec.data.parsing import read_table

    path = _clean_file(tmp_path, sep)
    header = ("userId", "movieId", "rating", "timestamp") if sep == "," else None
    fast = read_typed(path, sep=sep, kinds=("int", "int", "float", "float"), header=header, optional=(3,))
    assert fast is not None, "the fast reader refused a clean file"
    strict = read_table(path, sep=sep, n_fields=4, header=header is not None, min_fields=3, integer_fields=(0, 1))
    strict.frame.columns = range(4)
    role = {"user": 0, "item": 1, "rating": 2, "timestamp": 3}
    a, b = (to_ratings(t, role, scale=(0.5, 5.0), on_duplicate="mean") for t in (fast, strict))
    assert a.user_map == b.user_map and a.item_map == b.item_map
    for name in ("users", "items", "values", "timestamps"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert np.isnan(a.timestamps).any()


@pytest.mark.parametrize(
    "content",
    ["1::10::5::1\n\n2::20::3::4\n", "1::10::5::1\n1:9:10::5::1\n", "1::10::nan::1\n", "1::10::5::1\r2::20::3::4\n",
     "1::1.0::5::1\n", "1::10::5\n", "+1::10::5::1\n", "0x5::10::5::1\n"],
)
def test_fast_reader_refuses_what_the_strict_parser_must_judge(tmp_path, content):
    pytest.importorskip("pyarrow")
    from cfrec.data.fast import read_typed

    path = write(tmp_path / "ratings.dat", content)
    assert read_typed(path, sep="::", kinds=("int", "int", "float", "float"), optional=(3,)) is None


def test_bench_load_runs_small(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, str(root / "scripts" / "bench_load.py"), "--ratings", "20000",
         "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "out" / "load.json").read_text())
    assert set(report["results"]) == {"csv", "dat"}
    for pair in report["results"].values():
        assert pair["pandas"]["rows"] == pair["cfrec"]["rows"] == 20000
    assert "| csv |" in (tmp_path / "out" / "load.md").read_text()


def test_every_data_preset_is_a_registered_source():
    from pathlib import Path

    from cfrec.apps.schema import preset
    from cfrec.data import SOURCES

    presets = sorted((Path(__file__).resolve().parents[1] / "cfrec" / "conf" / "data").glob("*.yaml"))
    assert presets
    for path in presets:
        section = preset("data", path.stem)  # as the apps compose it: the source's schema and the preset
        name = section.pop("name")
        assert name in SOURCES, path.name
        assert set(section) <= SOURCES[name].keys, (preset.name, set(section) - SOURCES[name].keys)
        if name == "synthetic" or name.startswith("ml-"):
            check_data_source({"name": name, **section})  # usable as shipped


@pytest.mark.parametrize("content", ["user,item,rating,ts\na,b,4,\n", 'user,item,rating,ts\n"",b,4,1\n', "user,item,rating,note\na,b,4,\n"])
def test_generic_reader_fields_are_all_required_on_both_paths(tmp_path, content):
    path = write(tmp_path / "r.csv", content)
    with pytest.raises(DataFormatError, match="missing") as err:
        read_ratings(path)
    assert err.value.line == 2
