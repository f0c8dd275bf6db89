#!/usr/bin/env python
"""``python scripts/benchmark/run.py ...``: the benchmark's command line (see `benchmark.cli`).

Also the entry of the worker processes that run one job each (``--worker JOB``).
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmark.cli import main

    main()
