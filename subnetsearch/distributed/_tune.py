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
import tempfile
from collections.abc import Sequence
from typing import Any

import optuna
from ray import tune
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from subnetsearch.distributed._workers import WorkerSpec, build_evaluator, evaluate_counted
from subnetsearch.search._optuna import OBJECTIVES, Constraints, objective_values
from subnetsearch.spaces import SearchSpace
from subnetsearch.spaces._optuna import mode_from_params, to_optuna
from subnetsearch.supernets._checkpoint import Checkpoint

# Tune's CSV/JSON/TensorBoard loggers write every result to disk; the store and the study hold them.
# The result grid then cannot read them back from disk and says so; the searcher keeps what is needed.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
# Tune's newer console output prints its experiment table and scratch path even at verbose=0; the
# search command prints its own progress.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)

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
        if ot_trial is not None and result and "mode_id" in result and not error:
            self.completed.append(result)
            ot_trial.set_user_attr("mode_id", result["mode_id"])
            ot_trial.set_user_attr("mode_json", result["mode_json"])
            ot_trial.set_user_attr("ray_trial_id", trial_id)
            if result.get("node"):
                ot_trial.set_user_attr("node", result["node"])
            for key, value in json.loads(result["constraints_json"]).items():
                ot_trial.set_constraint(key, value)
        super().on_trial_complete(trial_id, result, error)


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


def tune_search(study: optuna.Study, storage_url: str, sampler: optuna.samplers.BaseSampler, space: SearchSpace,
                checkpoint: Checkpoint, spec: WorkerSpec, meter: Any, trials: int, objectives: Sequence[str],
                constraints: Constraints, concurrency: int, cpus_per_trial: float,
                max_failures: int) -> tuple[list[dict], list[str]]:
    """Run `trials` Tune trials whose Optuna trials land in `study` (already created by the caller
    with its names and attributes; OptunaSearch reopens it). Returns the completed trials' results
    and the errors of the trials that failed after their retries."""
    searcher = RecordingOptunaSearch(
        space=to_optuna(space), metric=list(objectives), mode=["max" if OBJECTIVES[o] == "maximize" else "min"
                                                               for o in objectives],
        sampler=sampler, study_name=study.study_name, storage=optuna.storages.RDBStorage(storage_url))
    trainable = tune.with_resources(
        tune.with_parameters(_trial, checkpoint=checkpoint, spec=spec, meter=meter, space=space,
                             objectives=list(objectives), constraints=constraints),
        {"cpu": cpus_per_trial})
    scratch = tempfile.mkdtemp(prefix="subnetsearch-tune-")  # Tune's experiment files; the study is the record
    try:
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, max_concurrent=concurrency),
                                        num_samples=trials, reuse_actors=True),
            run_config=tune.RunConfig(name="search", storage_path=scratch, verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=max_failures)))
        grid = tuner.fit()
        return searcher.completed, [str(error).strip() for error in grid.errors]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
