"""The data-source registry: the one place where a data set name or path becomes `Ratings`.

| name | what | keys |
| --- | --- | --- |
| ``ml-100k``, ``ml-1m``, ``ml-latest-small``, ``ml-20m``, ``ml-25m`` | a release under the data root, downloaded if absent | ``root``, ``download``, ``on_duplicate`` |
| ``movielens`` | any folder in a MovieLens layout (``::``, tab or CSV release) | ``root``, ``on_duplicate`` |
| ``csv`` | any CSV/TSV/``::``/parquet ratings file | ``path``, ``sep``, ``header``, ``columns``, ``integer_ids``, ``scale``, ``encoding``, ``on_duplicate`` |
| ``synthetic`` | MovieLens-shaped synthetic ratings | ``n_users``, ``n_items``, ``n_ratings``, ``rank``, ``noise``, ``step``, ``seed`` |

`check_data` validates a ``data`` config section before any work (`ConfigError` naming
``data.<key>``); `load_data` reads it; `load` (``cfrec.data.load``) maps a folder, a file or a
release name onto the same sources.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from cfrec.data.download import RELEASES, fetch
from cfrec.data.movielens import detect_layout, read_movielens
from cfrec.data.parsing import OnDuplicate
from cfrec.data.ratings import Ratings
from cfrec.data.readers import DUPLICATE_RULES, check_options, read_ratings
from cfrec.data.synthetic import check_synthetic, synthetic
from cfrec.errors import ConfigError, DataFormatError
from cfrec.validation import check_bool, check_choice, check_keys


@dataclass(frozen=True)
class DataSource:
    """One kind of data set: its config keys, a check run before any work, and its reader."""

    keys: frozenset[str]
    check: Callable[[dict[str, Any]], None]  # raises ConfigError naming the bare key
    read: Callable[[str, dict[str, Any]], Ratings]  # (name, options) → Ratings


def section_options(section: Mapping[str, Any], key: str) -> tuple[str, dict[str, Any]]:
    """(name, the other keys) of a config section; the name is required."""
    options = dict(section)
    name = options.pop("name", None)
    if not name:
        raise ConfigError(f"{key}.name", "missing")
    return str(name), options


# -- the sources -----------------------------------------------------------------------------
def _check_duplicate_rule(options: Mapping[str, Any]) -> None:
    check_choice("on_duplicate", options.get("on_duplicate", "last"), DUPLICATE_RULES)


def _check_bool(options: Mapping[str, Any], key: str) -> None:
    if key in options:
        check_bool(key, options[key])


def _check_folder(options: dict[str, Any]) -> None:
    root = options.get("root")
    if not root or root == "???":
        raise ConfigError("root", "set it to a folder laid out like a MovieLens release")
    try:
        detect_layout(Path(root).expanduser())
    except (FileNotFoundError, DataFormatError) as err:
        raise ConfigError("root", str(err)) from None
    _check_duplicate_rule(options)


def _read_folder(name: str, options: dict[str, Any]) -> Ratings:
    return read_movielens(Path(options["root"]).expanduser(), on_duplicate=options.get("on_duplicate", "last"))


def _check_file(options: dict[str, Any]) -> None:
    path = options.get("path")
    if not path or path == "???" or not Path(path).expanduser().is_file():
        raise ConfigError("path", f"{path!r} is not a file")
    _check_bool(options, "header")
    _check_bool(options, "integer_ids")
    columns = options.get("columns")
    if columns is not None and not isinstance(columns, Mapping):
        raise ConfigError("columns", f"must map roles to column names, got {columns!r}")
    check_options(
        sep=options.get("sep"), columns=dict(columns or {}), scale=options.get("scale"),
        encoding=options.get("encoding", "utf-8"), on_duplicate=options.get("on_duplicate", "last"),
    )


def _read_file(name: str, options: dict[str, Any]) -> Ratings:
    options = dict(options)
    path = Path(options.pop("path")).expanduser()
    columns = options.pop("columns", None)
    return read_ratings(path, columns=dict(columns) if columns else None, **options)


def _check_release(options: dict[str, Any]) -> None:
    _check_bool(options, "download")
    _check_duplicate_rule(options)


def _read_release(name: str, options: dict[str, Any]) -> Ratings:
    folder = fetch(name, options.get("root"), download=options.get("download", True))
    return read_movielens(folder, on_duplicate=options.get("on_duplicate", "last"), name=name)


def _read_synthetic(name: str, options: dict[str, Any]) -> Ratings:
    return synthetic(**options).ratings


SOURCES: dict[str, DataSource] = {
    "movielens": DataSource(frozenset({"root", "on_duplicate"}), _check_folder, _read_folder),
    "csv": DataSource(
        frozenset({"path", "sep", "header", "columns", "integer_ids", "scale", "encoding", "on_duplicate"}),
        _check_file, _read_file,
    ),
    "synthetic": DataSource(
        frozenset({"n_users", "n_items", "n_ratings", "rank", "noise", "step", "seed"}),
        lambda options: check_synthetic(**options), _read_synthetic,
    ),
    **{
        release: DataSource(frozenset({"root", "download", "on_duplicate"}), _check_release, _read_release)
        for release in RELEASES
    },
}


# -- entry points ----------------------------------------------------------------------------
def check_data(section: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Fail fast, before any loading, when a ``data`` section cannot be read: (name, options)."""
    name, options = section_options(section, "data")
    source = SOURCES.get(name)
    if source is None:
        raise ConfigError("data.name", f"unknown data set {name!r}; known: {', '.join(SOURCES)}")
    check_keys("data", options, source.keys)
    try:
        source.check(options)
    except ConfigError as err:
        raise err.under("data") from None
    return name, options


def load_data(section: Mapping[str, Any]) -> Ratings:
    """Ratings for a ``data`` config section (see ``conf/data/``), checked first."""
    name, options = check_data(section)
    return SOURCES[name].read(name, options)


def load(
    source: str | os.PathLike,
    *,
    root: str | os.PathLike | None = None,
    download: bool = True,
    on_duplicate: OnDuplicate = "last",
) -> Ratings:
    """Ratings from a MovieLens-layout folder, a ratings file, or a known release name.

    ``source`` may be a folder laid out like any MovieLens release (layout detected from the
    files present), a single ratings file (CSV/TSV/parquet, see `read_ratings`), or one of
    ``ml-100k``, ``ml-1m``, ``ml-latest-small``, ``ml-20m``, ``ml-25m``: looked up under the data
    root (``root``, ``$CFREC_DATA``, or ``~/.cache/cfrec``) and downloaded, checksum-verified, when
    absent. Repeated (user, item) pairs are resolved by ``on_duplicate`` and counted in the log.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        name, options = "movielens", {"root": path}
    elif path.is_file():
        name, options = "csv", {"path": path}
    elif str(source) in RELEASES:
        name, options = str(source), {"root": root, "download": download}
    else:
        raise FileNotFoundError(f"{source}: neither a folder, a file, nor a known data set ({', '.join(RELEASES)})")
    options["on_duplicate"] = on_duplicate
    _check_duplicate_rule(options)
    return SOURCES[name].read(name, options)
