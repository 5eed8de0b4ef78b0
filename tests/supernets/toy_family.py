"""A toy fourth family, kept to show what a new family needs: this one module (the contract's
abstract members; every other member comes from `BaseSupernet`; its trainer, `ToyTrainer`: an
option, a step plugged into the one training loop), one `register_family` and one
`register_trainer` call (the `toy_family` fixture in tests/conftest.py), and one line in
tests/supernets/test_contract.py's TINY and tests/trainers/test_loop.py's QUICK. Its modes are the
hidden width of a two-layer MLP (slimmable: a mode uses the first `width` hidden units);
`subnetsearch train --family toy [--sandwich/--no-sandwich]` trains it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from subnetsearch.data import Splits, load_data
from subnetsearch.seeding import seeded
from subnetsearch.spaces import Knob, Mode, SearchSpace
from subnetsearch.supernets import BaseSupernet, Cost, LayerShape, network_cost, save_checkpoint
from subnetsearch.trainers import (
    Callbacks,
    FamilyTrainer,
    Saving,
    Schedule,
    TrainEvents,
    TrainJob,
    TrainOption,
    TrainOutcome,
    evaluate_accuracy,
    fit,
    last_accuracy,
    sgd,
    timeless,
)


class ToyMLP(BaseSupernet):
    family = "toy"

    def __init__(self, arch: Mapping[str, Any]) -> None:
        super().__init__()
        self.arch = dict(arch)
        channels, size = int(arch["in_channels"]), int(arch["input_size"])
        self.input_shape = (channels, size, size)
        self.widths = tuple(int(w) for w in arch["widths"])  # largest first: full mode first
        self.fc1 = nn.Linear(channels * size * size, self.widths[0])
        self.fc2 = nn.Linear(self.widths[0], int(arch["num_classes"]))
        self.space = SearchSpace([Knob("width", "categorical", self.widths)], context=self.arch)
        self._width = self.widths[0]

    @property
    def mode(self) -> Mode:
        return Mode({"width": self._width}, self.space.id)

    def set_mode(self, mode: Mode) -> None:
        self.space.validate(mode)
        self._width = int(mode.values["width"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self._width
        hidden = torch.relu(nn.functional.linear(x.flatten(1), self.fc1.weight[:w], self.fc1.bias[:w]))
        return nn.functional.linear(hidden, self.fc2.weight[:, :w], self.fc2.bias)

    def materialize(self, mode: Mode) -> nn.Module:
        self.space.validate(mode)
        w = int(mode.values["width"])
        first, second = nn.Linear(self.fc1.in_features, w), nn.Linear(w, self.fc2.out_features)
        with torch.no_grad():
            first.weight.copy_(self.fc1.weight[:w])
            first.bias.copy_(self.fc1.bias[:w])
            second.weight.copy_(self.fc2.weight[:, :w])
            second.bias.copy_(self.fc2.bias)
        return nn.Sequential(nn.Flatten(), first, nn.ReLU(), second).eval()

    def layers_for(self, mode: Mode) -> tuple[tuple[LayerShape, ...], dict[str, int]]:
        self.space.validate(mode)
        w = int(mode.values["width"])
        return (LayerShape("fc1", "linear", self.fc1.in_features, w, 1, 1, 1, 1, None, True),
                LayerShape("fc2", "linear", w, self.fc2.out_features, 1, 1, 1, 1, None, True)), {}

    def cost(self, mode: Mode) -> Cost:
        return network_cost(self.layers_for(mode)[0], {})


TOY_ARCH = {"family": "toy-mlp", "in_channels": 1, "input_size": 12, "num_classes": 4, "widths": [32, 16, 8]}


def train_toy(supernet: ToyMLP, splits: Splits, schedule: Schedule, out_dir: Path | None = None,
              progress: Callable[[dict], None] | None = None, sandwich: bool = True, data_spec: dict | None = None,
              on_epoch: Callable[[dict], None] | None = None) -> list[dict]:
    """The toy family's training: each step trains the widest and (`sandwich`) the narrowest mode,
    through the one loop (schedule, log, resumable checkpoint come from `fit`)."""
    optimizer = sgd(supernet, schedule.lr, 0.9, 0.0)
    modes = (supernet.full_mode(), supernet.smallest_mode()) if sandwich else (supernet.full_mode(),)

    def step(images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        optimizer.zero_grad(set_to_none=True)
        losses = []
        for mode in modes:
            supernet.set_mode(mode)
            loss = nn.functional.cross_entropy(supernet(images), labels)
            loss.backward()
            losses.append(loss.item())
        optimizer.step()
        return {"loss": sum(losses) / len(losses)}

    def evaluate() -> dict[str, float]:
        supernet.set_mode(supernet.full_mode())
        return {"val_acc": evaluate_accuracy(supernet, splits, splits.val)}

    recipe = {"epochs": schedule.epochs, "lr": schedule.lr, "sandwich": sandwich}
    saving = Saving(Path(out_dir), supernet, recipe, data_spec or {"name": "synthetic"}) if out_dir else None
    history = fit(supernet, splits, schedule, optimizer, step, evaluate, saving=saving,
                  callbacks=Callbacks(progress=progress, on_epoch=on_epoch))
    if out_dir is not None:
        save_checkpoint(Path(out_dir) / "supernet.pt", supernet, recipe, data_spec or {"name": "synthetic"},
                        {"history": timeless(history)})
    return history


class ToyTrainer(FamilyTrainer):
    """`train --family toy`: the toy MLP of widths 32-16-8 on the job's data."""

    family = "toy"
    summary = "a two-layer MLP of switchable hidden width (tests)"
    default_out = "runs/toy"
    default_epochs = 2
    uses_resnet = False
    options = (TrainOption("sandwich", True, "also train the narrowest width each step"),)

    def train(self, job: TrainJob, events: TrainEvents = TrainEvents()) -> TrainOutcome:
        job = self.resolve(job)
        splits = load_data(job.data)
        channels, size, _ = splits.input_shape
        with seeded(job.seed):
            supernet = ToyMLP({**TOY_ARCH, "in_channels": channels, "input_size": size,
                               "num_classes": splits.num_classes})
        schedule = Schedule(job.epochs or self.default_epochs, job.batch_size, job.lr, job.seed,
                            max_steps_per_epoch=job.max_steps_per_epoch)
        history = train_toy(supernet, splits, schedule, Path(job.out), events.progress, job.options["sandwich"],
                            job.data.to_dict(), events.epoch)
        checkpoint = Path(job.out) / "supernet.pt"
        return TrainOutcome(checkpoint, last_accuracy(history), history, {"sandwich": job.options["sandwich"]},
                            self.next_command(checkpoint))
