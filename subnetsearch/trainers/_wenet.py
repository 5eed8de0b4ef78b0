"""WeNet training, Algorithm 1 of the paper: per iteration, accumulate the gradients of the full
network, the smallest sub-network and s-2 random sub-networks, then take one optimizer step."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from subnetsearch.data import Splits
from subnetsearch.spaces import Mode
from subnetsearch.supernets import WeNetSupernet, load_checkpoint, load_weights, save_checkpoint
from subnetsearch.trainers._evaluate import evaluate_accuracy

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
        check_counts(self, "epochs", "batch_size", "max_steps_per_epoch")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


def check_counts(recipe: object, *names: str) -> None:
    """Each named field of a recipe is >= 1 (None allowed: unset, e.g. no cap on steps)."""
    for name in names:
        value = getattr(recipe, name)
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


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


def _optimizer(supernet: torch.nn.Module, recipe: WeNetRecipe) -> torch.optim.Optimizer:
    """Nesterov SGD with weight decay on weights only (not BN or biases); any recipe with lr,
    momentum and weight_decay (the lasso family's too)."""
    decay = [p for n, p in supernet.named_parameters() if p.dim() > 1]
    no_decay = [p for n, p in supernet.named_parameters() if p.dim() <= 1]
    return torch.optim.SGD([{"params": decay, "weight_decay": recipe.weight_decay},
                            {"params": no_decay, "weight_decay": 0.0}],
                           lr=recipe.lr, momentum=recipe.momentum, nesterov=True)


def _lr_at(recipe: WeNetRecipe, step: int, total: int) -> float:
    """Linear warm-up over the first 2% of steps, then cosine decay to zero (any recipe with lr)."""
    warmup = max(1, total // 50)
    if step < warmup:
        return recipe.lr * (step + 1) / warmup
    return 0.5 * recipe.lr * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train_wenet(supernet: WeNetSupernet, splits: Splits, recipe: WeNetRecipe, out_dir: str | Path,
                data_spec: dict, progress: Callable[[dict], None] | None = None,
                resume: bool = True, on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Train with Algorithm 1; writes `last.pt` (resumable) each epoch, `supernet.pt` at the end,
    and `train_log.jsonl` (one line of metrics per epoch) in `out_dir`. Returns the final metrics."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed)
    optimizer = _optimizer(supernet, recipe)
    memory_format = torch.channels_last if recipe.channels_last else torch.contiguous_format
    steps_per_epoch = math.ceil(len(splits.train) / recipe.batch_size)
    if recipe.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, recipe.max_steps_per_epoch)
    total_steps = steps_per_epoch * recipe.epochs
    start_epoch, history = 0, []
    last = out_dir / "last.pt"
    if resume and last.exists():
        state = load_checkpoint(last, supernet.arch)
        if state.recipe != asdict(recipe):
            raise ValueError(f"{last} was written with another recipe {state.recipe}; use a new out_dir or resume=False")
        load_weights(supernet, state.state_dict)
        optimizer.load_state_dict(state.extra["optimizer"])
        generator.set_state(state.extra["generator"])
        start_epoch, history = state.metrics["epoch"], state.metrics["history"]
    supernet.to(memory_format=memory_format)
    log = (out_dir / "train_log.jsonl").open("a")
    for epoch in range(start_epoch, recipe.epochs):
        supernet.train()
        started, sums, count = time.perf_counter(), {"loss_full": 0.0, "loss_mean": 0.0, "acc_full": 0.0}, 0
        batches = splits.batches(splits.train, recipe.batch_size, shuffle=True, augment=recipe.augment,
                                 generator=generator, max_batches=steps_per_epoch)
        for step, (images, labels) in enumerate(batches):
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(recipe, epoch * steps_per_epoch + step, total_steps)
            patterns = sample_patterns(supernet, recipe, generator)
            metrics = train_step(supernet, optimizer, images.to(memory_format=memory_format), labels,
                                 patterns, recipe.distill)
            count += 1
            for key in sums:
                sums[key] += metrics[key]
            if progress:
                progress({"epoch": epoch + 1, "epochs": recipe.epochs, "step": step + 1,
                          "steps": steps_per_epoch, **{k: v / count for k, v in sums.items()}})
        supernet.set_mode(supernet.full_mode() if recipe.fixed_mode is None else Mode.from_json(recipe.fixed_mode))
        val = evaluate_accuracy(supernet, splits, splits.val)
        record = {"epoch": epoch + 1, **{f"train_{k}": round(v / max(count, 1), 5) for k, v in sums.items()},
                  "val_acc_active_mode": round(val, 5), "seconds": round(time.perf_counter() - started, 1)}
        history.append(record)
        log.write(json.dumps(record) + "\n")
        log.flush()
        if on_epoch:
            on_epoch(record)
        save_checkpoint(last, supernet, asdict(recipe), data_spec, {"epoch": epoch + 1, "history": timeless(history)},
                        extra={"optimizer": optimizer.state_dict(), "generator": generator.get_state()})
    log.close()
    supernet.to(memory_format=torch.contiguous_format)
    supernet.set_mode(supernet.full_mode() if recipe.fixed_mode is None else Mode.from_json(recipe.fixed_mode))
    final = {"epochs": recipe.epochs, "history": history}
    save_checkpoint(out_dir / "supernet.pt", supernet, asdict(recipe), data_spec, {**final, "history": timeless(history)})
    return final


def timeless(history: list[dict]) -> list[dict]:
    """Epoch records without wall times, as checkpoints keep them: the same run gives the same
    content hash (the times stay in train_log.jsonl)."""
    return [{key: value for key, value in record.items() if key != "seconds"} for record in history]

