"""Training-time searches: one code path for every kind, wherever its trials run.

A `TrainingSearch` is what one kind searches (the lasso family's penalty lambda/a, DDI's skip
target): its base checkpoint, its space, its settings, and `trial(params, network, splits)`, which
trains from the base network with the sampled values and returns a `TrialOutcome` (accuracy and
MACs, what to keep on the Optuna trial, files to write under the search's output folder).
`run_training_search` starts or resumes the recorded search and its study, then runs the trials
here (`ask_and_tell`) or through a `TrialRunner` (Ray Tune: `subnetsearch.distributed.RayTrials`),
which runs the same `trial` in its worker processes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import optuna

from subnetsearch.data import DataSpec, Splits, load_data
from subnetsearch.errors import InputError
from subnetsearch.files import write_atomically
from subnetsearch.search._optuna import ask_and_tell, make_sampler, open_study
from subnetsearch.search._recording import recorded
from subnetsearch.spaces import SearchSpace, to_optuna
from subnetsearch.storage import SearchRecord, Store
from subnetsearch.supernets import BaseSupernet, Checkpoint


def start_training_search(store: Store, checkpoint: Checkpoint, checkpoint_path: Path, name: str, strategy: str,
                          space: SearchSpace, settings: dict) -> SearchRecord:
    """Record a training-time search (knobs that need training, like clipped-Lasso lambda and a or a
    DDI skip target; objectives accuracy and MACs, so no device) like every other search: listed by
    `subnetsearch searches`, resumed by name, marked by `recorded`. Its study has the same name."""
    store.register_supernet(checkpoint, Path(checkpoint_path).resolve())
    record, _ = store.start_search(name, strategy, checkpoint.hash, None, space.to_dict(), settings, name)
    return record


TRAINING_OBJECTIVES = ("accuracy", "macs")


def open_training_search(store: Store, url: str, checkpoint: Checkpoint, checkpoint_path: Path, name: str,
                         strategy: str, space: SearchSpace, settings: dict,
                         sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    """Start (or resume) a training-time search (`start_training_search`) and open its study of the
    same name (accuracy up, MACs down)."""
    start_training_search(store, checkpoint, checkpoint_path, name, strategy, space, settings)
    return open_study(url, name, list(TRAINING_OBJECTIVES), sampler,
                      {"supernet_hash": checkpoint.hash, "strategy": strategy, "search": name})


def run_training_trials(store: Store, url: str, name: str, trials: int, run: Callable[[], list[str]],
                        stored: Callable[[optuna.Study], Sequence[object]]) -> tuple[optuna.Study, list[str]]:
    """Run a started training-time search's trials, wherever they run: `run()` runs `trials` trials
    (here, or as Ray Tune trials that fill the study from other processes) and returns the errors of
    trials that failed for good. Recorded (`recorded`): the summary says how many trials the study
    holds and how many failed. Returns the study, read again after the run, and those errors."""
    with recorded(store, name) as summary:
        errors = run()
        summary["failed_trials"] = len(errors)
        study = optuna.load_study(study_name=name, storage=url)
        summary.update({"trials": len(stored(study)), "new_trials": trials})
    return study, errors


@dataclass(frozen=True)
class TrialOutcome:
    """One trial's objectives (accuracy up, MACs down), the attributes its Optuna trial keeps, and
    files to write (path relative to the search's output folder -> bytes); `attrs[path_key]` is
    made the written file's absolute path."""

    accuracy: float
    macs: float
    attrs: Mapping[str, Any]
    files: Mapping[str, bytes] = field(default_factory=dict)
    path_key: str | None = None


class TrainingSearch(ABC):
    """One kind of training-time search; see the module's docstring. Instances travel to Ray Tune's
    workers, so they hold only what pickles (the base checkpoint, recipes, settings)."""

    strategy: str  # how the store records it, e.g. "lasso-clipped"

    def __init__(self, base: Checkpoint, base_path: Path) -> None:
        self.base = base
        self.base_path = base_path

    @property
    @abstractmethod
    def space(self) -> SearchSpace:
        """The knobs each trial samples."""

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """What the store records with the search (and names it)."""

    @abstractmethod
    def default_name(self) -> str:
        """The study's name when none is given: resuming it adds trials."""

    @abstractmethod
    def trial(self, params: Mapping[str, Any], network: BaseSupernet, splits: Splits) -> TrialOutcome:
        """Train from `network` (the base, loaded once per process: do not change it) with `params`."""

    @abstractmethod
    def results(self, study: optuna.Study) -> list[Any]:
        """The completed trials' results, read back from the study."""

    def network_and_data(self) -> tuple[BaseSupernet, Splits]:
        return self.base.build(), load_data(DataSpec.from_dict(self.base.data))


def write_files(outcome: TrialOutcome, out: Path | None) -> dict[str, Any]:
    """Write a trial's files under `out`; its attributes with the written file's path."""
    attrs = dict(outcome.attrs)
    for relative, content in outcome.files.items():
        if out is None:
            raise InputError("this search writes files: give it an output folder")
        written = str(write_atomically(out / relative, content).resolve())
        if outcome.path_key is not None:
            attrs[outcome.path_key] = written
    return attrs


class TrialRunner(Protocol):
    """Runs a training-time search's trials elsewhere (the Ray Tune one: `distributed.RayTrials`)."""

    description: str

    def shared_url(self, url: str) -> str:
        """The storage URL as the runner's workers see it (checked before anything is written)."""

    def run(self, search: TrainingSearch, study: optuna.Study, url: str, sampler: optuna.samplers.BaseSampler,
            trials: int, out: Path | None) -> list[str]:
        """Run `trials` trials of `search` on `study`; the errors of trials that failed for good."""


def run_training_search(store: Store, url: str, search: TrainingSearch, trials: int, *, name: str | None = None,
                        sampler: str = "tpe", seed: int = 0, out: Path | None = None,
                        runner: TrialRunner | None = None,
                        on_trial: Callable[[Any], None] | None = None) -> tuple[optuna.Study, list[str], str]:
    """Start (or resume, by `name`) the recorded search of `search` in `store` and its study in `url`,
    run `trials` more trials here or on `runner`, and return the study read again, the errors of trials
    that failed for good and the study's name. `on_trial(result)` is told each new result (after
    the runner's trials, for a runner)."""
    name = name or search.default_name()
    shared = runner.shared_url(url) if runner is not None else url
    study = open_training_search(store, url, search.base, search.base_path, name, search.strategy, search.space,
                                 {**search.settings(), "sampler": sampler, "seed": seed},
                                 make_sampler(sampler, seed))
    before = len(search.results(study))

    def run() -> list[str]:
        if runner is not None:
            return runner.run(search, study, shared, make_sampler(sampler, seed), trials, out)
        network, splits = search.network_and_data()

        def one(params: dict) -> tuple[Sequence[float], Mapping, None]:
            outcome = search.trial(params, network, splits)
            return [outcome.accuracy, outcome.macs], write_files(outcome, out), None

        for _ in range(trials):
            ask_and_tell(study, to_optuna(search.space), 1, one)
            if on_trial is not None:
                on_trial(search.results(study)[-1])
        return []

    study, errors = run_training_trials(store, url, name, trials, run, search.results)
    if runner is not None and on_trial is not None:
        for result in search.results(study)[before:]:
            on_trial(result)
    return study, errors, name
