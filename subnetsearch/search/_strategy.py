"""Search strategies as an extension point: one small base class (`SearchStrategy`), a registry that
refuses duplicates, and the three strategies that ship (Algorithm 2's greedy DSE, Optuna's
multi-objective samplers, the predictor strategy). `subnetsearch search --strategy NAME`, the main
job and the report find a strategy only through the registry, so a new one is one module and one
`register_strategy` call: its options dataclass is its command-line surface (`--set key=value`, or
the named options the command has for the shipped ones)."""

from __future__ import annotations

import dataclasses
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import optuna

from subnetsearch.errors import InputError
from subnetsearch.search._dse import DSEStep, check_dse_inputs
from subnetsearch.search._optuna import Constraints, check_objectives, full_fidelity_front, make_sampler
from subnetsearch.search._predictor import PredictorSettings
from subnetsearch.storage import StoredEvaluation

if TYPE_CHECKING:
    from subnetsearch.search._session import SearchSession

Say = Callable[[str], None]


@dataclass(frozen=True)
class StrategyOptions:
    """What every strategy's options share: the study's objectives (accuracy first; latency, macs,
    energy). A strategy's own options subclass this, every field with a default, and check their
    values in `__post_init__` (an `InputError` naming the option)."""

    objectives: tuple[str, ...] = ("accuracy", "latency")

    def __post_init__(self) -> None:
        object.__setattr__(self, "objectives", tuple(check_objectives(list(self.objectives))))

    def settings(self) -> dict[str, Any]:
        """The options as plain values (the search's stored settings and its default name; a tuple
        as comma-separated text, as the command line writes it)."""
        return {key: ",".join(map(str, value)) if isinstance(value, tuple) else value
                for key, value in dataclasses.asdict(self).items()}


@dataclass
class Outcome:
    """What one run of a strategy leaves: its study, the evaluations it made now, what it has to say
    beyond the study's front (the DSE's chosen mode, the predictor's rounds) and, where it did not
    find what it promises (the DSE when even the full network is below delta), why."""

    study: optuna.Study
    evaluations: list[StoredEvaluation] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    failure: str | None = None


class SearchStrategy(ABC):
    """A way of searching a supernet's modes on one device through a `SearchSession` (which records
    the search by name, stores every evaluation once and keeps the Optuna study). Subclasses set
    `name`, `summary` and `Options`, and implement `run`."""

    name: ClassVar[str]
    summary: ClassVar[str]  # one line: --help, the docs
    Options: ClassVar[type[StrategyOptions]] = StrategyOptions

    def options(self, values: Mapping[str, object] | None = None) -> StrategyOptions:
        """The strategy's options from `values` (typed values, or text as `--set key=value` gives
        it); a name the strategy does not take is refused, naming the ones it does."""
        values = dict(values or {})
        known = {f.name: f for f in dataclasses.fields(self.Options)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise InputError(f"strategy {self.name!r} takes no option {', '.join(map(repr, unknown))}; its options: "
                             f"{', '.join(sorted(known))}")
        hints = typing.get_type_hints(self.Options)
        typed = {key: _coerce(key, value, hints[key]) for key, value in values.items()}
        return self.Options(**typed)  # type: ignore[arg-type]  # checked by the dataclass


    @abstractmethod
    def run(self, session: SearchSession, options: StrategyOptions, say: Say = print,
            name: str | None = None) -> Outcome:
        """Run (or resume, by `name`) the search; `say` gets progress lines."""

    def records(self, stored: str) -> bool:
        """Whether a stored search's strategy column was written by this strategy (a strategy may
        record a variant, e.g. `dse-latency`, `optuna-tpe`)."""
        return stored == self.name or stored.startswith(f"{self.name}-")

    def trajectory(self, summary: Mapping[str, Any]) -> list[str]:
        """Mode ids of a walk the report draws as a path (the DSE's); none by default."""
        return []

    def rounds(self, summary: Mapping[str, Any]) -> list[dict]:
        """Per-round records the report shows (the predictor's model fit); none by default."""
        return []


STRATEGIES: dict[str, SearchStrategy] = {}


def register_strategy(strategy: SearchStrategy) -> SearchStrategy:
    """Make `subnetsearch search --strategy NAME`, the main job and the report know a strategy; a
    name registered already is refused. Returns the strategy."""
    name = getattr(strategy, "name", "")
    if not isinstance(strategy, SearchStrategy):
        raise InputError(f"a strategy must be a SearchStrategy instance, got {strategy!r}")
    if not name or not isinstance(name, str) or "+" in name:
        raise InputError(f"a strategy name must be a non-empty string without '+', got {name!r}")
    if name in STRATEGIES:
        raise InputError(f"search strategy {name!r} is registered already (by {type(STRATEGIES[name]).__module__})")
    STRATEGIES[name] = strategy
    return strategy


def unregister_strategy(name: str) -> None:
    if name not in STRATEGIES:
        raise InputError(f"search strategy {name!r} is not registered")
    del STRATEGIES[name]


def get_strategy(name: str) -> SearchStrategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise InputError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}") from None


def strategy_of_record(stored: str) -> SearchStrategy | None:
    """The registered strategy that wrote a stored search (None: one not registered here, e.g. a
    training-time search or a plugin's)."""
    return next((s for s in STRATEGIES.values() if s.records(stored)), None)


def _coerce(key: str, value: object, hint: Any) -> object:
    """A `--set key=value` text as the option's type (int, float, bool, str, optional, tuple)."""
    if not isinstance(value, str):
        return tuple(value) if isinstance(value, list) else value
    args = typing.get_args(hint)
    optional = type(None) in args
    if optional and value.lower() in ("none", ""):
        return None
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in args if a is not type(None))
    try:
        if typing.get_origin(hint) is tuple:
            return tuple(part.strip() for part in value.split(",") if part.strip())
        if hint is bool:
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise InputError(f"option {key}: {value!r} is not true or false")
            return value.lower() in ("true", "1", "yes")
        return hint(value) if hint in (int, float, str) else value
    except ValueError:
        kind = {int: "an integer", float: "a number", bool: "true or false"}.get(hint, str(hint))
        raise InputError(f"option {key}: {value!r} is not {kind}") from None


# ---- the shipped strategies ---------------------------------------------------------------------

@dataclass(frozen=True)
class DSEOptions(StrategyOptions):
    delta: float = 0.90  # accuracy threshold (validation)
    cost: str = "latency"  # the cost t of t/acc: latency | macs | energy
    max_iterations: int | None = None  # stop after this many iterations

    def __post_init__(self) -> None:
        super().__post_init__()
        check_dse_inputs(self.delta, self.cost)
        if self.max_iterations is not None and self.max_iterations < 1:
            raise InputError(f"max_iterations must be >= 1, got {self.max_iterations}")


class GreedyDSE(SearchStrategy):
    name = "dse"
    summary = "the WeNet paper's greedy design space exploration (Algorithm 2)"
    Options = DSEOptions

    def run(self, session: SearchSession, options: StrategyOptions, say: Say = print,
            name: str | None = None) -> Outcome:
        assert isinstance(options, DSEOptions)
        unit = " ms" if options.cost == "latency" else ""

        def show(step: DSEStep) -> None:
            say(f"iteration {step.iteration}: {step.changed_layer or '(full network)':>24} -> acc {step.accuracy:.4f}, "
                f"{options.cost} {step.cost:.4g}{unit}, t/acc {step.loss:.4g} ({step.candidates_evaluated} evaluated)")

        result, study = session.dse(options.delta, options.cost, options.objectives, options.max_iterations,
                                    on_step=show, name=name)
        outcome = Outcome(study, lines=[f"DSE: {len(result.trajectory)} steps, {result.evaluations} evaluations"])
        chosen = result.chosen
        if chosen is None:
            outcome.failure = f"even the full network is below delta = {options.delta}"
        else:
            supernet = session.supernet
            outcome.lines.append(f"chosen mode {chosen.mode.id}: accuracy {chosen.accuracy:.4f}, {options.cost} "
                                 f"{chosen.cost:.4g}{unit}; {supernet.mode_layout()} {supernet.describe(chosen.mode)}")
        return outcome

    def trajectory(self, summary: Mapping[str, Any]) -> list[str]:
        return [str(mode) for mode in summary.get("trajectory", [])]


@dataclass(frozen=True)
class ConstrainedOptions(StrategyOptions):
    trials: int = 30
    seed: int = 0
    min_accuracy: float | None = None  # a constraint: accuracy >= this
    max_latency_ms: float | None = None  # a constraint: latency <= this

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.trials < 1:
            raise InputError(f"trials must be >= 1, got {self.trials}")
        self.constraints()

    def constraints(self) -> Constraints:
        return Constraints(self.min_accuracy, self.max_latency_ms)


@dataclass(frozen=True)
class OptunaOptions(ConstrainedOptions):
    sampler: str = "tpe"  # tpe | nsga2 | nsga3 | random | gp

    def __post_init__(self) -> None:
        super().__post_init__()
        make_sampler(self.sampler, self.seed)


class OptunaStrategy(SearchStrategy):
    name = "optuna"
    summary = "Optuna's multi-objective samplers (TPE, NSGA-II/III, random, GP) until the study holds `trials`"
    Options = OptunaOptions

    def run(self, session: SearchSession, options: StrategyOptions, say: Say = print,
            name: str | None = None) -> Outcome:
        assert isinstance(options, OptunaOptions)
        results, study = session.optuna(options.sampler, options.trials, options.objectives, options.constraints(),
                                        options.seed, name=name)
        return Outcome(study, results, [f"Optuna ({options.sampler}, seed {options.seed}): {len(study.trials)} trials, "
                                        f"{len(results)} new, {len(full_fidelity_front(study))} on the study's front"])


@dataclass(frozen=True)
class PredictorOptions(ConstrainedOptions):
    init: str = "random"  # random (random modes with full and smallest) | dse (Algorithm 2's first evaluations)
    init_size: int | None = None  # evaluations of the initial design (default min(20, trials))
    batch: int = 10  # real evaluations per round (fanned out on a Ray backend)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.predictor_settings()
        if self.max_latency_ms is not None and "latency" not in self.objectives:
            raise InputError("a latency budget needs latency among the objectives (the predictor must predict it)")

    def predictor_settings(self) -> PredictorSettings:
        size = min(20, self.trials) if self.init_size is None else self.init_size
        return PredictorSettings(budget=self.trials, init=self.init, init_size=size, batch=self.batch, seed=self.seed)


class PredictorStrategy(SearchStrategy):
    name = "predictor"
    summary = "a learned accuracy (and latency) model and NSGA-II on its predictions pick each batch of real evaluations"
    Options = PredictorOptions

    def run(self, session: SearchSession, options: StrategyOptions, say: Say = print,
            name: str | None = None) -> Outcome:
        from subnetsearch.search._predictor import predictor_rounds

        assert isinstance(options, PredictorOptions)
        results, study = session.predictor(options.trials, options.objectives, options.constraints(), options.seed,
                                           options.init, options.init_size, options.batch, name=name)
        lines = []
        for entry in predictor_rounds(study, list(options.objectives)):
            taus = ", ".join(f"{k} {'-' if v is None else f'{v:.2f}'}" for k, v in entry.get("kendall_tau", {}).items())
            planning = entry.get("fit_s", 0) + entry.get("evolve_s", 0) + entry.get("select_s", 0)
            lines.append(f"round {entry['round']}: fitted on {entry.get('trained_on', '?')}, evaluated "
                         f"{entry.get('evaluated', 0)}; held-out Kendall tau {taus or '-'}; planning {planning:.1f} s")
        lines.append(f"predictor: {len(study.trials)} trials, {len(results)} new, {len(full_fidelity_front(study))} on the "
                     "study's front")
        return Outcome(study, results, lines)

    def rounds(self, summary: Mapping[str, Any]) -> list[dict]:
        return [dict(entry) for entry in summary.get("rounds") or []]


for _strategy in (GreedyDSE(), OptunaStrategy(), PredictorStrategy()):
    register_strategy(_strategy)
