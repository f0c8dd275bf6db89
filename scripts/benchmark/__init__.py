"""cfrec's benchmark suite, as a small package: `runner` (jobs, worker processes), `sections` (the
measurements), `peers` (other libraries' models and a reference EASE), `report` (markdown, JSON,
plots), `cli` (the command line). Only cfrec's public API is used: ``cfrec.data``,
``cfrec.models``, ``cfrec.evaluate``, ``cfrec.train`` (and ``cfrec.threads`` for the thread policy).

    python -m scripts.benchmark --section peers --data ../shared/data/ml-1m   # from the repository root
    python scripts/benchmark/run.py --section models --data synthetic
    python scripts/benchmark.py ...                                          # the old entry, same options
"""

from __future__ import annotations

import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1]
if str(SCRIPTS) not in sys.path:  # benchtools and notebook_reference live beside the package
    sys.path.insert(0, str(SCRIPTS))
