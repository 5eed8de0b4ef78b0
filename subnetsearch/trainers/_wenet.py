"""WeNet training, Algorithm 1 of the paper: per iteration, accumulate the gradients of the full
network, the smallest sub-network and s-2 random sub-networks, then take one optimizer step."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from subnetsearch.data import Splits
from subnetsearch.spaces import Mode
from subnetsearch.supernets import WeNetSupernet, save_checkpoint
from subnetsearch.trainers._evaluate import evaluate_accuracy
from subnetsearch.trainers._loop import Schedule, fit, sgd, timeless

Sampling = Literal["independent", "uniform-stats"]


@dataclass(frozen=True)
class WeNetRecipe:
    """Training settings, saved with every checkpoint.

    samples_per_step (s): 4 by default on CPU. Each sub-network costs a full forward/backward (grouped
    convolutions are no cheaper to train here), so s is the direct multiplier of training time; the
    paper's s=20 would make one Fashion-MNIST epoch take about half an hour on 2 cores. s=4 keeps the
    full and smallest networks (the sandwich rule) plus two random ones.

    sampling: "independent" is the paper's (s-2 patterns with per-layer group counts drawn
    independently, all updating BN running statistics). "uniform-stats" draws the first random
    pattern as a uniform one (every layer at the same, random group count) and lets only uniform
    patterns (full, smallest, that one) update running statistics: each S-BN key then holds the
    statistics of the uniform mode with that group count, exact out of the box, instead of a mix
    polluted by the other layers' random patterns. Mixed modes are BN-calibrated when evaluated.

    distill: in-place distillation (US-Nets): sub-networks learn from the full network's detached
    soft predictions instead of the labels.
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    samples_per_step: int = 4
    sampling: Sampling = "uniform-stats"
    distill: bool = True
    augment: bool = True
    channels_last: bool = False  # measured slower for these narrow layers on this CPU
    seed: int = 0
    fixed_mode: str | None = None  # canonical JSON of a mode: train only that sub-network (a "twin")
    max_steps_per_epoch: int | None = None  # for quick runs and tests

    def __post_init__(self) -> None:
        if self.samples_per_step < 1:
            raise ValueError(f"samples_per_step must be >= 1, got {self.samples_per_step}")
        if self.sampling not in ("independent", "uniform-stats"):
            raise ValueError(f"sampling must be 'independent' or 'uniform-stats', got {self.sampling!r}")
        self.schedule()  # epochs, batch size, steps and learning rate checked there

    def schedule(self) -> Schedule:
        return Schedule(self.epochs, self.batch_size, self.lr, self.seed, self.augment, self.max_steps_per_epoch)


def sample_patterns(supernet: WeNetSupernet, recipe: WeNetRecipe, generator: torch.Generator) -> list[tuple[Mode, bool]]:
    """The sub-networks of one iteration, each with whether it may update BN running statistics."""
    if recipe.fixed_mode is not None:
        return [(Mode.from_json(recipe.fixed_mode), True)]
    patterns = [(supernet.full_mode(), True)]
    if recipe.samples_per_step >= 2:
        patterns.append((supernet.smallest_mode(), True))
    uniform_first = recipe.sampling == "uniform-stats"
    for index in range(recipe.samples_per_step - 2):
        if uniform_first and index == 0:
            choices = sorted({g for knob in supernet.space.knobs for g in knob.values})[1:-1] or [1]
            g = choices[int(torch.randint(len(choices), (1,), generator=generator))]
            patterns.append((supernet.uniform_mode(g), True))
        else:
            patterns.append((supernet.random_mode(generator), not uniform_first))
    return patterns


def train_step(supernet: WeNetSupernet, optimizer: torch.optim.Optimizer, images: torch.Tensor,
               labels: torch.Tensor, patterns: list[tuple[Mode, bool]], distill: bool) -> dict[str, float]:
    """One iteration of Algorithm 1 (lines 5-19): accumulate every pattern's gradient, step once."""
    optimizer.zero_grad(set_to_none=True)
    soft_targets = None
    losses = []
    correct_full = 0.0
    for index, (mode, track_stats) in enumerate(patterns):
        supernet.set_mode(mode)
        supernet.set_bn_tracking(track_stats)
        logits = supernet(images)
        if index > 0 and distill and soft_targets is not None:
            loss = F.kl_div(F.log_softmax(logits, 1), soft_targets, reduction="batchmean")
        else:
            loss = F.cross_entropy(logits, labels)
        if index == 0:
            soft_targets = F.softmax(logits.detach(), 1)
            correct_full = (logits.argmax(1) == labels).float().mean().item()
        loss.backward()
        losses.append(loss.item())
    supernet.set_bn_tracking(True)
    optimizer.step()
    return {"loss_full": losses[0], "loss_mean": sum(losses) / len(losses), "acc_full": correct_full}


def train_wenet(supernet: WeNetSupernet, splits: Splits, recipe: WeNetRecipe, out_dir: str | Path,
                data_spec: dict, progress: Callable[[dict], None] | None = None,
                resume: bool = True, on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Train with Algorithm 1 through the one training loop; writes `last.pt` (resumable) each
    epoch, `supernet.pt` at the end, and `train_log.jsonl` (one line of metrics per epoch) in
    `out_dir`. Returns the final metrics."""
    out_dir = Path(out_dir)
    torch.manual_seed(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed)
    optimizer = sgd(supernet, recipe.lr, recipe.momentum, recipe.weight_decay)
    memory_format = torch.channels_last if recipe.channels_last else torch.contiguous_format
    schedule = recipe.schedule()
    active = supernet.full_mode() if recipe.fixed_mode is None else Mode.from_json(recipe.fixed_mode)

    def step(images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        patterns = sample_patterns(supernet, recipe, generator)
        return train_step(supernet, optimizer, images.to(memory_format=memory_format), labels, patterns, recipe.distill)

    def evaluate() -> dict[str, float]:
        supernet.set_mode(active)
        return {"val_acc_active_mode": round(evaluate_accuracy(supernet, splits, splits.val), 5)}

    supernet.to(memory_format=memory_format)
    history = fit(supernet, splits, schedule, optimizer, step, evaluate, generator=generator, out_dir=out_dir,
                  checkpoint=supernet, recipe=asdict(recipe), data_spec=data_spec, resume=resume, progress=progress,
                  on_epoch=on_epoch)
    supernet.to(memory_format=torch.contiguous_format)
    supernet.set_mode(active)
    final = {"epochs": recipe.epochs, "history": history}
    save_checkpoint(out_dir / "supernet.pt", supernet, asdict(recipe), data_spec, {**final, "history": timeless(history)})
    return final
