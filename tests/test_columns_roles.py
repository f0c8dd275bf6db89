"""`read_ratings(columns=...)` giving two roles one column: a `ConfigError` naming both roles."""

from __future__ import annotations

from pathlib import Path

import pytest

from cfrec.data import read_ratings
from cfrec.data.readers import check_options
from cfrec.data.sources import load_data
from cfrec.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def scored(tmp_path: Path) -> Path:
    return write(tmp_path / "r.csv", "user,item,score\n1,10,5\n2,10,3\n2,20,4\n")


def test_role_given_the_column_another_role_was_found_in(scored: Path) -> None:
    with pytest.raises(ConfigError, match=r"^columns: user and rating both name column 'user' of .*r\.csv"):
        read_ratings(scored, columns={"rating": "user"})
    with pytest.raises(ConfigError, match=r"^columns: user and item both name column 'item'"):
        read_ratings(scored, columns={"user": "item"})


def test_two_roles_given_one_column_fail_before_reading() -> None:
    with pytest.raises(ConfigError, match=r"^columns: user and item both name column 'who'"):
        check_options(columns={"user": "who", "item": "who"})


def test_positions_without_header(tmp_path: Path) -> None:
    path = write(tmp_path / "r.csv", "1,10,5\n2,10,3\n")
    with pytest.raises(ConfigError, match=r"^columns: user and rating both name column 0 "):
        read_ratings(path, header=False, columns={"rating": "0"})


def test_timestamp_found_in_a_given_column_is_dropped(tmp_path: Path) -> None:
    path = write(tmp_path / "r.csv", "user,item,time\n1,10,5\n2,10,3\n")
    ratings = read_ratings(path, columns={"rating": "time"})
    assert ratings.values.tolist() == [5.0, 3.0] and ratings.timestamps is None
    with pytest.raises(ConfigError, match=r"^columns: rating and timestamp both name column 'time'"):
        read_ratings(path, columns={"rating": "time", "timestamp": "time"})


def test_data_section_of_a_run(scored: Path) -> None:
    with pytest.raises(ConfigError, match=r"columns: user and rating both name column 'user'"):
        load_data({"name": "csv", "path": str(scored), "columns": {"rating": "user"}})
