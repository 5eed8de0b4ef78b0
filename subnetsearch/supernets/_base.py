"""What a supernet is: the contract every family implements and every consumer relies on.

A supernet is a trained `nn.Module` whose operating modes (points of its `space`) are switched at run
time without reloading weights. The guarantees:

- `set_mode(mode)` validates first: a mode of another space or with a bad value raises `ModeError`
  and leaves the active mode unchanged. It is cheap (no weight is copied).
- `materialize(mode)` returns an independent static module (no shared parameters, no dynamic
  layers) computing what the supernet computes in `mode` in eval mode, and leaves the active mode
  unchanged.
- `cost(mode)` is pure: MACs and parameters of the mode, from the architecture alone. A family
  whose cost depends on the input (`dynamic_cost = True`) returns the most one sample can cost, and
  reports what evaluated samples really cost through `recording_costs` and `cost_profile`.
- `layers_for(mode)` gives the layer shapes and group counts the energy model counts accesses of.
- `realize(mode, realization)` is `materialize` with some grouped layers computed by their dense
  equivalents (zeros off the blocks): the same function, another kernel. `grouped_layers(mode)` says
  which layers a realization may change (none for a family without grouped layers).

Families implement the abstract members; the rest has defaults built on the `SearchSpace`
(full / smallest / random / named modes, no-op hooks) that a family overrides where its modes mean
more. A family registers its builder with `register_family`; the contract suite
(tests/supernets/test_contract.py) then checks it.
"""

from __future__ import annotations

import abc
import itertools
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from subnetsearch.costs import Cost, LayerShape
from subnetsearch.errors import InputError
from subnetsearch.spaces import Mode, SearchSpace


def module_device(model: nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (the CPU for one with neither): where its
    inputs must go (BN calibration, evaluation)."""
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    return first.device if first is not None else torch.device("cpu")

SHUFFLE_FORMS = ("reshape", "gather")


@dataclass(frozen=True)
class Realization:
    """How a mode's grouped layers are computed: those in `dense` by dense equivalents (weight zero
    off the blocks, so a channel shuffle next to one folds away), the rest by grouped kernels.
    Which is faster depends on the device's runtime and the layer's shape; every latency figure
    records the realization it was measured with, and export applies it.

    `shuffle`: how the channel shuffles that do not fold into a dense neighbour are computed:
    "reshape" (reshape-transpose-reshape; PyTorch's native channel_shuffle in the PyTorch runtimes) or
    "gather" (one channel gather with the permutation as a constant index). The same permutation
    either way; which is cheaper depends on the runtime (`Runtime.shuffle`, chosen by
    benchmarks/shuffle_forms.py)."""

    dense: tuple[str, ...] = ()
    shuffle: str = "reshape"

    def __post_init__(self) -> None:
        object.__setattr__(self, "dense", tuple(sorted(set(self.dense))))
        if self.shuffle not in SHUFFLE_FORMS:
            raise InputError(f"shuffle must be one of {SHUFFLE_FORMS}, got {self.shuffle!r}")

    def to_dict(self) -> dict:
        # the default form is left out: figures recorded before there was a choice read back equal
        return {"dense": list(self.dense), **({"shuffle": self.shuffle} if self.shuffle != "reshape" else {})}

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any] | None) -> Realization:
        return cls(tuple(payload.get("dense", ())), payload.get("shuffle", "reshape")) if payload else cls()

    def describe(self, grouped: int) -> str:
        """Short text for tables: `grouped`, `dense`, or how many of the `grouped` layers are dense."""
        if not self.dense:
            text = "grouped"
        else:
            text = "dense" if len(self.dense) >= grouped else f"{len(self.dense)}/{grouped} dense"
        return text + (", gather shuffles" if self.shuffle == "gather" and len(self.dense) < grouped else "")


PLAIN = Realization()


def conv_areas(network: nn.Module, input_shape: tuple[int, ...], kind: type[nn.Module]) -> dict[str, tuple[int, int]]:
    """(output area, input area) of every `kind` layer of `network`, from one forward pass at batch 1
    in eval mode (the network's mode restored after)."""
    areas: dict[str, tuple[int, int]] = {}
    hooks = [module.register_forward_hook(
        lambda mod, inputs, output, name=name: areas.__setitem__(
            name, (output.shape[-2] * output.shape[-1], inputs[0].shape[-2] * inputs[0].shape[-1])))
        for name, module in network.named_modules() if isinstance(module, kind)]
    was_training = network.training
    try:
        network.eval()
        with torch.no_grad():
            network(torch.zeros(1, *input_shape))
    finally:
        for hook in hooks:
            hook.remove()
        network.train(was_training)
    return areas


class BaseSupernet(nn.Module, abc.ABC):
    """The supernet contract (see the module docstring). Subclasses set `arch` (the architecture
    config a checkpoint records), `input_shape` (C, H, W) and `space` in `__init__`."""

    family: ClassVar[str]  # one name per family, everywhere (checkpoints record `arch["family"]`)
    mode_kind: str = "subnet"  # what a mode other than full changes, in a word (tables, reports); per instance where a
    # converted supernet's knobs decide it (WeNet with width knobs: "width" or "width+groups")
    dynamic_cost: ClassVar[bool] = False  # cost depends on the input: measured per evaluated sample
    # Whether a mode scored with the stored BN running statistics means something: True where each
    # mode has its own (a private BN per group count or subnet); False where modes share sliced
    # statistics (nested widths), which only the per-mode recalibration makes right
    stored_bn_per_mode: ClassVar[bool] = True
    arch: dict
    input_shape: tuple[int, int, int]
    space: SearchSpace

    # ---- what every family implements --------------------------------------------------------
    @property
    @abc.abstractmethod
    def mode(self) -> Mode:
        """The active mode."""

    @abc.abstractmethod
    def set_mode(self, mode: Mode) -> None:
        """Switch to `mode`; on a bad mode raise ModeError and change nothing."""

    @abc.abstractmethod
    def materialize(self, mode: Mode) -> nn.Module:
        """An independent static module for `mode`; the active mode is unchanged."""

    @abc.abstractmethod
    def cost(self, mode: Mode) -> Cost:
        """MACs and parameters of `mode` (pure; the most one sample can cost if `dynamic_cost`)."""

    @abc.abstractmethod
    def layers_for(self, mode: Mode) -> tuple[tuple[LayerShape, ...], dict[str, int]]:
        """The layers of `mode` and the group count of each switchable one (for the energy model)."""

    # ---- modes: defaults on the space --------------------------------------------------------
    def make_mode(self, values: Mapping[str, Any]) -> Mode:
        """A validated mode from knob values."""
        return self.space.mode(dict(values))

    def full_mode(self) -> Mode:
        """The most capable mode: each knob's first value (knobs list their values costliest first)."""
        return self.space.mode({knob.name: knob.values[0] for knob in self.space.knobs})

    def smallest_mode(self) -> Mode:
        """The cheapest mode: each knob's last value."""
        return self.space.mode({knob.name: knob.values[-1] for knob in self.space.knobs})

    def random_mode(self, generator: torch.Generator) -> Mode:
        """Each knob's value drawn independently and uniformly (WeNet Algorithm 1, line 13)."""
        values = {}
        for knob in self.space.knobs:
            values[knob.name] = knob.values[int(torch.randint(len(knob.values), (1,), generator=generator))]
        return self.space.mode(values)

    def uniform_modes(self) -> list[Mode]:
        """The uniform modes strictly between full and smallest (every layer at the same share: WeNet's
        1/g networks, a nested supernet's width ratios), which training's "uniform-stats" sampling
        draws from; none by default (random modes are drawn instead)."""
        return []

    def named_modes(self) -> dict[str, Mode]:
        """The modes worth showing by name (the main job's table): full and smallest; families add
        theirs (WeNet's uniform 1/g networks, a width supernet's trained subnets)."""
        return {"full": self.full_mode(), "smallest": self.smallest_mode()}

    def mode_named(self, text: str) -> Mode | None:
        """The mode a name on the command line means (`full`, `smallest`, and what the family
        adds), None if `text` is no name this family knows; ModeError for a known form with a bad
        value."""
        if text == "full":
            return self.full_mode()
        if text == "smallest":
            return self.smallest_mode()
        return None

    def describe(self, mode: Mode) -> str:
        """A short human-readable form of a mode."""
        return ", ".join(f"{name}={value}" for name, value in mode.values.items())

    def mode_layout(self) -> str:
        """What `describe` shows, as a column title."""
        return "knobs"

    def kind_of(self, mode: Mode) -> str:
        """What `mode` changes, in a word: "full" for the full network, else the family's
        `mode_kind` (groups, width, skipping, ...); a family whose modes combine knobs of several
        kinds says which per mode (e.g. "width+groups")."""
        return "full" if mode.id == self.full_mode().id else self.mode_kind

    @staticmethod
    def width_and_groups_kind(narrow: bool, grouped: bool) -> str:
        """The kind of a mode of a family with width and group knobs: "full", "width", "groups" or
        "width+groups", from whether it narrows any layer and whether it groups any."""
        return ("width+groups" if grouped else "width") if narrow else ("groups" if grouped else "full")

    # ---- realizations: a family with grouped layers overrides both ------------------------------
    def grouped_layers(self, mode: Mode) -> tuple[str, ...]:
        """The layers that `mode` computes with more than one group (what a realization may compute
        densely instead)."""
        return ()

    def realize(self, mode: Mode, realization: Realization = PLAIN) -> nn.Module:
        """`materialize(mode)` with the layers of `realization.dense` computed by dense equivalents."""
        if realization.dense:
            raise InputError(f"a {self.family} supernet has no grouped layers to compute densely "
                             f"({realization.dense[0]!r})")
        return self.materialize(mode)

    # ---- hooks: no-ops unless a family needs them --------------------------------------------
    def set_bn_tracking(self, enabled: bool) -> None:
        """Whether switchable BN layers update their running statistics in training mode (families
        whose BN layers always track leave this a no-op)."""

    @contextmanager
    def recording_costs(self) -> Iterator[list[dict[str, torch.Tensor]]]:
        """Within the block, input-dependent families append each eval forward pass's per-sample
        costs to the yielded list; static ones record nothing."""
        yield []

    def cost_profile(self, records: list[dict[str, torch.Tensor]]) -> dict | None:
        """The distribution of recorded per-sample costs (input-dependent families); None for a
        static cost."""
        return None

