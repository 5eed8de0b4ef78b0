"""Knobs, search spaces and modes, and their translation to Optuna distributions."""

from subnetsearch.spaces._optuna import mode_from_params, to_optuna
from subnetsearch.spaces._space import Knob, Mode, ModeError, SearchSpace

__all__ = ["Knob", "Mode", "ModeError", "SearchSpace", "mode_from_params", "to_optuna"]
