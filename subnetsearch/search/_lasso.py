"""Subnet generation for the non-uniform family, and the search over its training-time knobs.

A generation trial takes the trained full network (1x1-shortcut ResNet), fine-tunes a copy with the
clipped group-Lasso penalty for (lambda, a) (or plain group-Lasso), counts the surviving channels of
every slot (`count_channels`), and scores the pruned subnet: its channels sorted by norm (the
survivors come first), the subnet is the first c channels of each slot, its BN statistics are
recalibrated on training images, and its validation accuracy and MACs are the trial's objectives.
On CPU the default fine-tune is one epoch from the trained full network instead of the paper's training from scratch.

`LassoSearch` is the search (`run_training_search` runs its trials with an Optuna multi-objective
sampler, here or as Ray Tune trials; study in the project's storage, visible in the Optuna
dashboard) and `pick_subnets` chooses N subnets from its front, spread over MACs, for fused
training.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, cast

import optuna

from subnetsearch.data import Splits
from subnetsearch.errors import InputError
from subnetsearch.pareto import nondominated
from subnetsearch.search._evaluator import EvaluationSettings, calibration_batches
from subnetsearch.search._training import TrainingSearch, TrialOutcome
from subnetsearch.spaces import Knob, SearchSpace, to_optuna
from subnetsearch.supernets import (
    BaseSupernet,
    Checkpoint,
    LassoSupernet,
    build_supernet,
    build_supernet_of,
    calibrated_bn,
    scaled_channels,
    uniform_match,
)
from subnetsearch.trainers import (
    NEAR_ZERO,
    LassoRecipe,
    Penalty,
    count_channels,
    evaluate_accuracy,
    init_from_full,
    sort_channels,
    train_lasso,
)

LAMBDA_RANGE = (0.01, 3.0)  # log-uniform: with one fine-tune epoch, lambda < ~0.1 prunes little
A_RANGE = (0.1, 2.0)


@dataclass(frozen=True)
class GeneratedSubnet:
    """One generation trial's result: the subnet's architecture and how it scored."""

    penalty: str
    lam: float
    a: float
    channels: list[int]
    macs: int
    params: int
    accuracy: float  # validation accuracy of the pruned subnet, BN recalibrated, before fused training
    forced: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


def pruned_accuracy(full: LassoSupernet, channels: Sequence[int], splits: Splits,
                    settings: EvaluationSettings) -> tuple[float, LassoSupernet]:
    """Accuracy of the first `channels` of each slot of `full` (sorted by norm), BN recalibrated."""
    arch = {**full.arch, "subnets": [{"name": "pruned", "channels": list(channels)}]}
    if list(channels) == list(full.configs[0]):
        arch["subnets"] = []
    pruned = build_supernet_of(LassoSupernet, arch)
    init_from_full(pruned, full)
    mode = pruned.smallest_mode()
    with calibrated_bn(pruned, mode, calibration_batches(splits, settings)):
        accuracy = evaluate_accuracy(pruned, splits, splits.val, max_batches=settings.max_eval_batches)
    return accuracy, pruned


def generate_subnet(full: LassoSupernet, splits: Splits, penalty: str, lam: float, a: float, recipe: LassoRecipe,
                    settings: EvaluationSettings = EvaluationSettings(), threshold: float = NEAR_ZERO,
                    progress: Callable[[dict], None] | None = None) -> GeneratedSubnet:
    """Fine-tune a copy of the trained full network with the penalty and read off its subnet."""
    if len(full.configs) != 1:
        raise InputError("subnet generation starts from a full network without subnets (`subnetsearch lasso base`)")
    network = copy.deepcopy(full)
    train_lasso(network, splits, replace(recipe, penalty=cast(Penalty, penalty), lam=lam, a=a, configs=(0,)), None, {},
                progress=progress, eval_batches=1)
    count = count_channels(network, threshold)
    sort_channels(network)
    accuracy, pruned = pruned_accuracy(network, count.channels, splits, settings)
    cost = pruned.cost(pruned.smallest_mode())
    return GeneratedSubnet(penalty, lam, a, count.channels, cost.macs, cost.params, round(accuracy, 5), count.forced)


def lasso_space(penalty: str, lambda_range: tuple[float, float] = LAMBDA_RANGE) -> SearchSpace:
    """The training-time knobs of a generation trial: lambda (log-uniform) and, for the clipped
    penalty, a."""
    knobs = [Knob("lam", "float", tuple(lambda_range), runtime=False, log=True)]
    if penalty == "clipped":
        knobs.append(Knob("a", "float", A_RANGE, runtime=False))
    return SearchSpace(knobs, context={"search": f"lasso-{penalty}"})


def lasso_distributions(penalty: str, lambda_range: tuple[float, float] = LAMBDA_RANGE) -> dict:
    """The Optuna distributions of `lasso_space`."""
    return to_optuna(lasso_space(penalty, lambda_range))


class LassoSearch(TrainingSearch):
    """Subnet generation as a training-time search: each trial fine-tunes the base full network with
    the penalty at a sampled lambda (and a, for the clipped penalty: Eq. 3), counts the surviving
    channels and scores the pruned network (accuracy up, MACs down); the subnet is kept on its Optuna
    trial, so the study alone holds the search's results."""

    def __init__(self, base: Checkpoint, base_path: Path, penalty: str, recipe: LassoRecipe,
                 settings: EvaluationSettings, threshold: float = NEAR_ZERO,
                 lambda_range: tuple[float, float] = LAMBDA_RANGE) -> None:
        super().__init__(base, base_path)
        if penalty not in ("clipped", "group"):
            raise InputError(f"the penalty must be clipped or group, got {penalty!r}")
        if not threshold > 0:
            raise InputError(f"the threshold must be > 0, got {threshold}")
        if not 0 < lambda_range[0] < lambda_range[1]:
            raise InputError(f"the lambda range must be two numbers 0 < low < high, got {lambda_range}")
        self.strategy = f"lasso-{penalty}"
        self.penalty, self.recipe, self.evaluation, self.threshold = penalty, recipe, settings, threshold
        self.lambda_range = lambda_range

    @property
    def space(self) -> SearchSpace:
        return lasso_space(self.penalty, self.lambda_range)

    def settings(self) -> dict:
        return {"penalty": self.penalty, "epochs": self.recipe.epochs, "lr": self.recipe.lr,
                "threshold": self.threshold, "lambda_range": list(self.lambda_range)}

    def default_name(self) -> str:
        # named after the family the checkpoint was written as (a legacy one keeps the name it resumes by)
        return (f"{self.base.arch['family']}-{self.base.hash[:8]}/lasso-{self.penalty}/epochs={self.recipe.epochs},"
                f"lr={self.recipe.lr},threshold={self.threshold:g}")

    def trial(self, params: Mapping[str, Any], network: BaseSupernet, splits: Splits) -> TrialOutcome:
        if not isinstance(network, LassoSupernet):
            raise InputError(f"subnet generation needs a lasso-family network, not a {type(network).__name__}")
        subnet = generate_subnet(network, splits, self.penalty, params["lam"], params.get("a", 1.0), self.recipe,
                                 self.evaluation, self.threshold)
        return TrialOutcome(subnet.accuracy, subnet.macs, subnet.to_dict())

    def results(self, study: optuna.Study) -> list[GeneratedSubnet]:
        return stored_subnets(study)


def stored_subnets(study: optuna.Study) -> list[GeneratedSubnet]:
    """Every completed generation trial of a study, as subnets."""
    fields = GeneratedSubnet.__dataclass_fields__
    return [GeneratedSubnet(**{key: trial.user_attrs[key] for key in fields})
            for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if all(key in trial.user_attrs for key in fields)]


def subnet_front(subnets: Sequence[GeneratedSubnet]) -> list[GeneratedSubnet]:
    """The (accuracy, MACs) Pareto front of generation trials."""
    mask = nondominated([[s.accuracy, s.macs] for s in subnets], ["accuracy", "macs"])
    return [s for s, keep in zip(subnets, mask, strict=True) if keep]


def pick_subnets(subnets: Sequence[GeneratedSubnet], count: int, full_macs: int) -> list[GeneratedSubnet]:
    """`count` subnets of the (accuracy, MACs) Pareto front, spread over MACs: for targets at equal
    steps of log-MACs between the front's smallest subnet and the full network, the front member
    closest to each (no repeats), returned from largest to smallest."""
    front = [s for s in subnet_front(subnets) if s.macs < full_macs]
    unique = {tuple(s.channels): s for s in sorted(front, key=lambda s: -s.accuracy)}
    front = sorted(unique.values(), key=lambda s: s.macs)
    if len(front) <= count:
        return front[::-1]
    low, high = math.log(front[0].macs), math.log(full_macs)
    chosen: list[GeneratedSubnet] = []
    for step in range(count):
        target = low + (high - low) * step / count
        candidates = [s for s in front if s not in chosen]
        chosen.append(min(candidates, key=lambda s: abs(math.log(s.macs) - target)))
    return sorted(chosen, key=lambda s: -s.macs)


def fused_supernet(full: LassoSupernet, generated: Sequence[GeneratedSubnet], uniform: bool = False,
                   scales: Sequence[float] = ()) -> tuple[LassoSupernet, str]:
    """The supernet fused training starts from (Algorithm 1 over subnets): the generated subnets'
    channel counts (or, with `uniform`, uniform widths matching each one's MACs: the slimmable
    baseline), plus Section V-A's subnets between the smallest one and the full network (every slot
    of the smallest scaled by each ratio in `scales`), largest first, duplicates and the full network
    itself dropped; initialized from `full` with its channels sorted strongest first (what each
    subnet keeps). Returns the supernet and its method name. An ArchError if they cannot share one."""
    if uniform:
        channels = [uniform_match(full, subnet.macs) for subnet in generated]
        method = "uniform"
    else:
        channels = [list(subnet.channels) for subnet in generated]
        method = f"{generated[0].penalty}-lasso"
    full_channels = tuple(full.configs[0])
    smallest = min(channels, key=lambda c: full.cost_of(c).macs)
    channels = [*channels, *(scaled_channels(smallest, full_channels, r) for r in scales)]
    unique = sorted({tuple(c) for c in channels if tuple(c) != full_channels}, key=lambda c: -full.cost_of(c).macs)
    entries = [{"name": f"subnet{len(unique) - i}", "channels": list(c)} for i, c in enumerate(unique)]
    supernet = build_supernet({**full.arch, "method": method, "subnets": entries})
    assert isinstance(supernet, LassoSupernet)
    sort_channels(full)  # the first c channels of every slot are its strongest: what the subnets keep
    init_from_full(supernet, full)
    return supernet, method
