"""Load each crafted HNSW index of a folder in a forked child; print one JSON line per case.

    python hnsw_crash_driver.py FOLDER MODE     # MODE: cfrec (HNSWIndex.load) or raw (hnswlib alone)

FOLDER holds ``vectors.npy``, ``expected.npy`` (the labels of the first 20 rows' 5 nearest
neighbours, each row excluding itself) and one sub-folder per case with ``items.hnsw`` and
``items.hnsw.json``. A child exits 0 when the load answers ``expected``, 3 on `CheckpointError`,
4 on another exception, 5 on a wrong answer; a crash shows as the signal that killed it.
A fork per case keeps one import of torch and hnswlib for all cases.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from cfrec.errors import CheckpointError
from cfrec.index import HNSWIndex


def attempt(case: Path, vectors: np.ndarray, expected: np.ndarray, mode: str) -> int:
    try:
        if mode == "raw":
            import hnswlib

            meta = json.loads((case / "items.hnsw.json").read_text())
            index = hnswlib.Index(space="cosine", dim=int(meta["dim"]))
            index.load_index(str(case / "items.hnsw"), max_elements=int(meta["count"]))
            index.set_ef(100)
            labels, _ = index.knn_query(vectors[:20, : int(meta["dim"])], k=6)
            got = np.array([[x for x in row if x != i][:5] for i, row in enumerate(labels)])
        else:
            loaded = HNSWIndex.load(case / "items.hnsw", vectors=vectors)
            got = loaded.query(vectors[:20], 5, exclude=np.arange(20))[0].numpy()
    except CheckpointError:
        return 3
    except Exception:  # noqa: BLE001 - any Python exception is "no crash"; the test tells them apart
        return 4
    return 0 if np.array_equal(got, expected) else 5


def main(folder: Path, mode: str) -> None:
    vectors, expected = np.load(folder / "vectors.npy"), np.load(folder / "expected.npy")
    for case in sorted(p for p in folder.iterdir() if p.is_dir()):
        pid = os.fork()
        if pid == 0:
            os._exit(attempt(case, vectors, expected, mode))
        _, status = os.waitpid(pid, 0)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        print(json.dumps({"case": case.name, "code": code}), flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
