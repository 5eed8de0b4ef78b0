"""Predictor-guided multi-objective search (strategy `predictor`): spend real evaluations on modes a
cheap model predicts to be on the front.

A real evaluation costs seconds (BN calibration, validation, latency); a prediction microseconds.
So, as Once-for-All (accuracy predictor + evolution), DyNAS-T/LINAS (predictor-driven NSGA-II
alternating with real evaluations of its predicted front) and HAT (a latency predictor in the loop)
do: fit a model of accuracy on the evaluations so far; take the costs exactly where the project
can compute them (MACs and modelled energy of a static mode, latency from the device's lookup table
when the search predicts latency from it) and learn the rest like accuracy; run Optuna's NSGA-II on
the predicted objectives (an in-memory study, warm-started from the real front); evaluate for real a
batch of the predicted front, chosen greedily by how much each mode's predicted point would add to
the real front's hypervolume; refit; repeat until the budget.

The model is ridge regression on indicator features of the knob choices: one per (layer, value),
i.e. per-layer additive effects, and, if leave-one-out error says it pays, one per value pair of
neighbouring layers as well. Its regularization is chosen by exact leave-one-out error (a closed
form for ridge). Each round's batch is predicted before it is evaluated, so its predictions against
the real values are a held-out test: their Kendall tau is recorded per round.

Everything here is a pure function of the evaluations of earlier rounds and the seed: a resumed
search plans the same next batch as an uninterrupted one would.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import optuna

from subnetsearch.errors import InputError
from subnetsearch.pareto import SENSES, hypervolume, nondominated
from subnetsearch.search._optuna import quiet_optuna
from subnetsearch.spaces import Knob, Mode, SearchSpace, mode_from_params, to_optuna
from subnetsearch.storage import distinct_trials

INITS = ("random", "dse")  # the initial design: random modes (+ full and smallest), or Algorithm 2's first steps
ALPHAS = tuple(10.0 ** k for k in np.arange(-3.0, 3.5, 0.5))
Exact = Callable[[Mode], float]


@dataclass(frozen=True)
class PredictorSettings:
    """How a predictor search spends its budget of real evaluations (`budget`, distinct modes in all)."""

    budget: int = 100
    init: str = "random"
    init_size: int = 20
    batch: int = 10
    population: int = 40
    generations: int = 25
    seed: int = 0

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise InputError(f"init must be one of {INITS}, got {self.init!r}")
        for name in ("budget", "init_size", "batch", "generations"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.population < 4:
            raise InputError(f"population must be >= 4, got {self.population}")
        if self.init_size > self.budget:
            raise InputError(f"init_size ({self.init_size}) must not exceed the budget ({self.budget})")


# ---- features and the model ---------------------------------------------------------------------------

def _finite(knob: Knob) -> bool:
    return knob.kind != "float"


class Features:
    """A mode as a row of numbers: one indicator per (finite knob, value); a float knob as its value
    scaled to [0, 1] (log-scaled if the knob is) and its square; with `pairs`, one indicator per value
    pair of neighbouring finite knobs (knobs are in network order); per `costs` (exact costs of a
    mode, e.g. its MACs), the log of the cost and its square: accuracy falls smoothly with the log of
    the work left, which a few evaluations cannot teach per layer."""

    def __init__(self, space: SearchSpace, pairs: bool = False, costs: Sequence[Exact] = ()) -> None:
        self.space, self.pairs, self.costs = space, pairs, tuple(costs)
        self.knobs = space.knobs
        self.width = 0
        self._offsets: list[int] = []
        for knob in self.knobs:
            self._offsets.append(self.width)
            self.width += len(knob.values) if _finite(knob) else 2
        self._pairs: list[tuple[int, int, int, int]] = []  # (offset, first knob, second knob, values of the second)
        if pairs:
            finite = [i for i, knob in enumerate(self.knobs) if _finite(knob)]
            for a, b in zip(finite, finite[1:], strict=False):
                self._pairs.append((self.width, a, b, len(self.knobs[b].values)))
                self.width += len(self.knobs[a].values) * len(self.knobs[b].values)
        self._cost_offset = self.width
        self.width += 2 * len(self.costs)
        self._index = [{v: i for i, v in enumerate(knob.values)} if _finite(knob) else {} for knob in self.knobs]

    def _scaled(self, knob: Knob, value: float) -> float:
        low, high = (math.log(v) for v in knob.values) if knob.log else knob.values
        return ((math.log(value) if knob.log else value) - low) / (high - low)

    def matrix(self, modes: Sequence[Mode]) -> np.ndarray:
        rows = np.zeros((len(modes), self.width))
        for r, mode in enumerate(modes):
            indices = []
            for k, knob in enumerate(self.knobs):
                value = mode.values[knob.name]
                if _finite(knob):
                    indices.append(self._index[k][value])
                    rows[r, self._offsets[k] + indices[-1]] = 1.0
                else:
                    indices.append(-1)
                    x = self._scaled(knob, float(value))
                    rows[r, self._offsets[k]], rows[r, self._offsets[k] + 1] = x, x * x
            for offset, a, b, width in self._pairs:
                rows[r, offset + indices[a] * width + indices[b]] = 1.0
            for c, cost in enumerate(self.costs):
                x = math.log(max(float(cost(mode)), 1e-30))
                rows[r, self._cost_offset + 2 * c], rows[r, self._cost_offset + 2 * c + 1] = x, x * x
        return rows


@dataclass(frozen=True)
class Ridge:
    """A fitted ridge model: y ~ intercept + x @ coef on centred features."""

    features: Features
    alpha: float
    coef: np.ndarray
    intercept: float
    mean: np.ndarray
    loo_rmse: float

    def predict(self, modes: Sequence[Mode]) -> np.ndarray:
        return self.intercept + (self.features.matrix(modes) - self.mean) @ self.coef


def fit_ridge(features: Features, modes: Sequence[Mode], y: Sequence[float], alphas: Sequence[float] = ALPHAS) -> Ridge:
    """Ridge regression with its penalty chosen by exact leave-one-out error: with the centred
    design's SVD U S V', ridge's hat matrix is U diag(s^2 / (s^2 + alpha)) U' (+ 1/n for the
    intercept), and a point's leave-one-out residual is its residual / (1 - its leverage)."""
    x = features.matrix(modes)
    target = np.asarray(y, dtype=float)
    if len(target) != len(x) or len(target) < 2:
        raise InputError(f"a fit needs at least 2 evaluations with values, got {len(target)}")
    mean, offset = x.mean(axis=0), float(target.mean())
    u, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    uty = u.T @ (target - offset)
    best: tuple[float, float] | None = None
    for alpha in alphas:
        shrink = s**2 / (s**2 + alpha)
        fitted = u @ (shrink * uty)
        leverage = np.minimum((u**2) @ shrink + 1.0 / len(target), 1.0 - 1e-9)
        rmse = float(np.sqrt(np.mean(((target - offset - fitted) / (1.0 - leverage)) ** 2)))
        if best is None or rmse < best[1] - 1e-15:
            best = (alpha, rmse)
    assert best is not None
    alpha, rmse = best
    coef = vt.T @ (s / (s**2 + alpha) * uty)
    return Ridge(features, alpha, coef, offset, mean, rmse)


def fit_model(space: SearchSpace, modes: Sequence[Mode], y: Sequence[float], costs: Sequence[Exact] = ()) -> Ridge:
    """Of the additive model and additive + neighbour pairs, each with and without the log-cost
    features of `costs`, the one with the lowest leave-one-out error."""
    candidates = [Features(space)]
    if len([k for k in space.knobs if _finite(k)]) >= 2:
        candidates.append(Features(space, pairs=True))
    if costs:
        candidates += [Features(space, f.pairs, costs) for f in list(candidates)]
    fits = [fit_ridge(features, modes, y) for features in candidates]
    return min(fits, key=lambda fit: fit.loo_rmse)


def describe(features: Features) -> str:
    return "+".join(["additive", *(["pairs"] if features.pairs else []), *(["log-costs"] if features.costs else [])])


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Kendall's tau-b of two paired samples (None with fewer than 2 pairs or no variation)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) < 2:
        return None
    i, j = np.triu_indices(len(x), 1)
    dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    denominator = math.sqrt(float(np.count_nonzero(dx)) * float(np.count_nonzero(dy)))
    return None if denominator == 0 else float(np.sum(dx * dy) / denominator)


# ---- one round --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Limits:
    """Feasibility on predicted objectives (a mode predicted over a limit is never proposed)."""

    min_accuracy: float | None = None
    max_latency_ms: float | None = None

    def violations(self, values: Mapping[str, float]) -> dict[str, float]:
        out = {}
        if self.min_accuracy is not None:
            out["min_accuracy"] = self.min_accuracy - values["accuracy"]
        if self.max_latency_ms is not None:
            out["max_latency_ms"] = values["latency"] - self.max_latency_ms
        return out


def _violates(limits: Limits, values: Mapping[str, float]) -> bool:
    return any(value > 0 for value in limits.violations(values).values())


@dataclass
class Plan:
    """A round's batch, each mode with its predicted objective values, and how the round went."""

    modes: list[Mode]
    predicted: list[dict[str, float]]
    info: dict = field(default_factory=dict)


def initial_design(space: SearchSpace, size: int, seed: int) -> list[Mode]:
    """The full and the smallest mode (the front's two ends) and random distinct modes, `size` in
    all (fewer if the space holds fewer)."""
    knobs = space.knobs
    modes: dict[str, Mode] = {}
    if all(_finite(k) for k in knobs):
        for pick in (0, -1):
            mode = space.mode({k.name: k.values[pick] for k in knobs})
            modes.setdefault(mode.id, mode)
    generator = np.random.default_rng(seed)
    attempts = 0
    while len(modes) < min(size, space.size) and attempts < 100 * size:
        attempts += 1
        values = {}
        for knob in knobs:
            if _finite(knob):
                values[knob.name] = knob.values[int(generator.integers(len(knob.values)))]
            else:
                low, high = knob.values
                values[knob.name] = (float(math.exp(generator.uniform(math.log(low), math.log(high)))) if knob.log
                                     else float(generator.uniform(low, high)))
        mode = space.mode(values)
        modes.setdefault(mode.id, mode)
    return list(modes.values())[:size]


def plan_round(space: SearchSpace, objectives: Sequence[str], history: Sequence[tuple[Mode, Mapping[str, float]]],
               exact: Mapping[str, Exact], settings: PredictorSettings, round_number: int, size: int,
               limits: Limits = Limits(), hints: Mapping[str, Exact] | None = None) -> Plan:
    """The next `size` modes to evaluate for real, from the evaluations so far (`history`: mode and
    its real objective values). `hints`: exact quantities that are not objectives but inform the
    learned ones (a mode's MACs when only accuracy and measured latency are searched, a lookup
    table's latency estimate). Pure: the same history, seed and round give the same plan."""
    started = time.perf_counter()
    exact = {name: _memoized(cost) for name, cost in exact.items()}  # each mode's exact costs computed once
    hinted = {name: _memoized(cost) for name, cost in (hints or {}).items() if name not in exact}
    known = {mode.id for mode, _ in history}
    modes = [mode for mode, _ in history]
    # exact costs and hints are features of the learned objectives
    costs = [exact[name] for name in sorted(exact)] + [hinted[name] for name in sorted(hinted)]
    models = {name: fit_model(space, modes, [values[name] for _, values in history], costs)
              for name in objectives if name not in exact}
    fitted = time.perf_counter()

    def predict(mode: Mode) -> dict[str, float]:
        return {name: float(exact[name](mode)) if name in exact else float(models[name].predict([mode])[0])
                for name in objectives}

    feasible = [(mode, values) for mode, values in history if not _violates(limits, values)]
    front = nondominated([[values[o] for o in objectives] for _, values in feasible], objectives)
    warm = [mode for (mode, _), keep in zip(feasible, front, strict=True) if keep]  # NSGA-II starts from the real front
    predicted: dict[str, tuple[Mode, dict[str, float]]] = {}
    sampler = optuna.samplers.NSGAIISampler(population_size=settings.population, seed=settings.seed * 1000 + round_number)
    distributions = to_optuna(space)
    with quiet_optuna():
        study = optuna.create_study(directions=[SENSES[o] for o in objectives], sampler=sampler)
        for mode in warm[:settings.population]:
            study.enqueue_trial(dict(mode.values), skip_if_exists=True)
        for _ in range(settings.population * settings.generations):
            trial = study.ask(distributions)
            mode = mode_from_params(space, trial.params)
            values = predicted[mode.id][1] if mode.id in predicted else predict(mode)
            predicted.setdefault(mode.id, (mode, values))
            for key, value in limits.violations(values).items():
                trial.set_constraint(key, value)
            study.tell(trial, [values[o] for o in objectives])
    evolved = time.perf_counter()
    candidates = [(mode, values) for mode_id, (mode, values) in predicted.items() if mode_id not in known
                  and not _violates(limits, values)]
    chosen = select_batch(objectives, [values for _, values in history], candidates, size)
    plan = Plan([candidates[i][0] for i in chosen], [candidates[i][1] for i in chosen])
    plan.info = {"round": round_number, "trained_on": len(history),
                 "models": {name: {"features": describe(model.features),
                                   "alpha": model.alpha, "loo_rmse": model.loo_rmse} for name, model in models.items()},
                 "predicted_modes": len(predicted), "candidates": len(candidates),
                 "fit_s": round(fitted - started, 4), "evolve_s": round(evolved - fitted, 4),
                 "select_s": round(time.perf_counter() - evolved, 4)}
    return plan


def _memoized(cost: Exact) -> Exact:
    values: dict[str, float] = {}

    def cached(mode: Mode) -> float:
        if mode.id not in values:
            values[mode.id] = float(cost(mode))
        return values[mode.id]

    return cached


def select_batch(objectives: Sequence[str], real: Sequence[Mapping[str, float]],
                 candidates: Sequence[tuple[Mode, Mapping[str, float]]], size: int) -> list[int]:
    """Indices of up to `size` candidates: greedily the one whose predicted point adds most to the
    hypervolume of the real points and those already chosen; once none adds anything, the rest
    spread evenly along the candidates' predicted front (then its next layers) by the first cost."""
    if not candidates or size < 1:
        return []
    points = np.asarray([[values[o] for o in objectives] for _, values in candidates])
    base = np.asarray([[values[o] for o in objectives] for values in real]).reshape(-1, len(objectives))
    together = np.vstack([points, base])
    spans = np.maximum(together.max(axis=0) - together.min(axis=0), 1e-12)
    reference = [float(together[:, k].min() - 0.01 * spans[k]) if SENSES[o] == "maximize" else
                 float(together[:, k].max() + 0.01 * spans[k]) for k, o in enumerate(objectives)]
    pool = [int(i) for i in np.flatnonzero(nondominated(points, objectives))]
    chosen: list[int] = []
    current = base
    level = hypervolume(current, objectives, reference)
    while len(chosen) < size and pool:
        gains = [hypervolume(np.vstack([current, points[i]]), objectives, reference) - level for i in pool]
        best = int(np.argmax(gains))
        if gains[best] <= 1e-12 * abs(level or 1.0):
            break
        chosen.append(pool.pop(best))
        current = np.vstack([current, points[chosen[-1]]])
        level += gains[best]
    remaining = [i for i in range(len(candidates)) if i not in chosen]
    cost = next((k for k, o in enumerate(objectives) if SENSES[o] == "minimize"), 0)
    while len(chosen) < size and remaining:
        layer_mask = nondominated(points[remaining], objectives)
        layer = sorted((remaining[i] for i in np.flatnonzero(layer_mask)), key=lambda i: (points[i, cost], i))
        want = size - len(chosen)
        if len(layer) > want:
            layer = [layer[round(k * (len(layer) - 1) / max(want - 1, 1))] for k in range(want)]
        chosen.extend(dict.fromkeys(layer))
        remaining = [i for i in remaining if i not in chosen]
    return chosen[:size]


History = Sequence[tuple[int, Mode, Mapping[str, float]]]  # (round, mode, real objective values), in order
RunRound = Callable[[Sequence[Mode], int, Sequence[dict[str, float]], dict], None]


def predictor_rounds_loop(space: SearchSpace, objectives: Sequence[str], settings: PredictorSettings,
                          exact: Mapping[str, Exact], limits: Limits, history: Callable[[], History],
                          run: RunRound, hints: Mapping[str, Exact] | None = None) -> int:
    """Rounds 1, 2, ... after the initial design (round 0) until `settings.budget` distinct modes
    are evaluated, the space is exhausted, or the evolution finds nothing new and feasible. Round r
    is planned from the evaluations of rounds < r only, so a round a kill cut short is planned
    again to the same batch; a round holding its full batch already is skipped. `run(modes, r,
    predicted, info)` evaluates (the modes `history()` lacks) and records them with their round;
    `hints` as in `plan_round`. Returns the number of the round it stopped before."""
    round_number = 1
    while True:
        done = list(history())
        prior = [(mode, values) for r, mode, values in done if r < round_number]
        size = min(settings.batch, settings.budget - len(prior))
        if size <= 0 or len(prior) >= space.size:
            return round_number
        if sum(r == round_number for r, _, _ in done) >= size:  # finished before a resume
            round_number += 1
            continue
        plan = plan_round(space, objectives, prior, exact, settings, round_number, size, limits, hints)
        if not plan.modes:
            return round_number
        run(plan.modes, round_number, plan.predicted, plan.info)
        round_number += 1


def predictor_rounds(study: optuna.Study, objectives: Sequence[str]) -> list[dict]:
    """Per round of a predictor search: what it fitted and how long planning took (from the round's
    first trial), and the held-out Kendall tau of each learned objective (its predictions for the
    batch, made before the batch was evaluated, against the real values)."""
    rounds: dict[int, dict] = {}
    pairs: dict[int, dict[str, list[tuple[float, float]]]] = {}
    for trial in distinct_trials(study):
        number = int(trial.user_attrs.get("round", 0))
        if number == 0:
            continue
        if "predictor_round" in trial.user_attrs:
            rounds[number] = dict(trial.user_attrs["predictor_round"])
        rounds.setdefault(number, {"round": number})
        predicted = trial.user_attrs.get("predicted") or {}
        for name, value in zip(objectives, trial.values, strict=True):
            if name in predicted:
                pairs.setdefault(number, {}).setdefault(name, []).append((float(predicted[name]), float(value)))
    for number, entry in rounds.items():
        learned = entry.get("models", {})
        entry["evaluated"] = len(next(iter(pairs.get(number, {}).values()), []))
        entry["kendall_tau"] = {name: (None if tau is None else round(tau, 4)) for name, values in
                                pairs.get(number, {}).items() if name in learned
                                for tau in [kendall_tau([a for a, _ in values], [b for _, b in values])]}
    return [rounds[number] for number in sorted(rounds)]
