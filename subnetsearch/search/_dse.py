"""The WeNet paper's greedy design space exploration (Algorithm 2).

Start from the full network; in each iteration, for every layer below its largest group count,
build the candidate with that layer's groups raised to the next allowed value (line 5); evaluate
accuracy and cost t of every candidate (lines 6-7); loss = t / acc (line 8); move to the argmin
(lines 10-11); stop once accuracy is no longer above the threshold delta (line 3). The candidates of
one iteration are independent and go to `evaluate_batch` together, which a distributed backend can
fan out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from subnetsearch.errors import InputError
from subnetsearch.pareto import COSTS
from subnetsearch.spaces import Mode, SearchSpace
from subnetsearch.storage import StoredEvaluation

BatchEvaluator = Callable[[Sequence[Mode]], list[StoredEvaluation]]


def cost_of(evaluation: StoredEvaluation, cost: str) -> float:
    """The t of Algorithm 2 for one evaluation."""
    if cost == "latency":
        if evaluation.latency_ms is None:
            raise InputError("latency cost needs measured latency: use a device on this host (or cost='macs')")
        return evaluation.latency_ms
    if cost == "macs":
        return float(evaluation.macs)
    if cost == "energy":
        return evaluation.energy_mj
    raise InputError(f"unknown cost {cost!r}; choose one of {COSTS}")


def paired_ratio(evaluation: StoredEvaluation) -> tuple[float, float, float] | None:
    """(ratio, low, high) of a paired latency (devices._paired), None for any other figure."""
    paired = (evaluation.latency or {}).get("paired")
    return None if not paired else (float(paired["ratio"]), float(paired["low"]), float(paired["high"]))


def _choose(scored: list[tuple[float, str, Mode, StoredEvaluation, float]], cost: str) -> tuple:
    """Line 10, the argmin of loss; with paired latency, candidates whose latency is equal to the
    argmin's within their intervals are ties (noise cannot order them), and of those the one with the
    lowest loss at equal cost, i.e. the highest accuracy, is taken. Paired candidates are compared by
    their ratio to the reference (one scale for all, whatever the reference's pooled median)."""
    ratios = [paired_ratio(item[3]) for item in scored] if cost == "latency" else []
    if not ratios or any(r is None for r in ratios):
        return min(scored, key=lambda item: (item[0], item[1]))  # ties: by layer name
    by_ratio = [(r[0] / max(item[3].accuracy, 1e-12), item[1], index)  # type: ignore[index]
                for index, (item, r) in enumerate(zip(scored, ratios, strict=True))]
    best = min(by_ratio)[2]
    low, high = ratios[best][1], ratios[best][2]  # type: ignore[index]
    ties = [i for i, r in enumerate(ratios) if r[1] <= high and low <= r[2]]  # type: ignore[index]
    return min((scored[i] for i in ties), key=lambda item: (-item[3].accuracy, item[0], item[1]))


def next_candidates(space: SearchSpace, mode: Mode) -> list[tuple[str, Mode]]:
    """Line 5: one candidate per layer not yet at its largest group count, that layer's groups
    raised to the next allowed value."""
    candidates = []
    for knob in space.knobs:
        values = knob.values
        index = values.index(mode.values[knob.name])
        if index + 1 < len(values):
            candidates.append((knob.name, mode.replace(**{knob.name: values[index + 1]})))
    return candidates


@dataclass(frozen=True)
class DSEStep:
    iteration: int
    mode: Mode
    changed_layer: str | None  # None for the starting full network
    accuracy: float
    cost: float
    loss: float
    candidates_evaluated: int


@dataclass(frozen=True)
class DSEResult:
    """The trajectory (the paper's Pareto frontier: the argmin of every iteration) and the chosen
    mode: the most efficient visited mode whose accuracy is still >= delta (None if even the full
    network is below it)."""

    trajectory: tuple[DSEStep, ...]
    chosen: DSEStep | None
    evaluations: int
    delta: float
    cost: str


def check_dse_inputs(delta: float, cost: str) -> None:
    if cost not in COSTS:
        raise InputError(f"unknown cost {cost!r}; choose one of {COSTS}")
    if not 0.0 <= delta <= 1.0:  # also refuses NaN
        raise InputError(f"accuracy threshold delta must be in [0, 1], got {delta}")


def greedy_dse(space: SearchSpace, full_mode: Mode, evaluate_batch: BatchEvaluator, delta: float,
               cost: str = "latency", max_iterations: int | None = None,
               on_step: Callable[[DSEStep], None] | None = None) -> DSEResult:
    check_dse_inputs(delta, cost)
    start = evaluate_batch([full_mode])[0]
    t = cost_of(start, cost)
    step = DSEStep(0, full_mode, None, start.accuracy, t, t / max(start.accuracy, 1e-12), 1)
    trajectory, evaluations = [step], 1
    if on_step:
        on_step(step)
    while step.accuracy > delta and (max_iterations is None or step.iteration < max_iterations):
        candidates = next_candidates(space, step.mode)
        if not candidates:
            break
        results = evaluate_batch([mode for _, mode in candidates])
        evaluations += len(results)
        scored = []
        for (layer, mode), result in zip(candidates, results, strict=True):
            t = cost_of(result, cost)
            scored.append((t / max(result.accuracy, 1e-12), layer, mode, result, t))
        loss, layer, mode, result, t = _choose(scored, cost)
        step = DSEStep(step.iteration + 1, mode, layer, result.accuracy, t, loss, len(results))
        trajectory.append(step)
        if on_step:
            on_step(step)
    eligible = [s for s in trajectory if s.accuracy >= delta]
    chosen = min(eligible, key=lambda s: s.cost) if eligible else None
    return DSEResult(tuple(trajectory), chosen, evaluations, delta, cost)
