"""Nested widths (slimmable networks, Once-for-All's elastic width): a CIFAR-style ResNet whose
layers run on a prefix of their channels, chosen per layer at run time.

Knobs: `stageS` is the width of stage S's residual stream (the stem's output for stage 1, every
block's output and its shortcut: what residual additions sum must be one width), and `layerS.B` the
inner width of block B of stage S (its first convolution's output). Each knob's values are the
stage's width times the architecture's `ratios` (1, 3/4, 1/2, 1/4 by default), largest first, so
a narrower width is a prefix of a wider one: every layer uses the first `c` output channels and as
many input channels as its input has of one full weight (and the first `c` entries of its BN), and
a switch is a few integer assignments. Narrower dense layers are what pays on CPUs, where grouped
convolutions often do not (measured in issue 31's table).

With `group_choices` (e.g. [1, 2, 4]; none by default, so older checkpoints build as they did) each
block's two 3x3 convolutions also get a group count (`layerS.B.groups1`, `.groups2`): the conv then
runs the block-diagonal cut of its width prefix (WeNet's group switching on the active channels),
followed by a channel shuffle by conv1's group count, so one layer can be narrower and grouped and
a device's search finds which kind pays there. Every group count must divide every width.

BN is one layer per convolution, sliced with it: training updates the statistics of the channels a
mode uses (`set_bn_tracking(False)` stops a sampled mode from updating them), and evaluation
recalibrates each mode's statistics (the evaluator's per-mode calibration), as US-Nets do.
`materialize` slices the weights into a physically smaller plain network (BN folded into the
convolutions), which exports on every runtime. The first block of stages 2 and 3 has a 1x1-conv
shortcut (the stride and the width change there); the others add their input unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.experimental.optimization import fuse

from subnetsearch.costs import Cost, LayerShape, network_cost
from subnetsearch.errors import InputError
from subnetsearch.spaces import Knob, Mode, SearchSpace
from subnetsearch.supernets._base import BaseSupernet, conv_areas
from subnetsearch.supernets._layers import ChannelShuffle
from subnetsearch.supernets._materialize import DynamicLeafTracer, fold_shuffles, warn_untraceable

NESTED_RESNET_DEFAULTS: dict[str, Any] = {"depth": 20, "widths": [16, 32, 64], "in_channels": 1, "num_classes": 10,
                                          "input_size": 28, "ratios": [1.0, 0.75, 0.5, 0.25]}


class NestState:
    """The active value of every knob (widths, and group counts where the architecture offers
    them), shared by the layers of one network."""

    __slots__ = ("track_running_stats", "widths")

    def __init__(self, widths: Mapping[str, int]) -> None:
        self.widths = dict(widths)
        self.track_running_stats = True


def grouped_weight(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """The (out, in / g, k, k) weight of a g-group conv cut from a dense (out, in, k, k) one: group j
    keeps the block of output channels j and input channels j (block-diagonal), as WeNet's group
    switching does, so a narrower prefix grouped is the same cut of a narrower dense weight."""
    if groups == 1:
        return weight
    blocks = weight.unflatten(0, (groups, -1)).unflatten(2, (groups, -1))  # (g, out/g, g, in/g, k, k)
    return torch.diagonal(blocks, dim1=0, dim2=2).permute(4, 0, 1, 2, 3).flatten(0, 1)


def shuffle_channels(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle by `groups` (reshape, transpose, flatten): after a g-group conv,
    each consecutive share of the channels holds some of every group's."""
    return x.unflatten(1, (groups, -1)).transpose(1, 2).flatten(1, 2)


class NestedConv2d(nn.Conv2d):
    """A conv on the first `widths[knob]` output channels (all of them without a knob) and as many
    input channels as its input has, of one full weight; in `widths[groups_knob]` groups where it
    has a group knob (the block-diagonal cut of that prefix)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, state: NestState,
                 knob: str | None, groups_knob: str | None = None) -> None:
        super().__init__(in_channels, out_channels, kernel, stride, kernel // 2, bias=False)
        self.state, self.knob, self.groups_knob = state, knob, groups_knob

    @property
    def active_out(self) -> int:
        return self.out_channels if self.knob is None else self.state.widths[self.knob]

    @property
    def active_groups(self) -> int:
        return 1 if self.groups_knob is None else self.state.widths[self.groups_knob]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = self.active_groups
        weight = grouped_weight(self.weight[:self.active_out, :x.shape[1]], groups)
        return F.conv2d(x, weight, None, self.stride, self.padding, 1, groups)

    def to_static(self, in_channels: int) -> nn.Conv2d:
        out, groups = self.active_out, self.active_groups
        padding = cast(tuple[int, ...], self.padding)[0]
        conv = nn.Conv2d(in_channels, out, self.kernel_size[0], self.stride[0], padding, bias=False, groups=groups)
        with torch.no_grad():
            conv.weight.copy_(grouped_weight(self.weight[:out, :in_channels], groups))
        return conv


class NestedBatchNorm2d(nn.BatchNorm2d):
    """BN over the first channels of its input (as many as it has)."""

    def __init__(self, channels: int, state: NestState) -> None:
        super().__init__(channels)
        self.state = state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        assert self.running_mean is not None and self.running_var is not None
        tracking = self.training and self.state.track_running_stats
        if tracking and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        mean = self.running_mean[:c] if (tracking or not self.training) else None
        var = self.running_var[:c] if (tracking or not self.training) else None
        return F.batch_norm(x, mean, var, self.weight[:c], self.bias[:c], self.training, self.momentum or 0.1,
                            self.eps)

    def to_static(self, channels: int) -> nn.BatchNorm2d:
        norm = nn.BatchNorm2d(channels, eps=self.eps)
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(norm, name).copy_(getattr(self, name)[:channels])
        return norm.eval()


class NestedLinear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight[:, :x.shape[1]], self.bias)

    def to_static(self, in_features: int) -> nn.Linear:
        linear = nn.Linear(in_features, self.out_features)
        with torch.no_grad():
            linear.weight.copy_(self.weight[:, :in_features])
            linear.bias.copy_(self.bias)
        return linear


class Block(nn.Module):
    """relu(bn2(conv2(shuffle(relu(bn1(conv1(x)))))) + shortcut(x)), shortcut a 1x1 conv + BN or the
    input; the shuffle by conv1's active group count where it is grouped (a static copy holds it as
    a `ChannelShuffle` module, which materializing folds into a dense conv2)."""

    def __init__(self, conv1: nn.Module, bn1: nn.Module, conv2: nn.Module, bn2: nn.Module,
                 shortcut: nn.Module | None, shuffle: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1, self.bn1, self.conv2, self.bn2 = conv1, bn1, conv2, bn2
        self.shortcut = shortcut if shortcut is not None else nn.Identity()
        self.shuffle = shuffle if shuffle is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        if isinstance(self.conv1, NestedConv2d) and self.conv1.active_groups > 1:
            out = shuffle_channels(out, self.conv1.active_groups)
        return F.relu(self.bn2(self.conv2(self.shuffle(out))) + self.shortcut(x))


class Network(nn.Module):
    def __init__(self, stem: nn.Module, stem_bn: nn.Module, blocks: Sequence[nn.Module], fc: nn.Module) -> None:
        super().__init__()
        self.stem, self.stem_bn, self.blocks, self.fc = stem, stem_bn, nn.Sequential(*blocks), fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(F.relu(self.stem_bn(self.stem(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _widths_of(full: int, ratios: Sequence[float]) -> tuple[int, ...]:
    return tuple(sorted({max(1, round(full * ratio)) for ratio in ratios}, reverse=True))


def _group_choices(choices: Sequence[int], width_knobs: Sequence[Knob]) -> tuple[int, ...]:
    """The group counts a block's convs offer (1 first), each dividing every width a conv can take
    (a width that a group count does not divide is refused here, not when a mode meets it)."""
    try:
        groups = tuple(sorted({int(g) for g in choices}))
    except (TypeError, ValueError):
        raise InputError(f"group_choices must be positive integers, got {choices!r}") from None
    if not groups or groups[0] != 1:
        raise InputError(f"group_choices must be positive integers, 1 among them; got {list(choices)}")
    for knob in width_knobs:
        for width in knob.values:
            bad = [g for g in groups if width % g]
            if bad:
                raise InputError(f"group count {bad[0]} does not divide width {width} of {knob.name} (its widths "
                                 f"{list(knob.values)}): choose group counts that divide every width")
    return groups


class NestedSupernet(BaseSupernet):
    family = "nested"
    mode_kind = "width"
    stored_bn_per_mode = False  # one BN per convolution, sliced: its statistics are a mix of the widths trained

    def __init__(self, arch: Mapping[str, Any]) -> None:
        super().__init__()
        self.arch = {**NESTED_RESNET_DEFAULTS, **dict(arch)}
        depth, widths = int(self.arch["depth"]), [int(w) for w in self.arch["widths"]]
        if (depth - 2) % 6 or depth < 8:
            raise InputError(f"CIFAR ResNet depth must be 6n+2 with n >= 1, got {depth}")
        if len(widths) != 3 or min(widths) < 1:
            raise InputError(f"widths must be three positive stage widths, got {widths}")
        ratios = [float(r) for r in self.arch["ratios"]]
        if not ratios or any(not 0 < r <= 1 for r in ratios) or 1.0 not in ratios:
            raise InputError(f"ratios must be shares of a layer's channels in (0, 1], 1 among them; got {ratios}")
        self.in_channels, self.num_classes = int(self.arch["in_channels"]), int(self.arch["num_classes"])
        size = int(self.arch["input_size"])
        self.input_shape = (self.in_channels, size, size)
        per_stage = (depth - 2) // 6
        knobs = [Knob(f"stage{s + 1}", "categorical", _widths_of(w, ratios)) for s, w in enumerate(widths)]
        knobs += [Knob(f"layer{s + 1}.{b}", "categorical", _widths_of(w, ratios))
                  for s, w in enumerate(widths) for b in range(per_stage)]
        self.width_knobs = tuple(knob.name for knob in knobs)
        groups = _group_choices(self.arch.get("group_choices", [1]), knobs)
        grouped = len(groups) > 1  # each block's two 3x3 convs get a group count beside their widths
        if grouped:
            knobs += [Knob(f"layer{s + 1}.{b}.groups{c}", "ordered", groups)
                      for s in range(3) for b in range(per_stage) for c in (1, 2)]
        self.group_knobs = tuple(knob.name for knob in knobs if knob.name not in self.width_knobs)
        self.space = SearchSpace(knobs, context={k: v for k, v in self.arch.items() if k != "family"})
        self.state = NestState({knob.name: knob.values[0] for knob in knobs})
        state = self.state
        stem = NestedConv2d(self.in_channels, widths[0], 3, 1, state, "stage1")
        blocks = []
        previous = widths[0]
        for s, width in enumerate(widths):
            for b in range(per_stage):
                stride = 2 if s > 0 and b == 0 else 1
                shortcut = None
                if stride != 1 or previous != width:
                    shortcut = nn.Sequential(NestedConv2d(previous, width, 1, stride, state, f"stage{s + 1}"),
                                             NestedBatchNorm2d(width, state))
                group1, group2 = (f"layer{s + 1}.{b}.groups1", f"layer{s + 1}.{b}.groups2") if grouped else (None, None)
                blocks.append(Block(NestedConv2d(previous, width, 3, stride, state, f"layer{s + 1}.{b}", group1),
                                    NestedBatchNorm2d(width, state),
                                    NestedConv2d(width, width, 3, 1, state, f"stage{s + 1}", group2),
                                    NestedBatchNorm2d(width, state), shortcut))
                previous = width
        self.network = Network(stem, NestedBatchNorm2d(widths[0], state), blocks,
                               NestedLinear(widths[-1], self.num_classes))
        self._areas = self._trace_areas()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.network(x))

    @property
    def mode(self) -> Mode:
        return self.space.mode(dict(self.state.widths))

    def set_mode(self, mode: Mode) -> None:
        self.space.validate(mode)
        self.state.widths = {name: int(value) for name, value in mode.values.items()}

    def set_bn_tracking(self, enabled: bool) -> None:
        self.state.track_running_stats = enabled

    def uniform_mode(self, ratio: float) -> Mode:
        """Every knob at `ratio` of its full width (the architecture's ratios)."""
        ratios = [float(r) for r in self.arch["ratios"]]
        if ratio not in ratios:
            raise InputError(f"no width ratio {ratio}; this supernet offers {ratios}")
        values = {knob.name: max(1, round(knob.values[0] * ratio)) for knob in self.space.knobs
                  if knob.name in self.width_knobs}
        return self.space.mode({**values, **{name: 1 for name in self.group_knobs}})

    def groups_mode(self, groups: int) -> Mode:
        """Full width, every block conv in `groups` groups (the WeNet 1/g network of this supernet)."""
        offered = [g for knob in self.space.knobs if knob.name in self.group_knobs for g in knob.values]
        if groups not in offered:
            raise InputError(f"no group count {groups}; this supernet offers {sorted(set(offered)) or 'none'}")
        full = {knob.name: knob.values[0] for knob in self.space.knobs if knob.name in self.width_knobs}
        return self.space.mode({**full, **{name: groups for name in self.group_knobs}})

    def kind_of(self, mode: Mode) -> str:
        """full, width, groups or width+groups: which kinds of knob `mode` moves from full."""
        narrow = any(mode.values[k.name] != k.values[0] for k in self.space.knobs if k.name in self.width_knobs)
        grouped = any(int(mode.values[name]) > 1 for name in self.group_knobs)
        return self.width_and_groups_kind(narrow, grouped)

    def channel_groups(self) -> dict[str, tuple[list[nn.Module], list[tuple[nn.Module, int]]]]:
        """Per knob: the (conv, BN) modules that produce its channels, and the modules that consume
        them with the dimension of their weight that indexes them (1 for convs and the classifier)."""
        net = self.network
        groups: dict[str, tuple[list[nn.Module], list[tuple[nn.Module, int]]]] = {
            name: ([], []) for name in self.width_knobs}
        groups["stage1"][0].extend([net.stem, net.stem_bn])
        stream = "stage1"
        for block in net.blocks:
            assert isinstance(block, Block)
            conv1, conv2 = cast(NestedConv2d, block.conv1), cast(NestedConv2d, block.conv2)
            inner, out = cast(str, conv1.knob), cast(str, conv2.knob)
            groups[stream][1].append((conv1, 1))
            if isinstance(block.shortcut, nn.Sequential):
                groups[stream][1].append((block.shortcut[0], 1))
                groups[out][0].extend([block.shortcut[0], block.shortcut[1]])
            groups[inner][0].extend([conv1, block.bn1])
            groups[inner][1].append((conv2, 1))
            groups[out][0].extend([conv2, block.bn2])
            stream = out
        groups[stream][1].append((net.fc, 1))
        return groups

    def sort_channels(self) -> dict[str, list[int]]:
        """Put every knob's most important channels first (once, on trained weights: the nesting order
        of slimmable training started from a network trained without it). A channel's importance is the
        norm of its filter scaled as its BN scales it (|gamma| / sqrt(var + eps)), summed over the
        layers that write it (a residual stream's: the stem or shortcut and every block's output). The
        full network computes the same function after. Returns each knob's permutation (new -> old)."""
        orders = {}
        with torch.no_grad():
            for name, (producers, consumers) in self.channel_groups().items():
                score = torch.zeros(next(k for k in self.space.knobs if k.name == name).values[0])
                for conv, norm in zip(producers[::2], producers[1::2], strict=True):
                    assert isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d)
                    assert norm.running_var is not None
                    scale = norm.weight.abs() / torch.sqrt(norm.running_var + norm.eps)
                    score += conv.weight.flatten(1).norm(dim=1) * scale
                order = torch.argsort(score, descending=True, stable=True)
                for module in producers:
                    for tensor in (*module.parameters(recurse=False), *module.buffers(recurse=False)):
                        if tensor.dim() > 0:
                            tensor.copy_(tensor[order])
                for module, dim in consumers:
                    weight = cast(torch.Tensor, module.weight)
                    weight.copy_(weight.index_select(dim, order))
                orders[name] = order.tolist()
        return orders

    def grown(self, widths: Sequence[int]) -> NestedSupernet:
        """A wider copy (Net2Net-style growth, function preserving): stage widths `widths`, each at
        least this one's, the same depth and ratios. Every weight of this supernet becomes the prefix
        of the wider one's (so its nesting order holds, and where this one's widths are among the
        wider one's, e.g. 24 = 3/4 of 32, its full network is the wider one's mode there); the added
        channels start from the initialization of a new supernet (the
        caller seeds it) and every weight that reads them starts at zero, so the wider full network
        computes what this one's full network does until training moves them. Raises InputError
        for a narrower or ill-formed `widths`."""
        widths = [int(w) for w in widths]
        old = [int(w) for w in self.arch["widths"]]
        if len(widths) != 3 or any(new < was for new, was in zip(widths, old, strict=True)):
            raise InputError(f"growing needs three stage widths, each at least this supernet's {old}; got {widths}")
        wider = NestedSupernet({**self.arch, "widths": widths})
        wider.set_mode(wider.space.mode({k.name: k.values[0] for k in wider.space.knobs}))
        source = self.state_dict()
        with torch.no_grad():
            for name, tensor in wider.state_dict().items():
                was = source[name]
                if tensor.dim() == 0:
                    tensor.copy_(was)
                    continue
                tensor[tuple(slice(0, n) for n in was.shape)].copy_(was)
            full = {knob.name: knob.values[0] for knob in self.space.knobs if knob.name in self.width_knobs}
            for name, (_, consumers) in wider.channel_groups().items():
                for module, dim in consumers:
                    weight = cast(torch.Tensor, module.weight)
                    weight.narrow(dim, full[name], weight.shape[dim] - full[name]).zero_()
        return wider

    def _groups_offered(self) -> list[int]:
        return sorted({g for knob in self.space.knobs if knob.name in self.group_knobs for g in knob.values})

    def uniform_modes(self) -> list[Mode]:
        """Every width knob at one of the ratios between 1 and the smallest; every group knob at one
        of the group counts between 1 and the largest."""
        ratios = sorted({float(r) for r in self.arch["ratios"]}, reverse=True)[1:-1]
        return [self.uniform_mode(ratio) for ratio in ratios] + [self.groups_mode(g) for g in self._groups_offered()[1:-1]]

    def named_modes(self) -> dict[str, Mode]:
        named = super().named_modes()
        for ratio in self.arch["ratios"]:
            if 0 < float(ratio) < 1:
                named[f"width:{float(ratio):g}"] = self.uniform_mode(float(ratio))
        for groups in self._groups_offered()[1:]:
            named[f"groups:{groups}"] = self.groups_mode(groups)
        return named

    def mode_named(self, text: str) -> Mode | None:
        if text.startswith("groups:"):
            try:
                groups = int(text.split(":", 1)[1])
            except ValueError:
                raise InputError(f"groups:G needs a group count, got {text!r}") from None
            return self.groups_mode(groups)
        if text.startswith("width:"):
            try:
                ratio = float(text.split(":", 1)[1])
            except ValueError:
                raise InputError(f"width:R needs a ratio, got {text!r}") from None
            return self.uniform_mode(ratio)
        return super().mode_named(text)

    def describe(self, mode: Mode) -> str:
        """Each width knob's share of its channels: "all .5" for a uniform mode, else the stages'
        residual widths, then each stage's block widths ("stages 1 .5 .75; blocks 1 .25 .25 | .5 .5 1
        | ..."); where a block conv is grouped, each block's two group counts after ("; groups 1/2 4/4
        1/1 | ...")."""
        shares = {knob.name: mode.values[knob.name] / knob.values[0] for knob in self.space.knobs
                  if knob.name in self.width_knobs}
        widths = self._describe_widths(shares)
        if not any(int(mode.values[name]) > 1 for name in self.group_knobs):
            return widths
        stages: dict[str, list[str]] = {}
        for name in self.group_knobs[::2]:  # groups1 and groups2 of each block, in order
            stages.setdefault(name.split(".")[0], []).append(
                f"{mode.values[name]}/{mode.values[name.removesuffix('1') + '2']}")
        return f"{widths}; groups " + " | ".join(" ".join(values) for values in stages.values())

    def _describe_widths(self, shares: Mapping[str, float]) -> str:
        def text(share: float) -> str:
            return f"{share:.2f}".rstrip("0").rstrip(".").removeprefix("0") or "0"

        if len(set(shares.values())) == 1:
            return f"all {text(next(iter(shares.values())))}"
        stages = [name for name in shares if name.startswith("stage")]
        blocks: dict[str, list[str]] = {}
        for name in shares:
            if not name.startswith("stage"):
                blocks.setdefault(name.split(".")[0], []).append(text(shares[name]))
        return (f"stages {' '.join(text(shares[name]) for name in stages)}; blocks "
                + " | ".join(" ".join(values) for values in blocks.values()))

    def mode_layout(self) -> str:
        return "width shares (stages; blocks by stage)" + ("; groups per block" if self.group_knobs else "")

    def materialize(self, mode: Mode) -> nn.Module:
        previous = self.mode
        self.set_mode(mode)
        try:
            static = self._static_copy()
        finally:
            self.set_mode(previous)
        try:
            traced = fx.GraphModule(static, DynamicLeafTracer().trace(static))  # shuffles stay modules
        except Exception as error:  # not traceable: the unfused copy computes the same function
            warn_untraceable(static, error)
            return static
        fused = cast(fx.GraphModule, fuse(traced, inplace=True, no_trace=True))
        fold_shuffles(fused)  # a shuffle before a dense conv2 goes into its weights
        return fused.eval()

    def _static_copy(self) -> Network:
        net = self.network
        stem = cast(NestedConv2d, net.stem).to_static(self.in_channels)
        width = stem.out_channels
        blocks = []
        for block in net.blocks:
            assert isinstance(block, Block)
            conv1 = cast(NestedConv2d, block.conv1).to_static(width)
            conv2 = cast(NestedConv2d, block.conv2).to_static(conv1.out_channels)
            shortcut = None
            if isinstance(block.shortcut, nn.Sequential):
                conv = cast(NestedConv2d, block.shortcut[0]).to_static(width)
                shortcut = nn.Sequential(conv, cast(NestedBatchNorm2d, block.shortcut[1]).to_static(conv.out_channels))
            shuffle = ChannelShuffle(conv1.out_channels, conv1.groups) if conv1.groups > 1 else None
            blocks.append(Block(conv1, cast(NestedBatchNorm2d, block.bn1).to_static(conv1.out_channels), conv2,
                                cast(NestedBatchNorm2d, block.bn2).to_static(conv2.out_channels), shortcut, shuffle))
            width = conv2.out_channels
        static = Network(stem, cast(NestedBatchNorm2d, net.stem_bn).to_static(stem.out_channels), blocks,
                         cast(NestedLinear, net.fc).to_static(width))
        return static.eval()

    def layer_shapes(self, mode: Mode) -> tuple[LayerShape, ...]:
        """Each conv and the classifier at the mode's widths (BN folded: every conv has a bias)."""
        self.space.validate(mode)
        widths = {name: int(value) for name, value in mode.values.items()}
        shapes = []
        width = self.in_channels
        for name, module in self.network.named_modules():
            if isinstance(module, NestedConv2d):
                out = module.out_channels if module.knob is None else widths[module.knob]
                source = width if not name.endswith("shortcut.0") else self._block_input(name, widths)
                groups = widths[module.groups_knob] if module.groups_knob else 1
                shapes.append(LayerShape(name, "conv", source, out, module.kernel_size[0] ** 2, *self._areas[name],
                                         groups, None, True))
                if not name.endswith("shortcut.0"):
                    width = out
        shapes.append(LayerShape("fc", "linear", width, self.num_classes, 1, 1, 1, 1, None, True))
        return tuple(shapes)

    def _block_input(self, shortcut_name: str, widths: Mapping[str, int]) -> int:
        """The input width of the block a shortcut belongs to: the previous stage's stream."""
        index = int(shortcut_name.split(".")[1])
        per_stage = (int(self.arch["depth"]) - 2) // 6
        stage = index // per_stage  # 0-based stage of this block (a shortcut starts stages 2 and 3)
        return widths[f"stage{stage}"]

    def cost(self, mode: Mode) -> Cost:
        return network_cost(self.layer_shapes(mode), {})

    def layers_for(self, mode: Mode) -> tuple[tuple[LayerShape, ...], dict[str, int]]:
        return self.layer_shapes(mode), {}

    def _trace_areas(self) -> dict[str, tuple[int, int]]:
        """(output area, input area) of every conv, from one forward pass at batch 1."""
        return conv_areas(self.network, self.input_shape, NestedConv2d)
