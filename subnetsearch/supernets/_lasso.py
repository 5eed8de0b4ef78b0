"""Width-switchable supernet: the non-uniform subnets of Yang et al. ("Non-uniform DNN structured
subnets sampling for dynamic inference").

A CIFAR-style ResNet whose every basic block has a 1x1-convolution shortcut (the paper's Fig. 5b),
so each layer's channel count is free: the *channel slots* are the stem's output, each block's
first conv output and each block's output (its second conv and its shortcut, which are summed).
A configuration gives a channel count per slot; the supernet holds a list of trained configurations
(the full network first, then the generated subnets from largest to smallest), each with its own
private BN in every layer (Algorithm 1: "additional batch-norm layers for each subnet"). A mode
selects one configuration; every conv uses the first `c` output channels and the first `c` input
channels of its full weight (nested subnets, as in slimmable networks), so a switch is one index
assignment and `materialize` slices the weights into a physically smaller plain network.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.experimental.optimization import fuse

from subnetsearch.costs import Cost, LayerShape, network_cost
from subnetsearch.errors import InputError
from subnetsearch.spaces import Knob, Mode, ModeError, SearchSpace
from subnetsearch.supernets._base import BaseSupernet, conv_areas
from subnetsearch.supernets._materialize import warn_untraceable

KNOB = "width"  # the one knob: index of a configuration, 0 = the full network, last = the smallest


def channel_slots(depth: int) -> list[str]:
    """Slot names in data-flow order: 'stem', then per block 'layerS.B.conv1' (its inner width) and
    'layerS.B.conv2' (its output width, shared by conv2 and the 1x1 shortcut)."""
    if (depth - 2) % 6 or depth < 8:
        raise InputError(f"CIFAR ResNet depth must be 6n+2 with n >= 1, got {depth}")
    blocks = (depth - 2) // 6
    return ["stem"] + [f"layer{stage}.{block}.{conv}" for stage in (1, 2, 3) for block in range(blocks)
                       for conv in ("conv1", "conv2")]


def full_channels(depth: int, widths: Sequence[int]) -> list[int]:
    blocks = (depth - 2) // 6
    return [widths[0]] + [widths[stage] for stage in range(3) for _ in range(blocks) for _ in range(2)]


def uniform_channels(full: Sequence[int], ratio: float) -> list[int]:
    """Every slot at round(ratio x its full width), at least 1: a slimmable network's width multiplier."""
    return [max(1, min(c, round(c * ratio))) for c in full]


def uniform_match(supernet: LassoSupernet, macs: float) -> list[int]:
    """The uniform-width (slimmable, S-NN) configuration of `supernet` whose MACs are closest to `macs`."""
    full = list(supernet.configs[0])
    candidates = {tuple(uniform_channels(full, ratio / 1000)) for ratio in range(1, 1001)}
    return list(min(candidates, key=lambda c: abs(supernet.cost_of(list(c)).macs - macs)))


def scaled_channels(low: Sequence[int], full: Sequence[int], ratio: float) -> list[int]:
    """Section V-A: a subnet between `low` and the full network, every slot's count multiplied by the
    same ratio (>= 1) and capped at its full width."""
    return [max(lo, min(c, round(lo * ratio))) for lo, c in zip(low, full, strict=True)]


class WidthState:
    """The active configuration, shared by every layer of one network (a switch is one assignment)."""

    __slots__ = ("configs", "index", "track_running_stats", "widths")

    def __init__(self, configs: Sequence[Sequence[int]]) -> None:
        self.configs = [tuple(config) for config in configs]
        self.index, self.widths, self.track_running_stats = 0, self.configs[0], True

    def select(self, index: int) -> None:
        self.index, self.widths = index, self.configs[index]


class SlimConv2d(nn.Conv2d):
    """A conv that runs on the first `widths[slot]` output channels and as many input channels as
    its input has, of one full weight."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, state: WidthState,
                 slot: int) -> None:
        super().__init__(in_channels, out_channels, kernel, stride, kernel // 2, bias=False)
        self.state, self.slot = state, slot

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight[:self.state.widths[self.slot], :x.shape[1]]
        return F.conv2d(x, weight, None, self.stride, self.padding)

    def to_static(self, in_channels: int) -> nn.Conv2d:
        out_channels = self.state.widths[self.slot]
        kernel, stride, padding = self.kernel_size[0], self.stride[0], cast(tuple[int, ...], self.padding)[0]
        conv = nn.Conv2d(in_channels, out_channels, kernel, stride, padding, bias=False)
        with torch.no_grad():
            conv.weight.copy_(self.weight[:out_channels, :in_channels])
        return conv


class SlimBatchNorm2d(nn.Module):
    """One private BN per configuration, each exactly as wide as its configuration's slot."""

    def __init__(self, state: WidthState, slot: int) -> None:
        super().__init__()
        self.state, self.slot = state, slot
        self.norms = nn.ModuleList(nn.BatchNorm2d(config[slot]) for config in state.configs)

    @property
    def active(self) -> nn.BatchNorm2d:
        return cast(nn.BatchNorm2d, self.norms[self.state.index])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = self.active
        if self.training and not self.state.track_running_stats:
            return F.batch_norm(x, None, None, norm.weight, norm.bias, True, 0.0, norm.eps)
        return norm(x)


class SlimLinear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight[:, :x.shape[1]], self.bias)


class ShortcutBlock(nn.Module):
    """Basic block with a 1x1-conv + BN shortcut (Fig. 5b): input and output widths are independent."""

    def __init__(self, conv1: nn.Module, bn1: nn.Module, conv2: nn.Module, bn2: nn.Module, shortcut: nn.Module,
                 shortcut_bn: nn.Module) -> None:
        super().__init__()
        self.conv1, self.bn1, self.conv2, self.bn2 = conv1, bn1, conv2, bn2
        self.shortcut, self.shortcut_bn = shortcut, shortcut_bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + self.shortcut_bn(self.shortcut(x)))


class ShortcutResNet(nn.Module):
    """Stem -> 3 stages of ShortcutBlocks -> global average pool -> classifier."""

    def __init__(self, stem: SlimConv2d, stem_bn: nn.Module, blocks: Sequence[Sequence[ShortcutBlock]],
                 fc: nn.Linear) -> None:
        super().__init__()
        self.stem, self.stem_bn = stem, stem_bn
        self.layer1, self.layer2, self.layer3 = (nn.Sequential(*stage) for stage in blocks)
        self.fc = fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem_bn(self.stem(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _conv_specs(depth: int) -> list[tuple[str, int | None, int, int, int]]:
    """(module name, input slot or None for the image, output slot, kernel, stride) of every conv."""
    specs: list[tuple[str, int | None, int, int, int]] = [("stem", None, 0, 3, 1)]
    blocks, slot = (depth - 2) // 6, 0
    for stage in (1, 2, 3):
        for block in range(blocks):
            stride = 2 if stage > 1 and block == 0 else 1
            name = f"layer{stage}.{block}"
            specs += [(f"{name}.conv1", slot, slot + 1, 3, stride), (f"{name}.conv2", slot + 1, slot + 2, 3, 1),
                      (f"{name}.shortcut", slot, slot + 2, 1, stride)]
            slot += 2
    return specs


def build_network(depth: int, in_channels: int, num_classes: int, state: WidthState) -> ShortcutResNet:
    """The dynamic network: full-size weights, private BNs per configuration of `state`."""
    full = [max(config[s] for config in state.configs) for s in range(len(state.configs[0]))]
    convs = {name: SlimConv2d(in_channels if src is None else full[src], full[dst], kernel, stride, state, dst)
             for name, src, dst, kernel, stride in _conv_specs(depth)}
    blocks, slot = [], 0
    for stage in (1, 2, 3):
        row = []
        for block in range((depth - 2) // 6):
            name = f"layer{stage}.{block}"
            row.append(ShortcutBlock(convs[f"{name}.conv1"], SlimBatchNorm2d(state, slot + 1), convs[f"{name}.conv2"],
                                     SlimBatchNorm2d(state, slot + 2), convs[f"{name}.shortcut"],
                                     SlimBatchNorm2d(state, slot + 2)))
            slot += 2
        blocks.append(row)
    return ShortcutResNet(convs["stem"], SlimBatchNorm2d(state, 0), blocks, SlimLinear(full[-1], num_classes))


def _static_copy(network: ShortcutResNet, in_channels: int) -> ShortcutResNet:
    """The active configuration as plain nn.Conv2d / nn.BatchNorm2d / nn.Linear of exactly its widths."""
    static = copy.deepcopy(network)
    widths = network.stem.state.widths
    sources = {name: src for name, src, _, _, _ in _conv_specs(_depth_of(network))}
    for name, module in list(static.named_modules()):
        replacement: nn.Module | None = None
        if isinstance(module, SlimConv2d):
            source = sources[name]
            replacement = module.to_static(in_channels if source is None else widths[source])
        elif isinstance(module, SlimBatchNorm2d):
            replacement = copy.deepcopy(module.active)
        elif isinstance(module, SlimLinear):
            replacement = nn.Linear(widths[-1], module.out_features)
            with torch.no_grad():
                replacement.weight.copy_(module.weight[:, :widths[-1]])
                if module.bias is not None:
                    replacement.bias.copy_(module.bias)
        if replacement is not None:
            parent, _, child = name.rpartition(".")
            setattr(static.get_submodule(parent) if parent else static, child, replacement)
    return static.eval()


def _depth_of(network: ShortcutResNet) -> int:
    return 6 * len(network.layer1) + 2


class LassoSupernet(BaseSupernet):
    """A trained network whose operating modes are its trained channel configurations.

    The supernet contract (`BaseSupernet`): `set_mode` validates first and changes nothing on error,
    then switches in O(1) (one index); `materialize` returns an independent plain network (sliced
    weights, BN folded) and leaves the mode unchanged; `cost` is a pure function of the mode.
    """

    family = "lasso"
    mode_kind = "channels"
    knob = KNOB

    def __init__(self, arch: Mapping[str, Any]) -> None:
        super().__init__()
        self.arch = dict(arch)
        depth, widths = int(arch["depth"]), list(arch["widths"])
        self.slots = channel_slots(depth)
        full = full_channels(depth, widths)
        subnets = [dict(subnet) for subnet in arch.get("subnets", [])]
        configs = [full]
        for subnet in subnets:
            channels = [int(c) for c in subnet["channels"]]
            if len(channels) != len(full):
                raise InputError(f"subnet {subnet.get('name')!r} gives {len(channels)} channel counts; this "
                                 f"network has {len(full)} channel slots")
            too_wide = [(slot, c, f) for slot, c, f in zip(self.slots, channels, full, strict=True) if not 1 <= c <= f]
            if too_wide:
                raise InputError(f"subnet {subnet.get('name')!r}: channel counts must be within 1..full width, "
                                 f"got {too_wide[:3]} (slot, count, full)")
            configs.append(channels)
        self.names = ["full"] + [str(subnet.get("name", f"subnet{i + 1}")) for i, subnet in enumerate(subnets)]
        self.in_channels, self.num_classes = int(arch.get("in_channels", 1)), int(arch.get("num_classes", 10))
        size = int(arch.get("input_size", 28))
        self.input_shape = (self.in_channels, size, size)
        self.state = WidthState(configs)
        self.network = build_network(depth, self.in_channels, self.num_classes, self.state)
        self.space = SearchSpace([Knob(KNOB, "ordered", tuple(range(len(configs))))], context=self.arch)
        self._areas = self._trace_areas()
        macs = [self.cost(self.space.mode({KNOB: i})).macs for i in range(len(configs))]
        if len(configs) > 1 and any(a <= b for a, b in itertools.pairwise(macs)):
            raise InputError(f"subnets must be listed from largest to smallest MACs after the full network; "
                             f"got MACs {macs}")

    # ---- modes -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    @property
    def configs(self) -> list[tuple[int, ...]]:
        return list(self.state.configs)

    @property
    def mode(self) -> Mode:
        return Mode({KNOB: self.state.index}, self.space.id)

    def subnet_mode(self, name: str) -> Mode:
        if name not in self.names:
            raise ModeError(f"no subnet {name!r}; this supernet has {self.names}")
        return self.space.mode({KNOB: self.names.index(name)})

    def named_modes(self) -> dict[str, Mode]:
        """Every trained subnet by its name, full network first."""
        return {name: self.subnet_mode(name) for name in self.names}

    def mode_named(self, text: str) -> Mode | None:
        """full | smallest | subnet:NAME."""
        if text.startswith("subnet:"):
            return self.subnet_mode(text.split(":", 1)[1])
        return super().mode_named(text)

    def mode_layout(self) -> str:
        return "channels per layer"

    def set_mode(self, mode: Mode) -> None:
        self.space.validate(mode)
        self.state.select(mode.values[KNOB])

    def set_bn_tracking(self, enabled: bool) -> None:
        self.state.track_running_stats = enabled

    def conv_specs(self) -> list[tuple[str, int | None, int, int, int]]:
        """(module name, input slot or None for the image, output slot, kernel, stride) of every conv
        of the network, in data-flow order: which slot each conv reads and writes."""
        return _conv_specs(_depth_of(self.network))

    def channels(self, mode: Mode) -> tuple[int, ...]:
        self.space.validate(mode)
        return self.state.configs[mode.values[KNOB]]

    def describe(self, mode: Mode) -> str:
        """The subnet's name and its channel count per slot, e.g. 'subnet2: 12-8-12-...'."""
        return f"{self.names[mode.values[KNOB]]}: " + "-".join(str(c) for c in self.channels(mode))

    # ---- static networks and cost ------------------------------------------------------------
    def materialize(self, mode: Mode) -> nn.Module:
        previous = self.state.index
        self.set_mode(mode)
        try:
            static = _static_copy(self.network, self.in_channels)
        finally:
            self.state.select(previous)
        try:
            return fuse(fx.symbolic_trace(static), inplace=True).eval()
        except Exception as error:  # not traceable: the unfused copy computes the same function
            warn_untraceable(static, error)
            return static

    def layer_shapes(self, mode: Mode) -> tuple[LayerShape, ...]:
        """Each conv and the classifier at the mode's widths (BN folded: every conv has a bias)."""
        return self.shapes_of(self.channels(mode))

    def cost_of(self, channels: Sequence[int]) -> Cost:
        """MACs and parameters of any channel configuration of this network (one count per slot)."""
        return network_cost(self.shapes_of(channels), {})

    def shapes_of(self, widths: Sequence[int]) -> tuple[LayerShape, ...]:
        if len(widths) != len(self.slots):
            raise InputError(f"expected {len(self.slots)} channel counts, got {len(widths)}")
        shapes = []
        for name, src, dst, kernel, _ in self.conv_specs():
            c_in = self.in_channels if src is None else widths[src]
            shapes.append(LayerShape(name, "conv", c_in, widths[dst], kernel * kernel, *self._areas[name], 1, None,
                                     True))
        shapes.append(LayerShape("fc", "linear", widths[-1], self.num_classes, 1, 1, 1, 1, None, True))
        return tuple(shapes)

    def cost(self, mode: Mode) -> Cost:
        return network_cost(self.layer_shapes(mode), {})

    def layers_for(self, mode: Mode) -> tuple[tuple[LayerShape, ...], dict[str, int]]:
        """The layers of the mode and the group counts their knobs take (none here): what the
        energy model counts memory accesses of."""
        return self.layer_shapes(mode), {}

    def _trace_areas(self) -> dict[str, tuple[int, int]]:
        """(output area, input area) of every conv, from one forward pass at batch 1."""
        return conv_areas(self.network, self.input_shape, SlimConv2d)
