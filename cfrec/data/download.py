"""Known MovieLens releases: where they live on disk, and fetching them from GroupLens.

The data root is ``$CFREC_DATA`` if set, else ``$XDG_CACHE_HOME/cfrec`` (``~/.cache/cfrec``).
Nothing is created until a download actually happens.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from cfrec.errors import DownloadError

log = logging.getLogger(__name__)

GROUPLENS = "https://files.grouplens.org/datasets/movielens"


@dataclass(frozen=True)
class Release:
    """A published archive: its URL, checksum (``md5:…`` or ``sha256:…``) and the folder inside."""

    name: str
    url: str
    checksum: str
    ratings_file: str


RELEASES: dict[str, Release] = {
    r.name: r
    for r in (
        Release("ml-100k", f"{GROUPLENS}/ml-100k.zip", "md5:0e33842e24a9c977be4e0107933c0723", "u.data"),
        Release("ml-1m", f"{GROUPLENS}/ml-1m.zip", "md5:c4d9eecfca2ab87c1945afe126590906", "ratings.dat"),
        Release(
            "ml-latest-small", f"{GROUPLENS}/ml-latest-small.zip",
            "sha256:696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436", "ratings.csv",
        ),
        Release("ml-20m", f"{GROUPLENS}/ml-20m.zip", "md5:cd245b17a1ae2cc31bb14903e1204af3", "ratings.csv"),
        Release("ml-25m", f"{GROUPLENS}/ml-25m.zip", "md5:6b51fb2759a8657d3bfcbfc42b592ada", "ratings.csv"),
    )
}


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Where named data sets are kept: ``root``, ``$CFREC_DATA`` or the user cache folder."""
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get("CFREC_DATA"):
        return Path(os.environ["CFREC_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "cfrec"


def fetch(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    download: bool = True,
    release: Release | None = None,
) -> Path:
    """Folder of the release ``name`` under the data root, downloading and verifying it if absent."""
    release = release or RELEASES.get(name)
    if release is None:
        raise KeyError(f"unknown data set {name!r}; known: {', '.join(RELEASES)}")
    folder = data_root(root) / release.name
    if (folder / release.ratings_file).is_file():
        return folder
    if not download:
        raise DownloadError(f"{release.name} is not in {folder} and downloading is off; {_manual(release, folder)}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{release.name}-") as tmp:
        archive = Path(tmp) / "archive.zip"
        _download(release, archive, folder)
        verify(archive, release.checksum)
        _extract(archive, Path(tmp) / "unpacked", release, folder)
    log.info("%s is ready in %s", release.name, folder)
    return folder


def verify(path: Path, checksum: str) -> None:
    """Raise `DownloadError` unless ``path`` has the ``algorithm:hexdigest`` checksum."""
    algorithm, _, expected = checksum.partition(":")
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected.lower():
        raise DownloadError(
            f"{path.name}: {algorithm} checksum {digest.hexdigest()} does not match the expected {expected}; "
            "the download is corrupt or the archive has changed, so it was not used"
        )


def _download(release: Release, target: Path, folder: Path) -> None:
    log.info("downloading %s from %s", release.name, release.url)
    try:
        with urllib.request.urlopen(release.url, timeout=60) as response, open(target, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=release.name, leave=False) as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    bar.update(len(block))
    except OSError as err:  # URLError, timeouts, refused connections are all OSErrors
        raise DownloadError(f"could not download {release.url} ({err}); {_manual(release, folder)}") from err


def _extract(archive: Path, staging: Path, release: Release, folder: Path) -> None:
    """Unzip into ``staging`` and move the folder holding the ratings file to ``folder`` atomically."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            for member in zipped.namelist():
                if member.startswith("/") or ".." in Path(member).parts:
                    raise DownloadError(f"{release.url}: unsafe path {member!r} in the archive")
            zipped.extractall(staging)
    except zipfile.BadZipFile as err:
        raise DownloadError(f"{release.url}: not a valid zip archive ({err})") from err
    found = sorted(staging.rglob(release.ratings_file))
    if not found:
        raise DownloadError(f"{release.url}: the archive holds no {release.ratings_file}")
    if folder.exists():
        shutil.rmtree(folder)  # an incomplete earlier copy without its ratings file
    os.replace(found[0].parent, folder)


def _manual(release: Release, folder: Path) -> str:
    return (
        f"download {release.url} yourself and unzip it so that {folder / release.ratings_file} exists "
        "(or point CFREC_DATA / data.root at a folder that holds it)"
    )
