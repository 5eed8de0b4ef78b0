"""Translation of a SearchSpace into a Ray Tune param space (the one boundary with Ray Tune).

Ordered and categorical knobs become `tune.choice` over their values and float knobs
`tune.uniform`; a Tune trial's config maps back to a Mode with `mode_from_params`, exactly as an
Optuna trial's params do. Ray is imported only when this is called.
"""

from __future__ import annotations

from typing import Any

from subnetsearch.spaces._space import ModeError, SearchSpace


def to_ray_tune(space: SearchSpace) -> dict[str, Any]:
    from ray import tune

    param_space: dict[str, Any] = {}
    for knob in space.knobs:
        if knob.kind == "float":
            low, high = float(knob.values[0]), float(knob.values[1])
            param_space[knob.name] = tune.loguniform(low, high) if knob.log else tune.uniform(low, high)
        elif knob.kind in ("ordered", "categorical"):
            param_space[knob.name] = tune.choice(list(knob.values))
        else:
            raise ModeError(f"knob {knob.name!r} of kind {knob.kind!r} has no Ray Tune domain")
    return param_space
