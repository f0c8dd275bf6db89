"""Objectives of the factor models: what they are trained for (see `cfrec.objectives.base`).

| name | loss | ``predict`` | ``recommend`` ranks by | validated on |
| --- | --- | --- | --- | --- |
| ``squared`` | squared error on rated cells | ratings | ratings | RMSE |
| ``weighted`` | weighted mask over all cells | — | preference score | NDCG@10 |
| ``bpr`` | pairwise, sampled negatives | — | preference score | NDCG@10 |
| ``joint`` | squared (rating head) + weighted (preference head) | ratings | preference score | RMSE (+ Recall, NDCG) |

Adding one takes a module here (a subclass of `Objective`), a line in `OBJECTIVES` and a preset
``conf/model/<name>.yaml`` whose ``objective:`` section names it.
"""

from __future__ import annotations

from typing import Any, Mapping

from cfrec.errors import ConfigError
from cfrec.objectives.base import NotSupported, Objective
from cfrec.objectives.bpr import BPR
from cfrec.objectives.joint import Joint
from cfrec.objectives.squared import Squared
from cfrec.objectives.weighted import WeightedMask

OBJECTIVES: dict[str, type[Objective]] = {cls.name: cls for cls in (Squared, WeightedMask, BPR, Joint)}

__all__ = ["OBJECTIVES", "BPR", "Joint", "NotSupported", "Objective", "Squared", "WeightedMask", "make_objective"]


def make_objective(spec: str | Mapping[str, Any] | Objective) -> Objective:
    """An objective from its name, or from a mapping with ``name`` and its options."""
    if isinstance(spec, Objective):
        return spec
    options = {"name": spec} if isinstance(spec, str) else dict(spec)
    name = options.pop("name", None)
    if name not in OBJECTIVES:
        raise ConfigError("objective.name", f"unknown objective {name!r}; known: {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name](**options)
