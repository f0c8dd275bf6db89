"""The API reference builds (``python docs/build_api.py OUT``; pdoc is in the test extra) and has
a page for each public module."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pdoc")

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "build_api.py"
PAGES = ["index.html", "cfrec.html", "cfrec/models/collaborative.html", "cfrec/data/split.html",
         "cfrec/evaluate.html", "cfrec/serving.html", "cfrec/index.html", "cfrec/train/trainer.html",
         "cfrec/apps/cv.html", "cfrec/apps/runs.html"]


def test_the_api_reference_builds_with_a_page_per_module(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "MPLBACKEND": "Agg"})
    assert result.returncode == 0, result.stderr[-2000:]
    for page in PAGES:
        assert (tmp_path / page).is_file(), page
    assert "per_user_split" in (tmp_path / "cfrec" / "data" / "split.html").read_text()
