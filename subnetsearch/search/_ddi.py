"""The DDI family's training-time knob: the skip target.

A trial trains the gates of a fresh DDI network from a trained plain backbone toward one skip target
(the paper's two IADI steps: gates alone toward zero skipping with the backbone frozen, then jointly
toward the target) and scores it by validation accuracy (hard gates, threshold 0.5) and mean
per-sample MACs (gates included). Its checkpoint is written under the search's output folder, named
by the target and the content hash, and recorded on the Optuna trial with the cost profile; the
runtime knobs (gate threshold, exit budget) of any trial's network are then searched, stored and
queried by `subnetsearch search` like any supernet.

`skip_target_search` runs the trials here, one after another; `subnetsearch.distributed.tune_ddi`
runs the same trial function as Ray Tune trials.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import optuna

from subnetsearch.data import Splits
from subnetsearch.files import write_atomically
from subnetsearch.search._optuna import ask_and_tell
from subnetsearch.spaces import Knob, SearchSpace, to_optuna
from subnetsearch.supernets import DDISupernet, checkpoint_bytes
from subnetsearch.trainers import DDIRecipe, evaluate_accuracy, train_gated


@dataclass(frozen=True)
class SkipTargetResult:
    """One trial: the target, what the trained gates did on the validation split, and the checkpoint."""

    skip_target: float
    accuracy: float
    mean_macs: float
    skip_ratio: float
    cost_profile: dict
    checkpoint: str

    def user_attrs(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("skip_target", "accuracy")}


def skip_target_space(low: float, high: float) -> SearchSpace:
    """The training-time knob of a skip-target search: the skip ratio the gates are trained toward."""
    return SearchSpace([Knob("skip_target", "float", (low, high), runtime=False)], context={"search": "ddi-skip"})


def skip_target_distributions(low: float, high: float) -> dict:
    """The Optuna distributions of `skip_target_space`."""
    return to_optuna(skip_target_space(low, high))


def train_to_target(plain: DDISupernet, splits: Splits, recipe: DDIRecipe, target: float,
                    data: dict) -> tuple[SkipTargetResult, bytes]:
    """Train a gated copy of `plain` toward `target` through the recipe's phases (`train_gated`); the
    result (its `checkpoint` is the path relative to the search's output folder, where the caller
    writes the returned checkpoint bytes)."""
    supernet, _ = train_gated(plain, splits, recipe, target)
    with supernet.recording_costs() as records:
        accuracy = evaluate_accuracy(supernet, splits, splits.val)
    profile = supernet.cost_profile(records)
    content, digest = checkpoint_bytes(supernet, {**asdict(recipe), "skip_target": target}, data,
                                       {"val_acc": accuracy, "cost_profile": profile})
    result = SkipTargetResult(target, accuracy, profile["mean_macs"], profile["skip_ratio"], profile,
                              f"skip-{target:.3f}-{digest[:8]}/supernet.pt")
    return result, content


def skip_target_search(plain: DDISupernet, splits: Splits, data: dict, study: optuna.Study, trials: int,
                       low: float, high: float, recipe: DDIRecipe, out: Path,
                       on_trial: Callable[[SkipTargetResult], None] | None = None) -> list[SkipTargetResult]:
    """`trials` skip-target trials sampled by the study's sampler (accuracy up, mean MACs down), run
    here; each trial's checkpoint is written under `out` and its result kept on its Optuna trial."""

    def run(params: dict) -> tuple[list[float], dict, SkipTargetResult]:
        result, content = train_to_target(plain, splits, recipe, params["skip_target"], data)
        result = replace(result, checkpoint=str(write_atomically(out / result.checkpoint, content).resolve()))
        if on_trial:
            on_trial(result)
        return [result.accuracy, result.mean_macs], result.user_attrs(), result

    return ask_and_tell(study, skip_target_distributions(low, high), trials, run)


def stored_results(study: optuna.Study) -> list[SkipTargetResult]:
    """Every completed skip-target trial of a study."""
    keys = ("mean_macs", "skip_ratio", "cost_profile", "checkpoint")
    return [SkipTargetResult(trial.params["skip_target"], trial.values[0], **{k: trial.user_attrs[k] for k in keys})
            for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if all(k in trial.user_attrs for k in keys)]
