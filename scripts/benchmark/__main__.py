"""``python -m scripts.benchmark ...`` (from the repository root) or ``python -m benchmark`` (from scripts/)."""

from .cli import main

main()
