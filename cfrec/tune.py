"""Hyper-parameters chosen on the user's own data: ``model.l2=auto``.

A numeric model option set to ``"auto"`` (``l2``, ``l2_bias``, or the preference head's
``objective.l2``) is chosen by the validation metric the model is trained on (its objective's
``monitor``, measured on the trainer's held-out slice of train — never on test):

1. fit at the option's default d and at d/3, 3d;
2. while the best of them lies at an edge, step once more past it (×3 or ÷3);
3. fit once more at the vertex of the parabola through the best point and its two neighbours
   (in log d), and keep the best fit of all.

At most ``max_fits`` fits (default 5) per option, each a normal training run, and the best
candidate's fitted model is the result (no refit): tuning costs at most five default fits. The
candidates and their validation metric are logged and returned.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Mapping

from cfrec.errors import ConfigError

log = logging.getLogger(__name__)

AUTO = "auto"
TUNABLE = ("l2", "l2_bias", "objective.l2")  # keys (dotted under model) that accept "auto"
STEP = 3.0  # the first bracket: d/3, d, 3d


def auto_keys(options: Mapping[str, Any]) -> list[str]:
    """The dotted keys of ``options`` (a model section) whose value is ``"auto"``."""
    found = []
    for key, value in options.items():
        if isinstance(value, Mapping):
            found += [f"{key}.{sub}" for sub in auto_keys(value)]
        elif value == AUTO:
            found.append(key)
    for key in found:
        if key not in TUNABLE:
            raise ConfigError(f"model.{key}", f"cannot be 'auto'; options chosen on validation: {', '.join(TUNABLE)}")
    return found


def with_value(options: Mapping[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of ``options`` with dotted ``key`` set to ``value``."""
    head, _, rest = key.partition(".")
    copy = dict(options)
    copy[head] = with_value(copy[head], rest, value) if rest else value
    return copy


def search(fit: Callable[[float], tuple[float, Any]], start: float, max_fits: int = 5) -> tuple[float, Any, list]:
    """Minimise ``fit(value)`` → (score, fitted) over positive values near ``start`` (lower is better).

    Returns (best value, its fitted object, [(value, score), ...] in the order tried).
    """
    if not start > 0:
        raise ValueError(f"the search starts from a positive default, got {start!r}")
    tried: dict[float, tuple[float, Any]] = {}

    def at(value: float) -> float:
        if value not in tried and len(tried) < max_fits:
            tried[value] = fit(value)
        return tried[value][0] if value in tried else math.inf

    for value in (start, start / STEP, start * STEP):
        at(value)
    while len(tried) < max_fits:
        best = min(tried, key=lambda v: tried[v][0])
        edge = best == min(tried) and best / STEP or best == max(tried) and best * STEP
        if not edge:
            break
        at(edge)
    best = min(tried, key=lambda v: tried[v][0])
    neighbours = sorted(tried)
    i = neighbours.index(best)
    if 0 < i < len(neighbours) - 1 and len(tried) < max_fits:
        vertex = _parabola_vertex(*(math.log(v) for v in neighbours[i - 1 : i + 2]),
                                  *(tried[v][0] for v in neighbours[i - 1 : i + 2]))
        if vertex is not None:
            at(math.exp(vertex))
    best = min(tried, key=lambda v: tried[v][0])
    return best, tried[best][1], [(v, s) for v, (s, _) in tried.items()]


def _parabola_vertex(x0: float, x1: float, x2: float, y0: float, y1: float, y2: float) -> float | None:
    """The minimum of the parabola through three points, clamped to [x0, x2]; None if it opens down."""
    denominator = (x0 - x1) * (x0 - x2) * (x1 - x2)
    a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denominator
    b = (x2 * x2 * (y0 - y1) + x1 * x1 * (y2 - y0) + x0 * x0 * (y1 - y2)) / denominator
    if a <= 0:
        return None
    return min(max(-b / (2 * a), x0), x2)
