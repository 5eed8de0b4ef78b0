"""The one training loop every family's training plugs a step into.

`fit` owns what is the same for every family: the seeded batch order, the learning-rate schedule
(linear warm-up, then cosine decay to zero, per parameter group scaled by its "scale"), progress
reports, the per-epoch log line (`train_log.jsonl`), a resumable checkpoint (`last.pt`: weights,
optimizer, random state, history) every `checkpoint_every` epochs, and resuming from it. A family
supplies a `step(images, labels) -> metrics` (one optimizer step of its algorithm: Algorithm 1 for
WeNet and the lasso family's fused training, an IADI/RADI step for DDI) and an `evaluate()` that
returns the end-of-epoch validation record.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from subnetsearch.data import Splits
from subnetsearch.errors import InputError
from subnetsearch.supernets import BaseSupernet, load_checkpoint, load_weights, save_checkpoint
from subnetsearch.trainers._accelerate import CPU, Accelerator

Step = Callable[[torch.Tensor, torch.Tensor], Mapping[str, float]]


@dataclass(frozen=True)
class Schedule:
    """How long and how fast: epochs of `batch_size` batches (at most `max_steps_per_epoch` each),
    the peak learning rate, the share of all steps spent warming up to it, the seed of the batch
    order (and of anything else the step draws from the loop's generator)."""

    epochs: int
    batch_size: int
    lr: float
    seed: int = 0
    augment: bool = True
    max_steps_per_epoch: int | None = None
    warmup: float = 0.02

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "max_steps_per_epoch"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"{name} must be >= 1, got {value}")
        if not self.lr > 0:
            raise InputError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.warmup < 1:
            raise InputError(f"warmup must be a share of the steps in [0, 1), got {self.warmup}")

    def steps_per_epoch(self, examples: int, world: int = 1) -> int:
        """Steps of one epoch; `world` data-parallel ranks take `batch_size` images each per step."""
        steps = math.ceil(examples / (self.batch_size * world))
        return min(steps, self.max_steps_per_epoch) if self.max_steps_per_epoch else steps

    def lr_at(self, step: int, total: int) -> float:
        """Linear warm-up over the first `warmup` share of the steps (at least one step when the
        share is not zero), then cosine decay to zero."""
        warmup = max(1, int(total * self.warmup + 1e-9)) if self.warmup > 0 else 0
        if step < warmup:
            return self.lr * (step + 1) / warmup
        return 0.5 * self.lr * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def sgd(model: nn.Module, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    """Nesterov SGD with weight decay on weights only (not BN or biases)."""
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    return torch.optim.SGD([{"params": decay, "weight_decay": weight_decay},
                            {"params": no_decay, "weight_decay": 0.0}], lr=lr, momentum=momentum, nesterov=True)


def timeless(history: list[dict]) -> list[dict]:
    """Epoch records without wall times, as checkpoints keep them: the same run gives the same
    content hash (the times stay in train_log.jsonl)."""
    return [{key: value for key, value in record.items() if key != "seconds"} for record in history]


@dataclass(frozen=True)
class Saving:
    """What the loop writes in `out_dir`: every epoch's record to `train_log.jsonl`, and with a
    `checkpoint` supernet (the one the model is, or holds) a resumable `last.pt` every `every` epochs
    and at the end, tagged with `recipe` and `data_spec`; with `resume`, a `last.pt` found there
    continues where it stopped (refused if it was written with another recipe)."""

    out_dir: Path
    checkpoint: BaseSupernet | None = None
    recipe: Mapping[str, Any] = field(default_factory=dict)
    data_spec: Mapping[str, Any] = field(default_factory=dict)
    resume: bool = True
    every: int = 1

    def __post_init__(self) -> None:
        if self.every < 1:
            raise InputError(f"checkpoint every must be >= 1 epochs, got {self.every}")


@dataclass(frozen=True)
class Callbacks:
    """What the loop tells its caller: `progress(state)` after every step (epoch, step, running
    means of the step's metrics), `on_epoch(record)` after every epoch, `on_saved(path, record)` on
    every rank once an epoch's checkpoint is written (Ray Train reports it there)."""

    progress: Callable[[dict], None] | None = None
    on_epoch: Callable[[dict], None] | None = None
    on_saved: Callable[[Path, dict], None] | None = None


@dataclass(frozen=True)
class Shard:
    """One rank of data-parallel training: it steps on its share of every global batch
    (`Splits.batches`; the step reduces the gradients), augments from a generator of its own (seeded
    by `augment_seed` and the epoch, so a resumed run augments as the first did); only rank 0 writes."""

    rank: int = 0
    world: int = 1
    augment_seed: int | None = None

    @property
    def writes(self) -> bool:
        return self.rank == 0


def _resume(last: Path, checkpoint: BaseSupernet, recipe: Mapping[str, Any], optimizer: torch.optim.Optimizer,
            generator: torch.Generator) -> tuple[int, list[dict]]:
    """Restore weights, optimizer and batch order from `last.pt`: the epoch it ended and its history."""
    state = load_checkpoint(last, checkpoint.arch)
    if state.recipe != recipe:
        raise InputError(f"{last} was written with another recipe {state.recipe}; use a new out_dir or resume=False")
    load_weights(checkpoint, state.state_dict)
    optimizer.load_state_dict(state.extra["optimizer"])
    generator.set_state(state.extra["generator"])
    return state.metrics["epoch"], list(state.metrics["history"])


def fit(model: nn.Module, splits: Splits, schedule: Schedule, optimizer: torch.optim.Optimizer, step: Step,
        evaluate: Callable[[], Mapping[str, Any]], *, saving: Saving | None = None,
        callbacks: Callbacks = Callbacks(), shard: Shard = Shard(), generator: torch.Generator | None = None,
        accelerator: Accelerator = CPU, train_mode: Callable[[], None] | None = None) -> list[dict]:
    """Train `model` for `schedule.epochs` epochs of `step`; returns one record per epoch: the epoch,
    `train_<metric>` (the step's metrics averaged over the epoch), what `evaluate()` returns, and the
    seconds it took. `saving` says what is written where (nothing without it), `callbacks` who is
    told what, `shard` which rank of data-parallel training this is. Every batch reaches `step` on
    the `accelerator`'s device; the batch order comes from `generator` (default: seeded by the
    schedule). `train_mode()` puts the model in training mode at the start of each epoch (default
    `model.train()`; `evaluate` may leave it in eval mode)."""
    generator = generator if generator is not None else torch.Generator().manual_seed(schedule.seed)
    steps = schedule.steps_per_epoch(len(splits.train), shard.world)
    out_dir, checkpoint = (saving.out_dir, saving.checkpoint) if saving is not None else (None, None)
    recipe = dict(saving.recipe) if saving is not None else {}
    write = shard.writes
    total = steps * schedule.epochs
    for group in optimizer.param_groups:
        group.setdefault("scale", 1.0)
    folder = Path(out_dir) if out_dir is not None else None
    last = folder / "last.pt" if folder is not None and checkpoint is not None else None
    start, history = 0, list[dict]()
    if last is not None and checkpoint is not None and saving is not None and saving.resume and last.exists():
        start, history = _resume(last, checkpoint, recipe, optimizer, generator)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)

    def save(epoch: int) -> None:
        if last is not None and checkpoint is not None and write:
            save_checkpoint(last, checkpoint, recipe, dict(saving.data_spec) if saving is not None else {},
                            {"epoch": epoch, "history": timeless(history)},
                            extra={"optimizer": optimizer.state_dict(), "generator": generator.get_state()})

    log = (folder / "train_log.jsonl").open("a") if folder is not None and write else None
    try:
        for epoch in range(start, schedule.epochs):
            (train_mode or model.train)()
            started, count = time.perf_counter(), 0
            sums: dict[str, float] = {}
            batches = splits.batches(splits.train, schedule.batch_size, shuffle=True, augment=schedule.augment,
                                     generator=generator, max_batches=steps, shard=(shard.rank, shard.world),
                                     augment_generator=None if shard.augment_seed is None else
                                     torch.Generator().manual_seed(shard.augment_seed * 1_000_003 + epoch),
                                     device=accelerator.device)  # a GPU crops, flips and normalizes its batches
            for index, (images, labels) in enumerate(batches):
                for group in optimizer.param_groups:
                    group["lr"] = schedule.lr_at(epoch * steps + index, total) * group["scale"]
                metrics = step(*accelerator.batch(images, labels))
                count += 1
                for key, value in metrics.items():
                    sums[key] = sums.get(key, 0.0) + float(value)
                if callbacks.progress:
                    callbacks.progress({"epoch": epoch + 1, "epochs": schedule.epochs, "step": index + 1, "steps": steps,
                              **{k: v / count for k, v in sums.items()}})
            record = {"epoch": epoch + 1, **{f"train_{k}": round(v / max(count, 1), 5) for k, v in sums.items()},
                      **evaluate(), "seconds": round(time.perf_counter() - started, 1)}
            history.append(record)
            if log is not None:
                log.write(json.dumps(record) + "\n")
                log.flush()
            if callbacks.on_epoch:
                callbacks.on_epoch(record)
            every = saving.every if saving is not None else 1
            if (epoch + 1) % every == 0 or epoch + 1 == schedule.epochs:
                save(epoch + 1)
                if callbacks.on_saved is not None and last is not None:
                    callbacks.on_saved(last, record)
    finally:
        if log is not None:
            log.close()
    return history
