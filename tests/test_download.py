"""Named data sets: fetched from a URL, checksum-verified, unpacked atomically, then read."""

from __future__ import annotations

import hashlib
import zipfile

import pytest

from cfrec.data import fetch, load
from cfrec.data.download import Release, data_root
from cfrec.errors import DownloadError


@pytest.fixture
def archive(tmp_path):
    """A zip laid out like GroupLens' ml-100k.zip, served from a file:// URL."""
    path = tmp_path / "served" / "ml-tiny.zip"
    path.parent.mkdir()
    with zipfile.ZipFile(path, "w") as zipped:
        zipped.writestr("ml-tiny/u.data", "1\t10\t4\t100\n2\t10\t3\t101\n2\t20\t5\t102\n")
        zipped.writestr("ml-tiny/README", "tiny")
    return path


def release_for(archive, checksum=None) -> Release:
    digest = checksum or "sha256:" + hashlib.sha256(archive.read_bytes()).hexdigest()
    return Release("ml-tiny", archive.as_uri(), digest, "u.data")


def test_download_verify_unpack_and_reuse(archive, tmp_path):
    root = tmp_path / "cache"
    folder = fetch("ml-tiny", root, release=release_for(archive))
    assert folder == root / "ml-tiny" and (folder / "README").read_text() == "tiny"
    assert len(load(folder)) == 3
    archive.unlink()  # a second fetch must not need the network
    assert fetch("ml-tiny", root, release=release_for(tmp_path / "cache" / "ml-tiny" / "u.data")) == folder


def test_checksum_mismatch_is_refused_and_leaves_nothing(archive, tmp_path):
    root = tmp_path / "cache"
    with pytest.raises(DownloadError, match="does not match"):
        fetch("ml-tiny", root, release=release_for(archive, "md5:" + "0" * 32))
    assert not (root / "ml-tiny").exists() and list(root.iterdir()) == []


def test_unreachable_url_says_where_to_put_the_files(tmp_path):
    release = Release("ml-tiny", (tmp_path / "absent.zip").as_uri(), "md5:" + "0" * 32, "u.data")
    with pytest.raises(DownloadError, match="unzip it so that .*ml-tiny/u.data exists"):
        fetch("ml-tiny", tmp_path, release=release)


def test_download_off_and_unknown_names(tmp_path):
    with pytest.raises(DownloadError, match="downloading is off"):
        fetch("ml-1m", tmp_path, download=False)
    with pytest.raises(FileNotFoundError, match="known data set"):
        load("ml-nonexistent")


def test_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("CFREC_DATA", str(tmp_path / "env"))
    assert data_root() == tmp_path / "env"
    assert data_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("CFREC_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_root() == tmp_path / "xdg" / "cfrec"


def test_named_release_found_under_the_root(tmp_path, monkeypatch):
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    (folder / "u.data").write_text("1\t1\t5\t0\n")
    monkeypatch.setenv("CFREC_DATA", str(tmp_path))
    ratings = load("ml-100k", download=False)
    assert ratings.name == "ml-100k" and len(ratings) == 1
