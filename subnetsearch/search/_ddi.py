"""The DDI family's training-time knob: the skip target.

A trial trains the gates of a fresh DDI network from a trained plain backbone toward one skip target
(the paper's two IADI steps: gates alone toward zero skipping with the backbone frozen, then jointly
toward the target) and scores it by validation accuracy (hard gates, threshold 0.5) and mean
per-sample MACs (gates included). Its checkpoint is written under the search's output folder, named
by the target and the content hash, and recorded on the Optuna trial with the cost profile; the
runtime knobs (gate threshold, exit budget) of any trial's network are then searched, stored and
queried by `subnetsearch search` like any supernet.

`SkipTargetSearch` is the search (`run_training_search` runs its trials here, one after another, or
through `subnetsearch.distributed.RayTrials` as Ray Tune trials: the same trial either way).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna

from subnetsearch.data import Splits
from subnetsearch.errors import InputError
from subnetsearch.search._training import TrainingSearch, TrialOutcome
from subnetsearch.spaces import Knob, SearchSpace, to_optuna
from subnetsearch.supernets import BaseSupernet, Checkpoint, DDISupernet, checkpoint_bytes
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


class SkipTargetSearch(TrainingSearch):
    """DDI's skip target as a training-time search: each trial trains a gated copy of the plain
    backbone toward a sampled target (`train_to_target`; accuracy up, mean MACs down) and writes its
    checkpoint under the search's output folder, its result kept on its Optuna trial."""

    def __init__(self, base: Checkpoint, base_path: Path, recipe: DDIRecipe, low: float, high: float) -> None:
        super().__init__(base, base_path)
        if recipe.gating == "none":
            raise InputError("a skip-target search needs gates: gating mgl2s, layer or channel")
        if not 0 <= low < high < 1:
            raise InputError(f"the target range must be two numbers 0 <= low < high < 1, got {low}, {high}")
        self.strategy = f"ddi-skip-target-{recipe.gating}"
        self.recipe, self.low, self.high = recipe, low, high

    @property
    def space(self) -> SearchSpace:
        return skip_target_space(self.low, self.high)

    def settings(self) -> dict:
        recipe = self.recipe
        return {"gating": recipe.gating, "gate_epochs": recipe.gate_epochs, "joint_epochs": recipe.joint_epochs,
                "alpha": recipe.alpha, "lr": recipe.lr, "resource": recipe.resource,
                "target_range": [self.low, self.high]}

    def default_name(self) -> str:
        recipe = self.recipe
        return (f"ddi-cifar-resnet-{self.base.hash[:8]}/skip-target-{recipe.gating}/joint={recipe.joint_epochs},"
                f"lr={recipe.lr}" + ("" if recipe.resource == "macs" else f",resource={recipe.resource}"))

    def trial(self, params: Mapping[str, Any], network: BaseSupernet, splits: Splits) -> TrialOutcome:
        if not isinstance(network, DDISupernet):
            raise InputError(f"a skip-target search starts from a DDI backbone, not a {type(network).__name__}")
        result, content = train_to_target(network, splits, self.recipe, params["skip_target"], self.base.data)
        return TrialOutcome(result.accuracy, result.mean_macs, result.user_attrs(), {result.checkpoint: content},
                            path_key="checkpoint")

    def results(self, study: optuna.Study) -> list[SkipTargetResult]:
        return stored_results(study)


def stored_results(study: optuna.Study) -> list[SkipTargetResult]:
    """Every completed skip-target trial of a study."""
    keys = ("mean_macs", "skip_ratio", "cost_profile", "checkpoint")
    return [SkipTargetResult(trial.params["skip_target"], trial.values[0], **{k: trial.user_attrs[k] for k in keys})
            for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if all(k in trial.user_attrs for k in keys)]
