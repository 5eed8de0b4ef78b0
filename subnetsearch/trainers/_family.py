"""The trainer contract: how a family is trained, declared in the family's own trainer module.

A `FamilyTrainer` names its family (what `train --family` takes), its default output folder and
epochs, the options only its training reads (`TrainOption`s: the command line grows a `--name`
for each), and `train(job, events)`: load nothing itself but the job's data, build the supernet,
run its steps through the one loop (`fit`), write `supernet.pt` and say what to do next. A family
that can train as one rank of data-parallel training (`data_parallel = True`) also splits `train`
into `build` (on the driver: the initial weights every rank starts from) and `fit` (on each rank);
Ray Train runs those (`subnetsearch.distributed.train_on_ray`).

`register_trainer` adds one to `TRAINERS` (a taken name is refused); `train --family`, the Python
API and Ray Train find trainers there, so a family trainable from the command line costs its
module and one registration.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import torch

from subnetsearch.data import DataSpec, Splits
from subnetsearch.errors import InputError
from subnetsearch.supernets import BaseSupernet
from subnetsearch.trainers._parallel import DataParallel


def _ignore(message: str) -> None:
    del message


@dataclass(frozen=True)
class TrainOption:
    """One option only this family's training reads: `--NAME` (dashes for underscores) on the
    command line, `job.options[NAME]` in `train`. `kind` is the value's type (the default's when
    not given); a bool is a `--NAME/--no-NAME` switch."""

    name: str
    default: Any
    help: str
    kind: type | None = None

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise InputError(f"a train option's name must be an identifier, got {self.name!r}")
        if self.kind is None:
            if self.default is None:
                raise InputError(f"train option {self.name!r} has no default: give its kind")
            object.__setattr__(self, "kind", type(self.default))

    @property
    def flag(self) -> str:
        return f"--{self.name.replace('_', '-')}"


@dataclass(frozen=True)
class TrainJob:
    """What every family's training is given: the data, the output folder, the settings every family
    shares (`epochs` None: the family's default; `depth`/`widths`: the built-in ResNet's, None for its
    defaults) and the family's own `options` (by name; the ones not given take their defaults)."""

    data: DataSpec
    out: Path
    epochs: int | None = None
    batch_size: int = 128
    lr: float = 0.05
    max_steps_per_epoch: int | None = None
    seed: int = 0
    depth: int | None = None
    widths: tuple[int, ...] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def settings(self) -> dict[str, Any]:
        """The schedule settings a recipe takes (epochs resolved by the trainer first)."""
        return {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
                "max_steps_per_epoch": self.max_steps_per_epoch, "seed": self.seed}

    def resnet(self, splits: Splits, **fields: Any) -> dict[str, Any]:
        """The built-in CIFAR ResNet's architecture for this job's data (depth 20, widths 16-32-64
        unless given), with a family's `fields`."""
        in_channels, size, _ = splits.input_shape
        return {**fields, "depth": 20 if self.depth is None else self.depth,
                "widths": list(self.widths or (16, 32, 64)), "in_channels": in_channels, "input_size": size,
                "num_classes": splits.num_classes}


@dataclass(frozen=True)
class TrainEvents:
    """What a training reports as it goes: `say` a line, `progress` the loop's state every step (see
    `fit`), `epoch` each epoch's record."""

    say: Callable[[str], None] = _ignore
    progress: Callable[[dict], None] | None = None
    epoch: Callable[[dict], None] | None = None


@dataclass(frozen=True)
class TrainOutcome:
    """A finished training: its checkpoint, the full network's validation accuracy, the per-epoch
    history, the recipe it was trained with, and the command to run next."""

    checkpoint: Path
    accuracy: float
    history: list[dict]
    recipe: dict[str, Any]
    next_command: str


class FamilyTrainer(ABC):
    """How one family trains; see the module's docstring."""

    family: ClassVar[str]
    summary: ClassVar[str]
    default_out: ClassVar[str]
    default_epochs: ClassVar[int]
    options: ClassVar[tuple[TrainOption, ...]] = ()
    metric: ClassVar[str] = "loss"  # the training loss's key in `fit`'s progress state
    data_parallel: ClassVar[bool] = False
    uses_resnet: ClassVar[bool] = True  # reads the job's depth and widths

    def resolve(self, job: TrainJob) -> TrainJob:
        """The job with the family's defaults filled in (epochs, every option); an option this
        family does not take is refused, naming those it does."""
        own = {option.name: option for option in self.options}
        stray = sorted(set(job.options) - set(own))
        if stray:
            takes = ", ".join(own) or "none"
            raise InputError(f"{', '.join(stray)}: not an option of the {self.family} family's training "
                             f"(it takes: {takes})")
        for name, value in job.options.items():
            kind = own[name].kind
            if value is not None and kind is not None and not isinstance(value, kind) and not (
                    kind is float and isinstance(value, int) and not isinstance(value, bool)):
                raise InputError(f"{own[name].flag} must be a {kind.__name__}, got {value!r}")
        options = {name: option.default for name, option in own.items()} | dict(job.options)
        epochs = self.default_epochs if job.epochs is None else job.epochs
        return replace(job, epochs=epochs, options=options)

    @abstractmethod
    def train(self, job: TrainJob, events: TrainEvents = TrainEvents()) -> TrainOutcome:
        """Train the job (resolved first) in this process; write `supernet.pt` under `job.out`."""

    # data-parallel families only (`data_parallel = True`):
    def build(self, job: TrainJob, splits: Splits, say: Callable[[str], None] = _ignore) -> BaseSupernet:
        """The supernet training starts from (seeded by the job), on the driver."""
        raise NotImplementedError(f"the {self.family} family does not train data parallel")

    def fit(self, supernet: BaseSupernet, splits: Splits, job: TrainJob, events: TrainEvents,
            parallel: DataParallel | None = None, device: torch.device | None = None) -> TrainOutcome:
        """Train `supernet` as one rank of `parallel` on `device` (default: the job's own choice)."""
        raise NotImplementedError(f"the {self.family} family does not train data parallel")

    def next_command(self, checkpoint: Path) -> str:
        return f"subnetsearch search --checkpoint {checkpoint}"

    def normalization(self, options: Mapping[str, Any], channels: int | None) -> str:
        """The input normalization when none is asked for: "data" (the training images' own channel
        statistics), or "imagenet" where the family starts from weights trained with it."""
        del options, channels
        return "data"


TRAINERS: dict[str, FamilyTrainer] = {}


def register_trainer(trainer: FamilyTrainer) -> FamilyTrainer:
    """Make `trainer` what `train --family <its family>` runs; a taken name is refused."""
    if not isinstance(trainer, FamilyTrainer):
        raise InputError(f"a trainer must be a FamilyTrainer, got {type(trainer).__name__}")
    if trainer.family in TRAINERS:
        raise InputError(f"a trainer for family {trainer.family!r} is already registered")
    if not trainer.data_parallel and type(trainer).fit is not FamilyTrainer.fit:
        raise InputError(f"{type(trainer).__name__} implements fit but does not say data_parallel = True")
    TRAINERS[trainer.family] = trainer
    return trainer


def unregister_trainer(family: str) -> None:
    TRAINERS.pop(family, None)


def get_trainer(family: str) -> FamilyTrainer:
    try:
        return TRAINERS[family]
    except KeyError:
        raise InputError(f"--family must be one of {', '.join(TRAINERS)}, got {family!r}") from None


def last_accuracy(history: list[dict]) -> float:
    """The full network's validation accuracy in the last epoch record (`val_acc_active_mode`, or the
    first entry of `val_acc`)."""
    last = history[-1] if history else {}
    accuracy = last.get("val_acc_active_mode", last.get("val_acc"))
    if isinstance(accuracy, dict):
        accuracy = next(iter(accuracy.values()), None)
    return float("nan") if accuracy is None else float(accuracy)
