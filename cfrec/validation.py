"""Argument checks shared by configurable classes; each raises `ConfigError` naming the argument."""

from __future__ import annotations

from typing import Any

import numpy as np

from cfrec.errors import ConfigError


def check_int(key: str, value: Any, low: int) -> None:
    """``value`` must be an integer (not a bool) >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ConfigError(key, f"must be an integer >= {low}, got {value!r}")


def check_number(key: str, value: Any, low: float) -> None:
    """``value`` must be a real number (not a bool) >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not value >= low:
        raise ConfigError(key, f"must be a number >= {low}, got {value!r}")


def check_choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    """``value`` must be one of ``choices``."""
    if value not in choices:
        raise ConfigError(key, f"must be one of {choices}, got {value!r}")
