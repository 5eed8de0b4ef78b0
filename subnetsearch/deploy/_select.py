"""The budget rule, in one place: which mode meets a budget, and which of those is best. The store's
`best` query and a deployed model's `select` both call `choose`, so a device that carries its front
picks what the service would answer. Plain Python: importable where only a runtime is installed."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from subnetsearch.errors import InputError

# objective -> its sense; the names a budget, a manifest and the store share
OBJECTIVES = {"accuracy": "maximize", "latency": "minimize", "macs": "minimize", "energy": "minimize"}

Z = 1.96  # two-sided 95 %
BUDGET_RULE = ("a mode meets a latency or energy or MACs budget when the upper end of its interval is within it "
               "(paired latency: 95 % order-statistic interval; MACs and energy exact) and an accuracy floor when "
               f"the lower end of its 95 % binomial interval (z = {Z}) is above it")


@dataclass(frozen=True)
class Candidate:
    """A mode's objective values with their intervals (low == high where exact)."""

    mode_id: str
    values: Mapping[str, float]
    low: Mapping[str, float]
    high: Mapping[str, float]


def budget_limits(max_latency_ms: float | None = None, max_macs: float | None = None,
                  max_energy_mj: float | None = None, min_accuracy: float | None = None) -> list[tuple[str, str, float]]:
    """(objective, "max" | "min", limit) for every limit given; an InputError for a limit that
    cannot be one (not positive, an accuracy outside [0, 1], not a number)."""
    for name, value in (("max_latency_ms", max_latency_ms), ("max_macs", max_macs), ("max_energy_mj", max_energy_mj)):
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise InputError(f"{name} must be a positive number, got {value!r}")
    if min_accuracy is not None and not (isinstance(min_accuracy, (int, float)) and 0.0 <= min_accuracy <= 1.0):
        raise InputError(f"min_accuracy must be in [0, 1], got {min_accuracy!r}")
    pairs = [("latency", "max", max_latency_ms), ("macs", "max", max_macs),
             ("energy", "max", max_energy_mj), ("accuracy", "min", min_accuracy)]
    return [(name, kind, float(limit)) for name, kind, limit in pairs if limit is not None]


def meets(candidate: Candidate, limits: Sequence[tuple[str, str, float]]) -> bool:
    """Whether the candidate meets every limit by its interval's conservative end (`BUDGET_RULE`);
    an objective it has no figure for meets nothing."""
    for name, kind, limit in limits:
        if name not in candidate.values:
            return False
        if (kind == "max" and candidate.high[name] > limit) or (kind == "min" and candidate.low[name] < limit):
            return False
    return True


def choose(candidates: Sequence[Candidate], limits: Sequence[tuple[str, str, float]],
           objective: str = "accuracy") -> Candidate | None:
    """The candidate that meets `limits` and optimizes `objective` (ties: higher accuracy, then fewer
    MACs, then mode id); None when none meets them."""
    if objective not in OBJECTIVES:
        raise InputError(f"unknown objective {objective!r}; choose from {sorted(OBJECTIVES)}")

    def order(candidate: Candidate) -> tuple:
        value = float(candidate.values.get(objective, 0.0))
        return (-value if OBJECTIVES[objective] == "maximize" else value, -candidate.values.get("accuracy", 0.0),
                candidate.values.get("macs", 0.0), candidate.mode_id)

    feasible = sorted((c for c in candidates if meets(c, limits)), key=order)
    return feasible[0] if feasible else None
