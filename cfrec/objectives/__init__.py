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

# Options added after models of an objective were first saved, with the value those models were
# trained with: a saved config without one predates it (`saved_objective`).
PREDATED_OPTIONS: dict[str, dict[str, Any]] = {"weighted": {"popularity_exponent": 0.0}}

__all__ = ["OBJECTIVES", "BPR", "Joint", "NotSupported", "Objective", "Squared", "WeightedMask", "make_objective",
           "saved_objective"]


def make_objective(spec: str | Mapping[str, Any] | Objective) -> Objective:
    """An objective from its name, or from a mapping with ``name`` and its options."""
    if isinstance(spec, Objective):
        return spec
    options = {"name": spec} if isinstance(spec, str) else dict(spec)
    name = options.pop("name", None)
    if name not in OBJECTIVES:
        raise ConfigError("objective.name", f"unknown objective {name!r}; known: {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name](**options)


def saved_objective(spec: Any) -> Any:
    """The objective config of a saved model, with the options it predates (`PREDATED_OPTIONS`) set
    to what it was trained with, so a model saved before an option existed loads as it was."""
    if not isinstance(spec, Mapping):
        return spec
    return {**PREDATED_OPTIONS.get(spec.get("name"), {}), **spec}
