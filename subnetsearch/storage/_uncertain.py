"""Figures with their uncertainty, and fronts and answers that never separate what noise cannot.

- Latency: a paired figure's interval (devices._paired: the median ratio's order-statistic interval
  times the reference's pooled median). A figure measured alone in its window (stores from before
  pairing) has no interval: it is shown as "unpaired" and compared by its value.
- Accuracy: the binomial standard error sqrt(p (1 - p) / n) over the n evaluated images. Two modes
  evaluated on the same images are compared by their paired difference (McNemar's view: only the
  images one gets right and the other wrong count), whose standard error is far smaller than either
  accuracy's: (n10 + n01 - (n10 - n01)^2 / n) ^ 1/2 / n.
- MACs and modelled energy are exact.

A mode is noise-dominated by another that is at least as good on every objective or equal to it
within noise (intervals overlap / the paired difference is within z standard errors); of modes that
are equal within noise on every objective, the one with the better point figures (accuracy first,
then the costs in order) stays. A noise-aware front keeps the modes no other mode noise-dominates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from subnetsearch.deploy import Z  # two-sided 95 %: the budget rule's, one value for store and device
from subnetsearch.errors import InputError
from subnetsearch.pareto import SENSES


def accuracy_interval(accuracy: float, samples: int | None, z: float = Z) -> tuple[float, float]:
    if not samples:
        return accuracy, accuracy
    error = math.sqrt(max(accuracy * (1 - accuracy), 0.0) / samples)
    return max(0.0, accuracy - z * error), min(1.0, accuracy + z * error)


def paired_accuracy_difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(accuracy of a minus that of b, its standard error), both evaluated on the same images."""
    if a.shape != b.shape:
        raise InputError(f"paired comparison needs the same images, got {a.size} and {b.size}")
    n = a.size
    a_only = int(np.count_nonzero(a & ~b))
    b_only = int(np.count_nonzero(b & ~a))
    difference = (a_only - b_only) / n
    variance = max(a_only + b_only - (a_only - b_only) ** 2 / n, 0.0) / n ** 2
    return difference, math.sqrt(variance)


@dataclass(frozen=True)
class Figures:
    """One mode's objective values with their intervals (low == high where exact or unknown)."""

    values: Mapping[str, float]
    low: Mapping[str, float]
    high: Mapping[str, float]
    correct: np.ndarray | None = None  # per-image correctness, for paired accuracy comparisons


def equal_within_noise(a: Figures, b: Figures, name: str, z: float = Z) -> bool:
    if a.values[name] == b.values[name]:
        return True
    if name == "accuracy" and a.correct is not None and b.correct is not None and a.correct.shape == b.correct.shape:
        difference, error = paired_accuracy_difference(a.correct, b.correct)
        return abs(difference) <= z * error
    return a.low[name] <= b.high[name] and b.low[name] <= a.high[name]


def _at_least_as_good(b: Figures, a: Figures, name: str) -> bool:
    return b.values[name] >= a.values[name] if SENSES[name] == "maximize" else b.values[name] <= a.values[name]


def noise_front(points: Sequence[Figures], objectives: Sequence[str], z: float = Z,
                equal: Callable[[Figures, Figures, str, float], bool] = equal_within_noise) -> list[bool]:
    """Mask of the points that no other point noise-dominates (see the module docstring)."""
    def covers(b: Figures, a: Figures) -> bool:
        return all(_at_least_as_good(b, a, name) or equal(a, b, name, z) for name in objectives)

    ordered = sorted(objectives, key=lambda n: n != "accuracy")
    ranks = [tuple(-p.values[n] if SENSES[n] == "maximize" else p.values[n] for n in ordered) for p in points]
    keep = []
    for i, a in enumerate(points):
        beaten = False
        for j, b in enumerate(points):
            if i == j or not covers(b, a):
                continue
            if not covers(a, b) or ranks[j] < ranks[i] or (ranks[j] == ranks[i] and j < i):
                beaten = True
                break
        keep.append(not beaten)
    if points and not any(keep):  # a cycle of noise-dominance (possible with 3+ objectives): keep the best-ranked
        keep[min(range(len(points)), key=lambda i: ranks[i])] = True
    return keep


def sign_confidence(samples: Sequence[float], limit: float) -> float:
    """How sure it is that the median of the population `samples` come from is at most `limit`: one
    minus the sign test's p-value for "median > limit" (P(Binomial(n, 1/2) >= m), m = samples <= limit)."""
    n = len(samples)
    if n == 0:
        return 0.0
    m = sum(1 for sample in samples if sample <= limit)
    tail = sum(math.comb(n, j) for j in range(m, n + 1)) / 2 ** n
    return 1.0 - tail


def surely_no_worse(b: Figures, a: Figures, name: str, z: float = Z) -> bool:
    """Whether `b` is at least as good as `a` on `name` beyond noise: b's pessimistic end is no
    worse than a's optimistic end (exact values: b's value no worse), or, for two accuracies on the
    same images, their paired difference is at least z standard errors in b's favour (or exactly 0
    because they classify every image alike)."""
    maximize = SENSES[name] == "maximize"
    if name == "accuracy" and a.correct is not None and b.correct is not None and a.correct.shape == b.correct.shape:
        difference, error = paired_accuracy_difference(b.correct, a.correct)
        return difference >= z * error if error > 0 else difference >= 0
    return b.low[name] >= a.high[name] if maximize else b.high[name] <= a.low[name]


def could_join(candidate: Figures, others: Sequence[Figures], objectives: Sequence[str], z: float = Z) -> bool:
    """The promotion rule of a multi-fidelity search, on cheap figures: a candidate could join the
    front unless some other point is at least as good on every objective beyond noise (`surely_no_worse`)
    and better on one (its figures not all equal to the candidate's). Multi-objective, where Optuna's
    pruners and Ray Tune's schedulers rank one objective."""
    for other in others:
        if all(other.values[name] == candidate.values[name] for name in objectives):
            continue
        if all(surely_no_worse(other, candidate, name, z) for name in objectives):
            return False
    return True
