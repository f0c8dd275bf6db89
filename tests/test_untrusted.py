"""Files from someone else's run folder are untrusted: crafted HNSW indexes and checkpoints
give a clean error (or a correct rebuilt answer), never a crash or a silent garbage answer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cfrec.errors import CheckpointError
from cfrec.index import HNSWIndex, exact_search
from cfrec.io import sha256

DRIVER = Path(__file__).with_name("hnsw_crash_driver.py")


def write_case(folder: Path, data: bytes, meta: dict) -> None:
    """A crafted index: ``data`` as items.hnsw, ``meta`` with the checksum of ``data`` recomputed."""
    folder.mkdir(parents=True)
    (folder / "items.hnsw").write_bytes(data)
    (folder / "items.hnsw.json").write_text(json.dumps({**meta, "sha256": sha256(folder / "items.hnsw")}))


@pytest.fixture(scope="module")
def crafted(tmp_path_factory) -> tuple[Path, bytes, dict]:
    """150 byte-flipped copies of a saved index, each with a matching checksum, plus meta edits."""
    root = tmp_path_factory.mktemp("crafted")
    vectors = np.random.default_rng(0).normal(size=(200, 16)).astype(np.float32)
    path = HNSWIndex().build(vectors).save(root / "orig" / "items.hnsw")
    expected = exact_search(vectors, vectors[:20], 5, exclude=np.arange(20))[0].numpy()
    np.save(root / "vectors.npy", vectors)
    np.save(root / "expected.npy", expected)
    data, meta = path.read_bytes(), json.loads((root / "orig" / "items.hnsw.json").read_text())
    rng = np.random.default_rng(1)
    level0_end = 96 + 200 * (4 + 8 * 32 + 4 * 16 + 8)
    positions = np.concatenate([rng.integers(0, 96, 50), rng.integers(96, level0_end, 60),
                                rng.integers(level0_end, len(data), 40)])
    for n, pos in enumerate(positions):
        flipped = bytearray(data)
        flipped[pos] ^= int(rng.integers(1, 256))
        write_case(root / f"flip{n:03d}", bytes(flipped), meta)
    edits = {"dim3": {"dim": 3}, "dim32": {"dim": 32}, "count": {"count": 150}, "count_more": {"count": 400},
             "space": {"params": {**meta["params"], "space": "l2"}}, "M": {"params": {**meta["params"], "M": 8}},
             "params": {"params": {"bogus": 1}}, "dim_text": {"dim": "16"}, "nested": {"params": [[[]]]}}
    for name, edit in edits.items():
        write_case(root / f"meta_{name}", data, {**meta, **edit})
    write_case(root / "truncated", data[: len(data) // 2], meta)
    write_case(root / "appended", data + b"\0" * 8, meta)
    return root, data, meta


def run_driver(folder: Path, mode: str) -> dict[str, int]:
    out = subprocess.run([sys.executable, str(DRIVER), str(folder), mode], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return {row["case"]: row["code"] for row in map(json.loads, out.stdout.splitlines())}


def test_crafted_index_files_are_clean_errors_never_crashes(crafted):
    root, _, _ = crafted
    codes = run_driver(root, "cfrec")
    assert len(codes) == 150 + 9 + 2 + 1
    crashed = {case: code for case, code in codes.items() if code < 0}
    assert not crashed, f"killed by a signal: {crashed}"
    assert codes["orig"] == 0
    assert all(code == 3 for case, code in codes.items() if case.startswith(("meta_", "truncated", "appended"))), codes
    wrong = {case: code for case, code in codes.items() if code not in (0, 3)}
    assert not wrong, f"neither a correct answer nor a CheckpointError: {wrong}"  # 5 would be a garbage answer
    assert sum(code == 3 for code in codes.values()) >= 80  # most flips are caught; the rest hit unused link slots (hnswlib alone: 20 segfaults)


def test_wrong_dimension_in_the_json_is_refused(crafted, tmp_path):
    root, data, meta = crafted
    write_case(tmp_path / "c", data, {**meta, "dim": 3})
    with pytest.raises(CheckpointError, match="header field"):
        HNSWIndex.load(tmp_path / "c" / "items.hnsw")
    vectors = np.load(root / "vectors.npy")
    with pytest.raises(CheckpointError, match="200 x 3 vectors, the model has 200 x 16"):
        HNSWIndex.load(tmp_path / "c" / "items.hnsw", vectors=vectors)


def test_an_index_of_other_vectors_is_refused(crafted):
    root, _, _ = crafted
    vectors = np.load(root / "vectors.npy")
    assert len(HNSWIndex.load(root / "orig" / "items.hnsw", vectors=vectors)) == 200
    with pytest.raises(CheckpointError, match="differ from the model's"):
        HNSWIndex.load(root / "orig" / "items.hnsw", vectors=vectors[::-1].copy())
