"""Pareto utilities over named objectives, on moocore's maintained implementations
(`moocore.is_nondominated`: Kung-Luccio-Preparata dimension sweep; `moocore.hypervolume`).

Objective names are the product's: accuracy is maximized; latency (ms), macs and energy (mJ) are
minimized. `OBJECTIVES` is the one table of them (sense, storage column, label, unit) that the
search, the store and the dashboards read. Used by the search (hypervolume, merged fronts) and by
the store (front maintenance).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import moocore
import numpy as np

from subnetsearch.errors import InputError


@dataclass(frozen=True)
class Objective:
    name: str
    sense: Literal["maximize", "minimize"]
    column: str  # the stored evaluation's field (and the store's column)
    label: str  # for tables and axes
    unit: str = ""

    @property
    def title(self) -> str:
        return f"{self.label} ({self.unit})" if self.unit else self.label


OBJECTIVES: dict[str, Objective] = {o.name: o for o in (
    Objective("accuracy", "maximize", "accuracy", "accuracy"),
    Objective("latency", "minimize", "latency_ms", "latency", "ms"),
    Objective("macs", "minimize", "macs", "MACs"),
    Objective("energy", "minimize", "energy_mj", "energy", "mJ"),
)}
SENSES = {name: objective.sense for name, objective in OBJECTIVES.items()}
COSTS = tuple(name for name, objective in OBJECTIVES.items() if objective.sense == "minimize")


def _check(objectives: Sequence[str]) -> list[bool]:
    unknown = [name for name in objectives if name not in SENSES]
    if unknown or not objectives:
        raise InputError(f"unknown objective(s) {unknown or list(objectives)}; choose from {sorted(SENSES)}")
    return [SENSES[name] == "maximize" for name in objectives]


def nondominated(points: np.ndarray | Sequence[Sequence[float]], objectives: Sequence[str]) -> np.ndarray:
    """Boolean mask of the points no other point dominates. Points with identical objective values
    are all kept (two modes that tie are both Pareto-optimal)."""
    maximise = _check(objectives)
    array = np.asarray(points, dtype=float).reshape(-1, len(objectives))
    if len(array) == 0:
        return np.zeros(0, dtype=bool)
    if np.isnan(array).any():
        raise InputError("objective values contain NaN (missing latency on a device that does not run here?)")
    return moocore.is_nondominated(array, maximise=maximise, keep_weakly=True)


def hypervolume(points: np.ndarray | Sequence[Sequence[float]], objectives: Sequence[str],
                reference: Sequence[float]) -> float:
    """Hypervolume dominated by `points` with respect to a fixed reference point (worse than every
    point that should count: lower accuracy, higher costs). Points not better than the reference in
    every objective contribute nothing."""
    maximise = _check(objectives)
    if len(reference) != len(objectives):
        raise InputError(f"reference point has {len(reference)} values for {len(objectives)} objectives")
    array = np.asarray(points, dtype=float).reshape(-1, len(objectives))
    if len(array) == 0:
        return 0.0
    return float(moocore.hypervolume(array, ref=np.asarray(reference, dtype=float), maximise=maximise))


def front_indices(points: np.ndarray | Sequence[Sequence[float]], objectives: Sequence[str]) -> list[int]:
    """Indices of the non-dominated points, in input order."""
    return [int(i) for i in np.flatnonzero(nondominated(points, objectives))]
