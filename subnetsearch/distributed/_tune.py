"""Optuna multi-objective search run as Ray Tune trials.

Tune's `OptunaSearch` drives the sampler against the study in the project's storage URL (so the Optuna
dashboard shows the search live and a local search of the same name continues it); a
`ConcurrencyLimiter` keeps as many trials in flight as the cluster has trial slots; each trial
declares its CPUs and runs one torch thread per CPU. A trial evaluates one mode with the same cached
evaluator as every other search (store reads and writes included) and reports the objectives, its
mode and its constraint values; the searcher records those on the Optuna trial. A trial whose process
or node dies is retried by Tune's failure config; a retried evaluation that had been stored is served
from the store, so nothing is computed or stored twice.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from ray import tune
from ray.tune.search import ConcurrencyLimiter, Searcher
from ray.tune.search.optuna import OptunaSearch

from subnetsearch.distributed._workers import WorkerSpec, build_evaluator, evaluate_counted
from subnetsearch.search import DUPLICATE_OF, OBJECTIVES, Constraints, TrainingSearch, objective_values, set_constraints
from subnetsearch.spaces import SearchSpace, mode_from_params, to_optuna
from subnetsearch.supernets import Checkpoint

# Tune's CSV/JSON/TensorBoard loggers write every result to disk; the store and the study hold them.
# The result grid then cannot read them back from disk and says so; the searcher keeps what is needed.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
# Tune's newer console output prints its experiment table and scratch path even at verbose=0; the
# search command prints its own progress.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
# A failed trial attempt is retried (FailureConfig); Tune would log each attempt's full traceback at
# ERROR level although the search goes on. `RetryNotice` says it in one line instead, and trials that
# fail for good are reported by the search command with their error.
os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
SCRATCH_PREFIX = "subnetsearch-tune-"  # Tune's experiment files, in the temp folder: <prefix><driver pid>-...

_EVALUATORS: dict[tuple, Any] = {}  # per trial process (Tune reuses trial actors): supernet and data load once


class RecordingOptunaSearch(OptunaSearch):
    """OptunaSearch that also records what the project's other searches record on each Optuna trial:
    the mode (id and JSON), the Ray trial id and node, and the constraint values the samplers use.
    `completed` keeps the results of the trials that completed, in order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.completed: list[dict] = []

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None and result and not error:
            self.completed.append(result)
            ot_trial.set_user_attr("ray_trial_id", trial_id)
            for key in ("mode_id", "mode_json", "node"):
                if result.get(key):
                    ot_trial.set_user_attr(key, result[key])
            for key, value in json.loads(result.get("user_attrs_json", "{}")).items():
                ot_trial.set_user_attr(key, value)
            set_constraints(ot_trial, json.loads(result.get("constraints_json", "{}")))
        super().on_trial_complete(trial_id, result, error)


class DistinctModeSearch(RecordingOptunaSearch):
    """Every Tune trial a mode the study does not have yet: a proposal of a mode some trial already
    holds (complete, or in flight on another worker) is recorded PRUNED with `duplicate_of` and the
    sampler asked again, as the local loop does. A resumed seeded search re-proposes its first modes
    and skips them this way, so `--trials N` still ends with N distinct modes. Finishes once every
    mode of the space is taken."""

    def __init__(self, *args: Any, modes: SearchSpace, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.modes = modes

    def suggest(self, trial_id: str) -> dict | None:
        study = self._ot_study
        if study is None:
            raise RuntimeError("the Optuna study is not set up (set_search_properties was not called)")
        # the modes the study has or is evaluating, read once per suggestion (every duplicate drawn
        # below is told PRUNED, so it joins no mode)
        taken = {t.user_attrs["mode_id"]: t.number for t in study.get_trials(deepcopy=False)
                 if "mode_id" in t.user_attrs and DUPLICATE_OF not in t.user_attrs
                 and t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING)}
        for _ in range(1000):
            config = super().suggest(trial_id)
            if not isinstance(config, dict):
                return config
            ot_trial = self._ot_trials[trial_id]
            mode = mode_from_params(self.modes, config)
            ot_trial.set_user_attr("mode_id", mode.id)
            if mode.id not in taken:
                return config
            ot_trial.set_user_attr(DUPLICATE_OF, taken[mode.id])
            study.tell(ot_trial, state=optuna.trial.TrialState.PRUNED)
            del self._ot_trials[trial_id]
            if len(taken) >= self.modes.size:
                break
        return Searcher.FINISHED


def _trial(config: dict, checkpoint: Checkpoint, spec: WorkerSpec, meter: Any, space: SearchSpace,
           objectives: Sequence[str], constraints: Constraints) -> None:
    key = (checkpoint.hash, repr(spec))
    if key not in _EVALUATORS:
        _EVALUATORS[key] = build_evaluator(checkpoint, spec, meter)
    mode = mode_from_params(space, config)
    record, fresh = evaluate_counted(_EVALUATORS[key], mode.to_json())
    values = objective_values(record, objectives)
    tune.report({**dict(zip(objectives, values, strict=True)), "mode_id": mode.id, "mode_json": mode.to_json(),
                 "constraints_json": json.dumps(constraints.values(record)), "fresh": fresh,
                 "node": (record.latency or {}).get("node", "")})


class RetryNotice(tune.Callback):
    """One line on stderr per failed trial attempt that Tune retries (instead of a traceback)."""

    def __init__(self, max_failures: int) -> None:
        self.max_failures = max_failures

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = trial.get_error()
        reason = str(error).strip().splitlines()[-1][:200] if error else "its process or node died"
        print(f"trial {trial.trial_id} failed ({reason}); retrying it (failure {trial.num_failures} of at most "
              f"{self.max_failures})", file=sys.stderr, flush=True)


def remove_stale_scratch(folder: str | None = None) -> list[Path]:
    """Remove the Tune scratch folders of drivers that are gone (killed before they could clean up);
    a running driver's folder is kept. Returns what was removed."""
    removed = []
    for path in Path(folder or tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*"):
        pid = path.name[len(SCRATCH_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _run(trainable: Any, searcher: RecordingOptunaSearch, trials: int, concurrency: int, cpus_per_trial: float,
         max_failures: int) -> tuple[list[dict], list[str]]:
    """Tune `trials` trials of `trainable` (each declaring `cpus_per_trial` CPUs), at most
    `concurrency` at a time, each retried `max_failures` times if its process or node dies. Tune's
    experiment files go to a scratch folder removed afterwards (the study is the record); one left by
    a killed driver is removed by the next search."""
    remove_stale_scratch()
    scratch = tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-")
    try:
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": cpus_per_trial}),
            tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, max_concurrent=concurrency),
                                        num_samples=trials, reuse_actors=True),
            run_config=tune.RunConfig(name="search", storage_path=scratch, verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=max_failures),
                                      callbacks=[RetryNotice(max_failures)]))
        grid = tuner.fit()
        return searcher.completed, [str(error).strip() for error in grid.errors]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _network_and_data(search: TrainingSearch, threads: int) -> tuple[Any, Any]:
    """A training trial's starting network and its data, loaded once per trial process (Tune reuses
    trial actors); torch runs `threads` threads."""
    import torch

    torch.set_num_threads(threads)
    key = (search.base.hash, "network")
    if key not in _EVALUATORS:
        _EVALUATORS[key] = search.network_and_data()
    return _EVALUATORS[key]


class _FileSink:
    """Writes trial files on the machine that runs the search (trials may run on other nodes)."""

    def __init__(self, root: str) -> None:
        self.root = root

    def write(self, relative: str, content: bytes) -> str:
        from subnetsearch.files import write_atomically

        return str(write_atomically(Path(self.root) / relative, content).resolve())


def _training_trial(config: dict, search: TrainingSearch, sink: Any, threads: int) -> None:
    """One Tune trial of a training-time search: the same `search.trial` a local search runs."""
    import ray

    network, splits = _network_and_data(search, threads)
    outcome = search.trial(config, network, splits)
    attrs = dict(outcome.attrs)
    for relative, content in outcome.files.items():
        written = ray.get(sink.write.remote(relative, content))
        if outcome.path_key is not None:
            attrs[outcome.path_key] = written
    tune.report({"accuracy": outcome.accuracy, "macs": outcome.macs,
                 "node": ray.get_runtime_context().get_node_id(), "user_attrs_json": json.dumps(attrs)})


def tune_training(search: TrainingSearch, study: optuna.Study, url: str, sampler: optuna.samplers.BaseSampler,
                  trials: int, out: Path | None, slots: int, threads: int, max_failures: int) -> list[str]:
    """`trials` trials of a training-time search as Ray Tune trials on `study` (`slots` at a time);
    files a trial writes land under `out` on this machine. The errors of trials that failed for good."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    sink = (ray.remote(num_cpus=0)(_FileSink).options(scheduling_strategy=here).remote(str(out.resolve()))
            if out is not None else None)
    searcher = RecordingOptunaSearch(space=to_optuna(search.space), metric=["accuracy", "macs"], mode=["max", "min"],
                                     sampler=sampler, study_name=study.study_name,
                                     storage=optuna.storages.RDBStorage(url))
    trainable = tune.with_parameters(_training_trial, search=search, sink=sink, threads=threads)
    try:
        return _run(trainable, searcher, trials, slots, threads, max_failures)[1]
    finally:
        if sink is not None:
            ray.kill(sink)  # type: ignore[arg-type]  # an actor handle


def tune_search(study: optuna.Study, storage_url: str, sampler: optuna.samplers.BaseSampler, space: SearchSpace,
                checkpoint: Checkpoint, spec: WorkerSpec, meter: Any, trials: int, objectives: Sequence[str],
                constraints: Constraints, concurrency: int, cpus_per_trial: float,
                max_failures: int) -> tuple[list[dict], list[str]]:
    """Run `trials` Tune trials whose Optuna trials land in `study` (already created by the caller
    with its names and attributes; OptunaSearch reopens it). Returns the completed trials' results
    and the errors of the trials that failed after their retries."""
    searcher = DistinctModeSearch(
        space=to_optuna(space), metric=list(objectives), mode=["max" if OBJECTIVES[o] == "maximize" else "min"
                                                               for o in objectives],
        sampler=sampler, study_name=study.study_name, storage=optuna.storages.RDBStorage(storage_url), modes=space)
    trainable = tune.with_parameters(_trial, checkpoint=checkpoint, spec=spec, meter=meter, space=space,
                                     objectives=list(objectives), constraints=constraints)
    return _run(trainable, searcher, trials, concurrency, cpus_per_trial, max_failures)
