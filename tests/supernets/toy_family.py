"""A toy fourth family, kept to show what a new family needs: this one module (the contract's
abstract members; every other member comes from `BaseSupernet`), one `register_family` call, and
one line in tests/supernets/test_contract.py's TINY, and its training step (`train_toy`: a step
plugged into the one training loop, `subnetsearch.trainers.fit`). Its modes are the hidden width of
a two-layer MLP (slimmable: a mode uses the first `width` hidden units)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from subnetsearch.data import Splits
from subnetsearch.spaces import Knob, Mode, SearchSpace
from subnetsearch.supernets import BaseSupernet, Cost, LayerShape, network_cost
from subnetsearch.trainers import Callbacks, Saving, Schedule, evaluate_accuracy, fit, sgd


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
              progress: Callable[[dict], None] | None = None) -> list[dict]:
    """The toy family's training: each step trains the widest and the narrowest mode (the sandwich
    rule), through the one loop (schedule, log, resumable checkpoint come from `fit`)."""
    optimizer = sgd(supernet, schedule.lr, 0.9, 0.0)

    def step(images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        optimizer.zero_grad(set_to_none=True)
        losses = []
        for mode in (supernet.full_mode(), supernet.smallest_mode()):
            supernet.set_mode(mode)
            loss = nn.functional.cross_entropy(supernet(images), labels)
            loss.backward()
            losses.append(loss.item())
        optimizer.step()
        return {"loss": sum(losses) / len(losses)}

    def evaluate() -> dict[str, float]:
        supernet.set_mode(supernet.full_mode())
        return {"val_acc": evaluate_accuracy(supernet, splits, splits.val)}

    saving = Saving(Path(out_dir), supernet, {"epochs": schedule.epochs, "lr": schedule.lr}, {"name": "synthetic"})
    return fit(supernet, splits, schedule, optimizer, step, evaluate, saving=saving if out_dir is not None else None,
               callbacks=Callbacks(progress=progress))
