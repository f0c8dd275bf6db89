#!/usr/bin/env python
"""The old entry, kept: ``python scripts/benchmark.py ...`` runs the package `scripts/benchmark/`
(same options; ``python -m scripts.benchmark --help``)."""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from benchmark.cli import main  # the package scripts/benchmark/, which shadows this file on import

    main()
