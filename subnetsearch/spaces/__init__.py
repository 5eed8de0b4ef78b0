"""Knobs, search spaces and modes, and their translations to Optuna distributions and Ray Tune
param spaces."""

from subnetsearch.spaces._optuna import mode_from_params, to_optuna
from subnetsearch.spaces._ray import to_ray_tune
from subnetsearch.spaces._space import Knob, Mode, ModeError, SearchSpace

__all__ = ["Knob", "Mode", "ModeError", "SearchSpace", "mode_from_params", "to_optuna", "to_ray_tune"]
