"""The argument checks of every configurable class and config section: each raises a
`ConfigError` naming the argument (``rank``); a caller that knows the section adds it with
`ConfigError.under` (``model.rank``). Library code uses these rather than its own `if`s, so every
bad value reads the same way."""

from __future__ import annotations

import math
from typing import Any, Collection, Mapping

import numpy as np

from cfrec.errors import ConfigError


def _real(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))


def check_int(key: str, value: Any, low: int) -> int:
    """``value`` must be an integer (not a bool) >= ``low``; returns it as an int."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ConfigError(key, f"must be an integer >= {low}, got {value!r}")
    return int(value)


def check_number(key: str, value: Any, low: float = -math.inf, high: float = math.inf, *,
                 open_low: bool = False, open_high: bool = False) -> float:
    """``value`` must be a real number (not a bool, not NaN) in the interval from ``low`` to
    ``high`` (``open_low`` / ``open_high``: excluding that end); returns it as a float."""
    inside = _real(value) and (value > low if open_low else value >= low) and (value < high if open_high else value <= high)
    if not inside:
        raise ConfigError(key, f"must be a number {_interval(low, high, open_low, open_high)}, got {value!r}")
    return float(value)


def _interval(low: float, high: float, open_low: bool, open_high: bool) -> str:
    if high == math.inf:
        return f"{'>' if open_low else '>='} {low:g}" if low > -math.inf else "(not NaN)"
    if low == -math.inf:
        return f"{'<' if open_high else '<='} {high:g}"
    return f"in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"


def check_choice(key: str, value: Any, choices: Collection[Any]) -> Any:
    """``value`` must be one of ``choices``."""
    if value not in choices:
        raise ConfigError(key, f"must be one of {', '.join(map(str, choices))}; got {value!r}")
    return value


def check_bool(key: str, value: Any) -> bool:
    """``value`` must be true or false (not 0/1, not a string)."""
    if not isinstance(value, bool):
        raise ConfigError(key, f"must be true or false, got {value!r}")
    return value


def check_keys(key: str, options: Mapping[str, Any], allowed: Collection[str]) -> None:
    """Every key of ``options`` must be in ``allowed``: the first other one is named
    ``key.option`` (``option`` alone when ``key`` is empty)."""
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}" if key else unknown[0],
                          f"unknown option; options: {', '.join(sorted(allowed))}")
