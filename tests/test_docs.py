"""The documented examples run: every ```python block of docs/learned_models.md, in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "learned_models.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_learned_models_examples_run() -> None:
    blocks = python_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 3
    namespace: dict = {"__name__": "docs_example"}
    for number, block in enumerate(blocks, 1):
        exec(compile(block, f"{DOC.name} block {number}", "exec"), namespace)
    # the examples' own asserts ran; spot-check what they built
    assert namespace["cf"].history[-1]["loss"] < namespace["cf"].history[0]["loss"] / 5
