"""Translation between a SearchSpace and Optuna distributions (the one boundary with Optuna).

Ordered knobs become categorical distributions over their values, so studies and the Optuna
dashboard show real group counts; samplers then do not know the order (NSGA-II/III and random do
not need it; TPE and GP treat the values as unordered categories).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution

from subnetsearch.spaces._space import Mode, ModeError, SearchSpace


def to_optuna(space: SearchSpace) -> dict[str, BaseDistribution]:
    distributions: dict[str, BaseDistribution] = {}
    for knob in space.knobs:
        if knob.kind == "float":
            distributions[knob.name] = FloatDistribution(float(knob.values[0]), float(knob.values[1]), log=knob.log)
        elif knob.kind in ("ordered", "categorical"):
            distributions[knob.name] = CategoricalDistribution(list(knob.values))
        else:
            raise ModeError(f"knob {knob.name!r} of kind {knob.kind!r} has no Optuna distribution")
    return distributions


def mode_from_params(space: SearchSpace, params: Mapping[str, Any]) -> Mode:
    """The mode an Optuna trial's parameters describe (validated against the space)."""
    return space.mode(dict(params))
