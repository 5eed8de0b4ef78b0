"""Knobs, search spaces and modes."""

from subnetsearch.spaces._space import Knob, Mode, ModeError, SearchSpace

__all__ = ["Knob", "Mode", "ModeError", "SearchSpace"]
