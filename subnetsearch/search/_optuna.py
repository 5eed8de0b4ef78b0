"""Optuna multi-objective search over one search space, and recording of every evaluation (of any
strategy, DSE included) as a trial, so the Optuna dashboard shows every search."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import optuna
from optuna.samplers import BaseSampler

from subnetsearch.errors import InputError
from subnetsearch.pareto import SENSES
from subnetsearch.spaces import Mode, SearchSpace, mode_from_params, to_optuna
from subnetsearch.storage import StoredEvaluation

SAMPLERS = ("tpe", "nsga2", "nsga3", "random", "gp")
OBJECTIVES = SENSES  # objective -> Optuna direction (the one table: subnetsearch.pareto.OBJECTIVES)
Evaluate = Callable[[Mode], StoredEvaluation]


def make_sampler(name: str, seed: int) -> BaseSampler:
    """Optuna 5's default multi-objective sampler is TPE; the others as named."""
    factories: dict[str, Callable[[], BaseSampler]] = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, multivariate=True),
        "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed, population_size=20),
        "nsga3": lambda: optuna.samplers.NSGAIIISampler(seed=seed, population_size=20),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed),
    }
    if name not in factories:
        raise InputError(f"unknown sampler {name!r}; choose one of {SAMPLERS}")
    return factories[name]()


def check_objectives(objectives: Sequence[str]) -> list[str]:
    """The objective names, refused unless each is known and named once (before anything is written)."""
    names = list(objectives)
    unknown = [o for o in names if o not in OBJECTIVES]
    if unknown or not names:
        raise InputError(f"unknown objective(s) {unknown}; choose from {sorted(OBJECTIVES)}" if unknown else
                         f"no objectives given; choose from {sorted(OBJECTIVES)}")
    if len(set(names)) != len(names):
        raise InputError(f"objectives {names} name one twice")
    if "accuracy" not in names:
        raise InputError(f"objectives {names} must include accuracy (a front trades accuracy against cost)")
    if len(names) < 2:
        costs = ", ".join(o for o in OBJECTIVES if o != "accuracy")
        raise InputError(f"objectives {names}: add a cost to trade accuracy against ({costs})")
    return names


@dataclass(frozen=True)
class Constraints:
    """Feasibility limits, passed to Optuna as per-trial constraints (<= 0 is feasible)."""

    min_accuracy: float | None = None
    max_latency_ms: float | None = None

    def __post_init__(self) -> None:
        if self.min_accuracy is not None and not 0.0 <= self.min_accuracy <= 1.0:  # also refuses NaN
            raise InputError(f"min_accuracy must be in [0, 1], got {self.min_accuracy}")
        if self.max_latency_ms is not None and not 0.0 < self.max_latency_ms < float("inf"):
            raise InputError(f"max_latency_ms must be a positive number of milliseconds, got {self.max_latency_ms}")

    def values(self, evaluation: StoredEvaluation) -> dict[str, float]:
        values = {}
        if self.min_accuracy is not None:
            values["min_accuracy"] = self.min_accuracy - evaluation.accuracy
        if self.max_latency_ms is not None:
            if evaluation.latency_ms is None:
                raise InputError("a latency budget needs measured latency (a device on this host)")
            values["max_latency_ms"] = evaluation.latency_ms - self.max_latency_ms
        return values


def set_constraints(trial: optuna.Trial, values: Mapping[str, float]) -> None:
    """Record constraint values (<= 0 feasible) on a running trial, in Optuna 5's named format."""
    for key, value in values.items():
        trial.set_constraint(key, value)


def objective_values(evaluation: StoredEvaluation, objectives: Sequence[str]) -> list[float]:
    values = [evaluation.objective(name) for name in objectives]
    missing = [name for name, value in zip(objectives, values, strict=True) if value is None]
    if missing:
        raise InputError(f"objective(s) {missing} not available for this evaluation (latency needs a host device)")
    return [float(value) for value in values]  # type: ignore[arg-type]


def open_study(storage: str, name: str, objectives: Sequence[str], sampler: BaseSampler,
               attributes: Mapping[str, object]) -> optuna.Study:
    """Create (or reopen) a study in the project's storage URL, with named metrics and user attrs
    that say which supernet, device and strategy it belongs to."""
    check_objectives(objectives)
    study = optuna.create_study(storage=storage, study_name=name, sampler=sampler, load_if_exists=True,
                                directions=[OBJECTIVES[o] for o in objectives])
    with warnings.catch_warnings():  # set_metric_names is marked experimental; the dashboard uses it
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(objectives))
    for key, value in attributes.items():
        study.set_user_attr(key, value)
    return study


def ask_and_tell(study: optuna.Study, distributions: Mapping[str, optuna.distributions.BaseDistribution],
                 trials: int, run: Callable[[dict], tuple[Sequence[float], Mapping, Any]]) -> list[Any]:
    """`trials` trials sampled by the study's sampler: `run(params)` returns the objective values, the
    user attributes to keep on the trial and a result (the list returned). A trial whose run raises is
    told FAIL and the error propagates."""
    results = []
    for _ in range(trials):
        trial = study.ask(dict(distributions))
        try:
            values, attrs, result = run(trial.params)
        except BaseException:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        study.tell(trial, list(values))
        results.append(result)
    return results


def _fidelity(evaluation: StoredEvaluation) -> dict[str, str]:
    """A first look's trial attribute (full-fidelity trials carry none, as before multi-fidelity)."""
    fidelity = evaluation.settings.get("fidelity", "full")
    return {} if fidelity == "full" else {"fidelity": fidelity}


def record_trial(study: optuna.Study, space: SearchSpace, mode: Mode, evaluation: StoredEvaluation,
                 objectives: Sequence[str], constraints: Constraints, attributes: Mapping[str, object],
                 started: datetime | None = None, finished: datetime | None = None) -> None:
    """Add an evaluation made outside the sampler (e.g. by the greedy DSE) as a completed trial, with
    the times the evaluation really started and finished (`create_trial` stamps both with now, which
    the dashboard's timeline draws with zero width)."""
    trial = optuna.trial.create_trial(
        params=dict(mode.values), distributions=to_optuna(space), values=objective_values(evaluation, objectives),
        user_attrs={"mode_id": mode.id, "mode_json": mode.to_json(), **_fidelity(evaluation), **attributes},
        constraints=constraints.values(evaluation) or None)
    if started is not None and finished is not None:
        trial.datetime_start, trial.datetime_complete = started, finished
    study.add_trial(trial)


def full_fidelity_front(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The study's Pareto-optimal trials among those evaluated at full fidelity (a multi-fidelity
    search's first looks, marked `fidelity: low`, are trials the sampler learns from, never front
    members); feasible ones only where the trials carry constraints, as `study.best_trials`."""
    trials = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
              if t.user_attrs.get("fidelity") != "low"]
    feasible = [t for t in trials if all(c <= 0 for c in t.system_attrs.get("constraints") or ())]
    signs = [1.0 if d == optuna.study.StudyDirection.MINIMIZE else -1.0 for d in study.directions]
    vectors = [[s * v for s, v in zip(signs, t.values, strict=True)] for t in feasible]

    def dominated(i: int) -> bool:
        return any(all(a <= b for a, b in zip(other, vectors[i], strict=True)) and other != vectors[i]
                   for other in vectors)

    return [t for i, t in enumerate(feasible) if not dominated(i)]


def finish_orphans(study: optuna.Study, space: SearchSpace, evaluate: Evaluate, objectives: Sequence[str],
                   constraints: Constraints = Constraints()) -> int:
    """Complete the trials a killed process left RUNNING: evaluate their modes (served from the store
    when they had been evaluated) and tell the results. A trial killed while the sampler was still
    setting its parameters has no complete mode (and so no evaluation): it is marked FAIL and the
    search asks for another. Returns how many were completed."""
    orphans = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    knobs = {knob.name for knob in space.knobs}
    completed = 0
    for frozen in orphans:
        if set(frozen.params) != knobs:
            study.tell(frozen.number, state=optuna.trial.TrialState.FAIL)
            continue
        mode = mode_from_params(space, frozen.params)
        evaluation = evaluate(mode)
        trial = optuna.Trial(study, frozen._trial_id)
        _tell(study, trial, mode, evaluation, objectives, constraints)
        completed += 1
    return completed


def _tell(study: optuna.Study, trial: optuna.Trial, mode: Mode, evaluation: StoredEvaluation,
          objectives: Sequence[str], constraints: Constraints) -> None:
    set_constraints(trial, constraints.values(evaluation))
    for key, value in _fidelity(evaluation).items():
        trial.set_user_attr(key, value)
    trial.set_user_attr("mode_id", mode.id)
    trial.set_user_attr("mode_json", mode.to_json())
    study.tell(trial, objective_values(evaluation, objectives))


DUPLICATE_OF = "duplicate_of"  # user attr of a trial whose proposed mode the study already had


def _finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return sorted(study.get_trials(deepcopy=False, states=states), key=lambda t: t.number)


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's INFO lines off for the block (an internal in-memory study is no news to the user)."""
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(previous)


def replay_sampler(study: optuna.Study, sampler: BaseSampler, distributions: Mapping) -> optuna.Study:
    """An in-memory study driven by `sampler` (fresh, seeded) that has asked and been told the
    stored study's finished trials in order: the sampler's random state and history are what they
    were when the run that made them stopped, so it proposes next what an uninterrupted run would
    have. A stored trial the sampler would not have proposed (another strategy's, or a sampler that
    is not deterministic given its seed and history) is added as it is, so the history stays whole."""
    with quiet_optuna():
        memory = optuna.create_study(directions=study.directions, sampler=sampler)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental-feature warnings of some samplers
        for stored in _finished(study):
            trial = memory.ask(dict(distributions))
            if trial.params != stored.params:
                memory.tell(trial, state=optuna.trial.TrialState.FAIL)
                memory.add_trial(optuna.trial.create_trial(
                    state=stored.state, params=stored.params, distributions=stored.distributions,
                    values=stored.values if stored.state == optuna.trial.TrialState.COMPLETE else None,
                    constraints=stored.constraints or None))
                continue
            set_constraints(trial, stored.constraints)
            if stored.state == optuna.trial.TrialState.COMPLETE:
                memory.tell(trial, stored.values)
            else:
                memory.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return memory


def optuna_search(study: optuna.Study, space: SearchSpace, evaluate: Evaluate, trials: int,
                  objectives: Sequence[str], constraints: Constraints = Constraints(),
                  attributes: Mapping[str, object] | None = None) -> list[StoredEvaluation]:
    """Ask/tell loop: the study's sampler proposes modes; the (cached) evaluator measures them.

    Exactly once per mode, also across kills: the sampler works on an in-memory replay of the stored
    trials (`replay_sampler`), and each trial is added to the stored study when its evaluation is
    done (with its real start and end times). A killed run leaves no running trial; rerun, the
    replayed sampler proposes the same next mode, whose evaluation the store may already hold. So a
    resumed search evaluates what an uninterrupted one with the same seed would, and ends with the
    same front. `trials` new distinct modes: a proposal of a mode the study already holds is not
    evaluated again but recorded PRUNED with `duplicate_of` (the trial that has it), and the sampler
    asked again; the loop ends early once every mode of the space is in the study."""
    distributions = to_optuna(space)
    memory = replay_sampler(study, study.sampler, distributions)
    known = {t.user_attrs["mode_id"]: t.number for t in _finished(study)
             if t.state == optuna.trial.TrialState.COMPLETE and "mode_id" in t.user_attrs}
    number = len(study.get_trials(deepcopy=False))  # the next trial's number (trials are numbered in order)
    results: list[StoredEvaluation] = []
    attempts = 0
    while len(results) < trials and len(known) < space.size and attempts < 20 * trials + 100:
        attempts += 1
        started = datetime.now()
        proposal = memory.ask(distributions)
        mode = mode_from_params(space, proposal.params)
        if mode.id in known:
            memory.tell(proposal, state=optuna.trial.TrialState.PRUNED)
            duplicate = optuna.trial.create_trial(
                state=optuna.trial.TrialState.PRUNED, params=dict(mode.values), distributions=distributions,
                user_attrs={"mode_id": mode.id, DUPLICATE_OF: known[mode.id], **(attributes or {})})
            study.add_trial(duplicate)
            number += 1
            continue
        evaluation = evaluate(mode)
        set_constraints(proposal, constraints.values(evaluation))
        memory.tell(proposal, objective_values(evaluation, objectives))
        record_trial(study, space, mode, evaluation, objectives, constraints, attributes or {}, started,
                     datetime.now())
        known[mode.id] = number
        number += 1
        results.append(evaluation)
    return results
