"""One search of one supernet on one device: the evaluator, the store and the Optuna study wired
together, so that every strategy records every evaluation the same way."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path

import optuna
from optuna import Study

from subnetsearch.data import DataSpec, load_data
from subnetsearch.devices import Device, LatencyPredictor, LatencyTable
from subnetsearch.errors import InputError
from subnetsearch.search._backend import Backend
from subnetsearch.search._cache import CachedEvaluator
from subnetsearch.search._dse import DSEResult, DSEStep, check_dse_inputs, greedy_dse
from subnetsearch.search._evaluator import EvaluationSettings, mode_energy_mj
from subnetsearch.search._fidelity import Fidelity, Screen, screening_evaluator
from subnetsearch.search._optuna import (
    Constraints,
    check_objectives,
    finish_orphans,
    full_fidelity_front,
    make_sampler,
    open_study,
    optuna_search,
    record_trial,
)
from subnetsearch.search._predictor import (
    Exact,
    Limits,
    PredictorSettings,
    initial_design,
    predictor_rounds,
    predictor_rounds_loop,
)
from subnetsearch.search._recording import recorded
from subnetsearch.spaces import Mode
from subnetsearch.storage import SearchRecord, StorageError, Store, StoredEvaluation, distinct_trials
from subnetsearch.supernets import WeNetSupernet, load_checkpoint
from subnetsearch.trainers import Accelerator


@dataclass
class SearchSession:
    """Holds the loaded supernet, its validation data and a cached evaluator for one device."""

    store: Store
    storage_url: str
    device: Device
    checkpoint_path: Path
    settings: EvaluationSettings = field(default_factory=EvaluationSettings)
    latency_table: LatencyTable | None = None  # predict latency from this table instead of measuring it
    predicted_latency: bool = False  # predict latency from the device's stored table for this supernet
    backend: Backend | None = None  # None: evaluate in this process; a RayBackend: on a Ray cluster
    data_root: str | None = None  # the checkpoint's data where it is now (same images, other folder)
    # where BN calibration and accuracy run: auto (a CUDA GPU when there is one) | cpu | cuda | cuda:N;
    # latency is still measured on the device profile's runtime
    accelerator: str = "auto"
    # multi-fidelity: a first look at every candidate, the full evaluation only where it could join the front
    fidelity: Fidelity | None = None

    def __post_init__(self) -> None:
        self.compute = Accelerator.resolve(self.accelerator)  # an unusable choice is refused before any work
        self.checkpoint = load_checkpoint(self.checkpoint_path)
        if self.data_root is not None:  # the same data set moved: its content hash stays the checkpoint's
            root = str(Path(self.data_root).expanduser().resolve())
            self.checkpoint = replace(self.checkpoint, data={**self.checkpoint.data, "root": root})
        self.supernet = self.checkpoint.build().to(self.compute.device)
        self.splits = load_data(DataSpec.from_dict(self.checkpoint.data))
        self.store.register_supernet(self.checkpoint, self.checkpoint_path.resolve(), self.splits.preprocessing())
        if self.latency_table is None and self.predicted_latency:
            stored = self.store.get_latency_table(self.device.name, self.checkpoint.hash)
            if stored is None:
                raise InputError(f"no latency table for device {self.device.name} and supernet "
                                 f"{self.checkpoint.hash[:12]}: build one with `subnetsearch devices table "
                                 f"{self.device.name}` (on the device) or import one with --import-file")
            self.latency_table = LatencyTable.from_dict(stored[0])
        predictor = LatencyPredictor(self.supernet, self.latency_table) if self.latency_table else None
        self.latency_predictor = predictor
        self.plan_table = None if predictor is not None else self._plan_table()
        planner = LatencyPredictor(self.supernet, self.plan_table) if self.plan_table else None
        measure = self.backend.prepare(self) if self.backend is not None else self.device.location == "host"
        self.evaluator = CachedEvaluator(self.supernet, self.checkpoint.hash, self.splits, self.device, self.store,
                                         self.settings, measure=measure, predictor=predictor, planner=planner)
        self.screening = None if self.fidelity is None else screening_evaluator(self.evaluator, self.fidelity)
        self.screen: Screen | None = None  # the promotion rule of the search started last
        self.screens: list[Screen] = []  # every search's, in order (their counts)

    def _plan_table(self) -> LatencyTable | None:
        """For measured latency: the device's lookup table for this supernet, if it has one, measured
        with the device's protocol: its per-layer plan is timed beside the all-grouped and all-dense
        realizations (the measurement decides)."""
        stored = self.store.get_latency_table(self.device.name, self.checkpoint.hash)
        if stored is None or not isinstance(self.supernet, WeNetSupernet):
            return None
        table = LatencyTable.from_dict(stored[0])
        same = ("runtime", "batch_size", "threads", "channels_last")  # what the kernels run as (not the repeats)
        matches = all(getattr(table.protocol, key) == getattr(self.device.protocol, key) for key in same)
        return table if matches else None

    def search_name(self, strategy: str, settings: dict) -> str:
        """The default name of a search (and of its Optuna study): supernet, device, strategy and the
        settings that make it a different search. Rerunning the same command resumes it."""
        knobs = ",".join(f"{key}={value}" for key, value in sorted(settings.items()) if value is not None)
        return f"{self.checkpoint.arch['family']}-{self.checkpoint.hash[:8]}@{self.device.name}/{strategy}/{knobs}"

    def attributes(self, strategy: str) -> dict[str, object]:
        return {"supernet_hash": self.checkpoint.hash, "supernet_family": self.checkpoint.family,
                "device": self.device.name, "strategy": strategy, "data": self.splits.name, "split": self.settings.split}

    def evaluate_batch(self, modes: Sequence[Mode]) -> list[StoredEvaluation]:
        """Independent evaluations: in this process one by one, or fanned out by the backend."""
        return [result for result, _, _ in self.timed_batch(modes)]

    def timed_batch(self, modes: Sequence[Mode]) -> list[tuple[StoredEvaluation, datetime, datetime]]:
        """`evaluate_batch` with when each evaluation started and finished (fanned out by a backend,
        they run side by side: each gets the batch's span). Multi-fidelity (a `fidelity` and a search
        started): a first look at each mode not evaluated in full yet, then the full evaluation of
        those the promotion rule keeps (`search._fidelity`); a dismissed mode's first look is its result."""
        if self.screening is None or self.screen is None:
            return self._timed(modes, self.evaluator)
        results: dict[str, tuple[StoredEvaluation, datetime, datetime]] = {}
        looking = []
        for mode in modes:
            known = self.evaluator.lookup(mode)
            if known is None:
                looking.append(mode)
            else:
                self.evaluator.count(False)
                now = datetime.now()
                results[mode.id] = (known, now, now)
        looks = self._timed(looking, self.screening)
        promoted = [mode for mode, (look, _, _) in zip(looking, looks, strict=True) if self.screen.promote(look)]
        full = {mode.id: timed for mode, timed in zip(promoted, self._timed(promoted, self.evaluator), strict=True)}
        for mode, (look, started, finished) in zip(looking, looks, strict=True):
            record, _, done = full.get(mode.id, (look, started, finished))
            results[mode.id] = (record, started, done)
        return [results[mode.id] for mode in modes]

    def _timed(self, modes: Sequence[Mode], evaluator: CachedEvaluator
               ) -> list[tuple[StoredEvaluation, datetime, datetime]]:
        if not modes:
            return []
        if self.backend is not None:
            started = datetime.now()
            results = self._fan_out(modes, evaluator)
            finished = datetime.now()
            return [(result, started, finished) for result in results]
        timed = []
        for mode in modes:
            started = datetime.now()
            result = evaluator.evaluate(mode)
            timed.append((result, started, datetime.now()))
        return timed

    def _fan_out(self, modes: Sequence[Mode], evaluator: CachedEvaluator) -> list[StoredEvaluation]:
        """Stored modes from the evaluator's cache; the rest computed by the backend."""
        assert self.backend is not None
        results: list[StoredEvaluation | None] = [evaluator.lookup(mode) for mode in modes]
        todo = [index for index, result in enumerate(results) if result is None]
        evaluator.hits += len(modes) - len(todo)
        if todo:
            fidelity = evaluator.settings.fidelity
            answers = self.backend.evaluate_batch([modes[index] for index in todo], fidelity)
            for index, (record, fresh) in zip(todo, answers, strict=True):
                results[index] = record
                evaluator.remember(record, fresh)
        return [result for result in results if result is not None]

    def evaluate(self, mode: Mode) -> StoredEvaluation:
        return self.evaluate_batch([mode])[0]

    def _stored(self, mode: Mode, fresh: bool) -> StoredEvaluation:
        """The evaluation a backend's trial stored, counted as computed now or reused."""
        record = self.evaluator.lookup(mode)
        if record is None:
            raise StorageError(f"a trial of mode {mode.id} completed but its evaluation is not in the store "
                               f"{self.store.url}: do the workers use another store?")
        self.evaluator.count(fresh)
        return record

    def require_latency(self, needed: bool) -> None:
        """Fail before a search starts if it needs latency that nothing here can provide."""
        if not needed or self.latency_table is not None or self.evaluator.measure:
            return
        if self.backend is not None:
            self.backend.require_device()
        raise InputError(f"device {self.device.name} is a {self.device.location} device: latency cannot be measured "
                         "here; use --latency predicted with the device's lookup table, --backend ray with a node "
                         "of that device, or a cost and objectives without latency")

    def _start(self, name: str | None, strategy: str, settings: dict, objectives: Sequence[str],
               sampler: optuna.samplers.BaseSampler) -> tuple[SearchRecord, optuna.Study]:
        name = name or self.search_name(strategy, settings)
        record, _ = self.store.start_search(name, strategy, self.checkpoint.hash, self.device.name,
                                                  self.supernet.space.to_dict(), settings, name)
        study = open_study(self.storage_url, record.study_name, objectives, sampler,
                           {**self.attributes(strategy), "search": name})
        if self.screening is not None and self.fidelity is not None:
            self.screen = Screen(self.store, self.screening, objectives, self.fidelity.z)
            self.screens.append(self.screen)
        return record, study

    @contextmanager
    def search(self, strategy: str, settings: dict, objectives: Sequence[str], name: str | None = None,
               constraints: Constraints = Constraints(), sampler: optuna.samplers.BaseSampler | None = None
               ) -> Iterator[Recorder]:
        """A recorded search for a strategy of one's own (see `search._strategy`): starts (or resumes,
        by `name`; default from the strategy and its settings) the search and its study, and yields a
        `Recorder` whose `evaluate` evaluates modes once each (from the store where they were) and
        adds each to the study once. Marked finished, interrupted or failed as every search is."""
        objectives = check_objectives(objectives)
        self.require_latency("latency" in objectives or constraints.max_latency_ms is not None)
        record, study = self._start(name, strategy, settings, objectives, sampler or make_sampler("random", 0))
        with recorded(self.store, record.name) as summary:
            recorder = Recorder(self, study, list(objectives), constraints, strategy, summary)
            yield recorder
            summary.update({"trials": len(distinct_trials(study)), "new_trials": len(recorder.fresh),
                            "front": sorted({str(t.user_attrs.get("mode_id")) for t in full_fidelity_front(study)})})

    def dse(self, delta: float, cost: str, objectives: Sequence[str], max_iterations: int | None = None,
            on_step: Callable[[DSEStep], None] | None = None, name: str | None = None) -> tuple[DSEResult, optuna.Study]:
        """Algorithm 2. Resuming re-walks the trajectory from stored evaluations (nothing is evaluated
        twice) and adds only trials the study does not hold yet."""
        check_dse_inputs(delta, cost)  # before anything is recorded
        objectives = check_objectives(objectives)
        if max_iterations is not None and max_iterations < 1:
            raise InputError(f"max_iterations must be >= 1, got {max_iterations}")
        self.require_latency(cost == "latency" or "latency" in objectives)
        strategy = f"dse-{cost}"
        settings = {"delta": delta, "objectives": ",".join(objectives), "max_iterations": max_iterations}
        with self.search(strategy, settings, objectives, name, Constraints(min_accuracy=delta)) as search:
            result = greedy_dse(self.supernet.space, self.supernet.full_mode(), search.evaluate, delta, cost,
                                max_iterations, on_step)
            search.summary.update({"evaluations": result.evaluations,
                                   "trajectory": [s.mode.id for s in result.trajectory],
                                   "chosen": result.chosen.mode.id if result.chosen else None})
        return result, search.study

    def optuna(self, sampler: str, trials: int, objectives: Sequence[str], constraints: Constraints,
               seed: int = 0, name: str | None = None) -> tuple[list[StoredEvaluation], optuna.Study]:
        """Multi-objective search until the study holds `trials` complete trials. Resuming first
        finishes trials a killed run left running (their evaluations come from the store when they
        were stored before the kill), then asks for the rest."""
        if trials < 1:
            raise InputError(f"trials must be >= 1, got {trials}")
        objectives = check_objectives(objectives)
        make_sampler(sampler, seed)  # an unknown sampler is refused before anything is recorded
        self.require_latency("latency" in objectives or constraints.max_latency_ms is not None)
        strategy = f"optuna-{sampler}"
        settings = {"seed": seed, "objectives": ",".join(objectives), **{k: v for k, v in asdict(constraints).items()
                                                                          if v is not None}}
        record, study = self._start(name, strategy, settings, objectives, make_sampler(sampler, seed))
        with recorded(self.store, record.name) as summary:
            finish_orphans(study, self.supernet.space, self.evaluate, objectives, constraints)
            done = len({t.user_attrs.get("mode_id") for t in
                        study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))})
            if self.backend is None:
                results = optuna_search(study, self.supernet.space, self.evaluate, max(0, trials - done),
                                        objectives, constraints)
            elif trials > done:  # Ray Tune trials; OptunaSearch reopens the study with this sampler
                if self.screening is not None:  # a Tune trial is one evaluation: no first look
                    summary["fidelity"] = "full (Ray Tune trials evaluate each mode in full)"
                completed = self.backend.optuna_trials(study, make_sampler(sampler, seed), trials - done, objectives,
                                                       constraints)
                results = [self._stored(mode, fresh) for mode, fresh in completed]
                summary["failed_trials"] = self.backend.failed_trials
            else:
                results = []
            summary.update({"trials": len(study.get_trials(deepcopy=False)), "new_trials": len(results),
                            "front": sorted({str(t.user_attrs.get("mode_id")) for t in full_fidelity_front(study)})})
        return results, study

    def exact_costs(self, objectives: Sequence[str]) -> dict[str, Exact]:
        """The objectives the predictor strategy need not learn: MACs and modelled energy of a static
        mode (what the evaluator stores), latency where this search predicts it from a lookup table."""
        exact: dict[str, Exact] = {}
        if not self.supernet.dynamic_cost:  # an input-dependent cost is measured per sample: learned
            if "macs" in objectives:
                exact["macs"] = lambda mode: float(self.supernet.cost(mode).macs)
            if "energy" in objectives:
                exact["energy"] = lambda mode: mode_energy_mj(self.supernet, mode, self.device)
        if "latency" in objectives and self.latency_predictor is not None:
            predictor = self.latency_predictor
            exact["latency"] = lambda mode: predictor(mode).ms
        return exact

    def predictor_hints(self) -> dict[str, Exact]:
        """Exact quantities the predictor strategy's models may use as features of what they learn:
        a static mode's MACs (accuracy and latency both fall with the work left), and, where latency is
        measured and the device has a lookup table for this supernet, the table's estimate of it."""
        hints: dict[str, Exact] = {}
        if not self.supernet.dynamic_cost:
            hints["macs"] = lambda mode: float(self.supernet.cost(mode).macs)
        if self.plan_table is not None:
            planner = LatencyPredictor(self.supernet, self.plan_table)
            hints["latency"] = lambda mode: planner(mode).ms
        return hints

    def predictor(self, trials: int, objectives: Sequence[str], constraints: Constraints = Constraints(),
                  seed: int = 0, init: str = "random", init_size: int | None = None, batch: int = 10,
                  name: str | None = None) -> tuple[list[StoredEvaluation], Study]:
        """Predictor-guided search (`search._predictor`) until the study holds `trials` distinct
        modes: an initial design (`init`: random modes with full and smallest, or Algorithm 2's
        first evaluations), then rounds that fit the model on every earlier round, evolve on its
        predictions and evaluate a batch of `batch` for real (fanned out by the backend). Every
        trial carries its round; a resumed search re-plans the unfinished round from the rounds
        before it, so it evaluates what an uninterrupted one would."""
        if trials < 1:
            raise InputError(f"trials must be >= 1, got {trials}")
        objectives = check_objectives(objectives)
        settings = PredictorSettings(budget=trials, init=init, init_size=min(20, trials) if init_size is None else
                                     init_size, batch=batch, seed=seed)
        self.require_latency("latency" in objectives or constraints.max_latency_ms is not None)
        if constraints.max_latency_ms is not None and "latency" not in objectives:
            raise InputError("a latency budget needs latency among the objectives (the predictor must predict it)")
        strategy = "predictor"
        named = {"seed": seed, "objectives": ",".join(objectives), "init": init, "init_size": settings.init_size,
                 "batch": batch, **{k: v for k, v in asdict(constraints).items() if v is not None}}
        record, study = self._start(name, strategy, named, objectives, make_sampler("random", seed))
        space, exact = self.supernet.space, self.exact_costs(objectives)
        limits = Limits(constraints.min_accuracy, constraints.max_latency_ms)
        fresh: list[StoredEvaluation] = []
        in_study = {t.user_attrs["mode_id"] for t in distinct_trials(study)}

        def run(modes: Sequence[Mode], round_number: int, predicted: Sequence[dict] | None = None,
                info: dict | None = None) -> None:
            todo = [(i, mode) for i, mode in enumerate(modes) if mode.id not in in_study]
            timed = self.timed_batch([mode for _, mode in todo])
            for (i, mode), (result, started, finished) in zip(todo, timed, strict=True):
                attrs: dict[str, object] = {"strategy": strategy, "round": round_number}
                if predicted is not None:
                    attrs["predicted"] = predicted[i]
                if info is not None and not any(m.id in in_study for m in modes):
                    attrs["predictor_round"] = info  # on the round's first trial
                record_trial(study, space, mode, result, objectives, constraints, attrs, started, finished)
                in_study.add(mode.id)
                fresh.append(result)

        with recorded(self.store, record.name) as summary:
            if settings.init == "random":
                run(initial_design(space, settings.init_size, seed), 0)
            else:
                self._dse_design(settings.init_size, objectives, constraints, run)
            predictor_rounds_loop(space, objectives, settings, exact, limits, lambda: self._rounds(study, objectives), run,
                                  self.predictor_hints())
            summary.update({"trials": len(distinct_trials(study)), "new_trials": len(fresh),
                            "rounds": predictor_rounds(study, objectives),
                            "front": sorted({str(t.user_attrs.get("mode_id")) for t in full_fidelity_front(study)})})
        return fresh, study

    @staticmethod
    def _rounds(study: Study, objectives: Sequence[str]) -> list[tuple[int, Mode, dict[str, float]]]:
        return [(int(t.user_attrs.get("round", 0)), Mode.from_json(t.user_attrs["mode_json"]),
                 dict(zip(objectives, t.values, strict=True))) for t in distinct_trials(study)]

    def _dse_design(self, size: int, objectives: Sequence[str], constraints: Constraints,
                    run: Callable[[Sequence[Mode], int], None]) -> None:
        """Round 0 from Algorithm 2's walk from the full network (cost: the first cost objective):
        its evaluations in order until `size` (the iteration that reaches it is cut there; stored
        evaluations make a re-walk free)."""
        cost = next(o for o in objectives if o != "accuracy")
        evaluated = 0

        class Enough(Exception):
            pass

        def evaluate(modes: Sequence[Mode]) -> list[StoredEvaluation]:
            nonlocal evaluated
            room = size - evaluated
            run(modes[:room], 0)
            evaluated += min(room, len(modes))
            if evaluated >= size:
                raise Enough
            return self.evaluate_batch(modes)  # from the store now

        try:
            greedy_dse(self.supernet.space, self.supernet.full_mode(), evaluate, constraints.min_accuracy or 0.0, cost)
        except Enough:
            pass


@dataclass
class Recorder:
    """The recorded search `SearchSession.search` yields: `evaluate(modes)` evaluates and records."""

    session: SearchSession
    study: optuna.Study
    objectives: list[str]
    constraints: Constraints
    strategy: str
    summary: dict
    fresh: list[StoredEvaluation] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.in_study = {t.user_attrs.get("mode_id") for t in self.study.get_trials(deepcopy=False)}

    def evaluate(self, modes: Sequence[Mode], attrs: dict | None = None) -> list[StoredEvaluation]:
        """Evaluate modes (side by side on a Ray backend); each new one becomes a trial of the study."""
        timed = self.session.timed_batch(modes)
        for mode, (result, started, finished) in zip(modes, timed, strict=True):
            if mode.id not in self.in_study:
                record_trial(self.study, self.session.supernet.space, mode, result, self.objectives, self.constraints,
                             {"strategy": self.strategy, **(attrs or {})}, started, finished)
                self.in_study.add(mode.id)
                self.fresh.append(result)
        return [result for result, _, _ in timed]
