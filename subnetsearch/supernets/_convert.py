"""Turn a torchvision model into a supernet of group counts and widths: dense convolutions followed
by a batch norm become group-switchable, that BN becomes switchable (one private BN per group count,
the premise of WeNet section III-C), and a channel shuffle goes between two consecutive convolutions.

A convolution whose output does not go straight into a BatchNorm2d (a squeeze-excitation conv, a
DenseNet conv feeding a concatenation, a ConvNeXt downsampling conv after a LayerNorm) cannot switch
its groups: that would change its output distribution with no private BN to absorb it. Such layers,
and linear layers, get a width knob instead where their output reaches only dense layers of their
kind through per-channel operations (`_width`: transformer and ConvNeXt MLPs, VGG / AlexNet /
SqueezeNet convolutions); the rest stay static. Which knob each layer got, and why the static ones
stayed static, is in the `ConversionReport`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

import torch
from torch import fx, nn

from subnetsearch.errors import SubnetsearchError
from subnetsearch.supernets._layers import ChannelShuffle, GroupSwitchConv2d, SwitchableBatchNorm2d
from subnetsearch.supernets._resnet import shuffle_groups
from subnetsearch.supernets._width import WidthConv2d, WidthLinear, WidthState, sort_by_norm, width_choices, width_consumers

_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU)


class ConversionError(SubnetsearchError, ValueError):
    """A model the converter cannot turn into a useful supernet; the message names the model, the
    layer and the reason."""


@dataclass(frozen=True)
class ConversionReport:
    """What the converter made switchable and what it left static.

    `switchable`: the layers that became knobs (a knob is named by its layer). `knobs`: what each
    layer whose cost a knob changes got: "groups", "width" (its output channels), "input width"
    (it reads a narrower layer's output), "width, input width". `static`: every other conv / linear
    layer with the reason it stayed static. `switchable_macs_share`: the share of the full
    network's MACs in layers a knob changes (filled in once the supernet has traced its layer
    shapes; None before)."""

    switchable: tuple[str, ...]
    static: dict[str, str] = field(default_factory=dict)
    switchable_macs_share: float | None = None
    knobs: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"switchable": list(self.switchable), "knobs": dict(self.knobs), "static": dict(self.static),
                "switchable_macs_share": self.switchable_macs_share}

    def summary(self) -> str:
        share = "" if self.switchable_macs_share is None else f" ({self.switchable_macs_share:.1%} of the MACs)"
        reasons = Counter(reason.split(":")[0] for reason in self.static.values())
        kept = "; ".join(f"{count} {reason}" for reason, count in reasons.most_common())
        kinds = Counter(self.knobs[layer].split(",")[0] for layer in self.switchable if layer in self.knobs)
        split = f" ({', '.join(f'{count} {kind}' for kind, count in sorted(kinds.items()))})" if len(kinds) > 1 else ""
        return f"{len(self.switchable)} switchable layers{split}{share}; static: {kept or 'none'}"


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _describe(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        return f"{type(modules[str(node.target)]).__name__} {node.target}"
    if node.op == "output":
        return "the output"
    return getattr(node.target, "__name__", str(node.target))


def _next_conv_after(node: fx.Node, modules: dict[str, nn.Module]) -> str | None:
    """The name of the one convolution that node's output feeds (through one optional activation)."""
    users = list(node.users)
    if len(users) == 1 and users[0].op == "call_module" and isinstance(modules[str(users[0].target)], _ACTIVATIONS):
        users = list(users[0].users)
    if len(users) == 1 and users[0].op == "call_module" and isinstance(modules[str(users[0].target)], nn.Conv2d):
        return str(users[0].target)
    return None


def _why_static(node: fx.Node, conv: nn.Conv2d, modules: dict[str, nn.Module], calls: Counter,
                group_choices: Sequence[int]) -> str | None:
    """None if the conv can become switchable, else why not."""
    if calls[node.target] > 1:
        return f"shared: called {calls[node.target]} times in one forward pass"
    if conv.groups != 1:
        return f"already grouped: {conv.groups} groups" + (" (depthwise)" if conv.groups == conv.in_channels else "")
    if conv.kernel_size[0] != conv.kernel_size[1]:
        return f"non-square kernel: {tuple(conv.kernel_size)}"
    users = list(node.users)
    if len(users) != 1 or users[0].op != "call_module" or not isinstance(modules[str(users[0].target)], nn.BatchNorm2d):
        feeds = ", ".join(_describe(user, modules) for user in users) or "nothing"
        return f"no private BN: its output feeds {feeds}, not a BatchNorm2d"
    norm = modules[str(users[0].target)]
    if not (norm.affine and norm.track_running_stats) or calls[users[0].target] > 1:
        return f"no private BN: {users[0].target} is not an affine BatchNorm2d with running statistics used once"
    return None


def _compensate(model: nn.Module, producer: GroupSwitchConv2d, norm: SwitchableBatchNorm2d, consumer_name: str,
                permutation: torch.Tensor) -> None:
    """Keep the full mode equal to the original model after inserting a shuffle y = x[:, p].

    A dense consumer C absorbs it as C'(y) = C(x) with W' = W[:, p]. A static or depthwise consumer
    cannot, so the producer's output channels (weights, bias, every private BN) are reordered by p^-1.
    """
    consumer = model.get_submodule(consumer_name)
    with torch.no_grad():
        if isinstance(consumer, GroupSwitchConv2d):
            consumer.weight.copy_(consumer.weight[:, permutation])
            return
        if isinstance(consumer, nn.Conv2d) and consumer.groups == 1:
            consumer.weight.copy_(consumer.weight[:, permutation])
            return
        inverse = torch.argsort(permutation)
        producer.weight.copy_(producer.weight[inverse])
        if producer.bias is not None:
            producer.bias.copy_(producer.bias[inverse])
        for private in norm.norms:
            for tensor in (private.weight, private.bias, private.running_mean, private.running_var):
                if isinstance(tensor, torch.Tensor):  # an affine BN with running statistics has all four
                    tensor.copy_(tensor[inverse])


def convert_with_report(model: nn.Module, group_choices: Sequence[int] = (1, 2, 4, 8, 16),
                        shuffle: bool = True, shuffle_rule: str = "max",
                        width_ratios: Sequence[float] = (1.0,)) -> ConversionReport:
    """Convert `model` in place; report what became switchable and what stayed static, and why.

    The full mode of the result computes exactly what the original model computes (shuffles are
    compensated in the weights; every private BN copies the original's parameters, statistics, eps
    and momentum; width knobs' channels are sorted by filter norm with their consumers permuted
    alike), so a pretrained model's weights carry over. `width_ratios` (1 among them) are the
    shares of its channels a width knob offers; (1.0,) gives no width knobs (what supernets
    converted before there were any keep). Raises ConversionError if the model cannot be traced.
    """
    ratios = sorted({float(r) for r in width_ratios}, reverse=True)
    if not ratios or ratios[0] != 1.0 or ratios[-1] <= 0:
        raise ConversionError(f"width_ratios must be shares of a layer's channels in (0, 1], 1 among them; "
                              f"got {list(width_ratios)}")
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as error:  # data-dependent control flow, untraceable ops
        raise ConversionError(f"{type(model).__name__} cannot be traced by torch.fx, so its data flow (which BN "
                              f"follows which conv) is unknown: {type(error).__name__}: {error}") from error
    modules = dict(model.named_modules())
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    static: dict[str, str] = {}
    pairs: list[tuple[fx.Node, fx.Node]] = []  # (conv node, its BN node)
    for node in graph.nodes:
        if node.op != "call_module":
            continue
        module = modules[str(node.target)]
        if isinstance(module, nn.Linear):
            static[str(node.target)] = "linear: no width knob (width_ratios has only 1)"
        elif isinstance(module, nn.Conv2d):
            reason = _why_static(node, module, modules, calls, group_choices)
            if reason is None:
                pairs.append((node, next(iter(node.users))))
            else:
                static[str(node.target)] = reason
    switchable = []
    for conv_node, norm_node in pairs:
        conv = GroupSwitchConv2d.from_conv(modules[str(conv_node.target)], group_choices)
        _set(model, str(conv_node.target), conv)
        norm = SwitchableBatchNorm2d.from_batchnorm(modules[str(norm_node.target)], conv.group_choices)
        if len(conv.group_choices) == 1:  # converted (one private BN, as checkpoints expect), but no knob
            static[str(conv_node.target)] = (f"no group count: none of {tuple(group_choices)} above 1 divides its "
                                        f"{conv.in_channels} input and {conv.out_channels} output channels")
        else:
            switchable.append(str(conv_node.target))
        consumer = _next_conv_after(norm_node, modules)
        if consumer is not None and len(conv.group_choices) > 1:
            channels = conv.out_channels
            shuffle_layer = ChannelShuffle(channels, shuffle_groups(channels, conv.group_choices, shuffle_rule), shuffle)
            _compensate(model, conv, norm, consumer, shuffle_layer.permutation())
            _set(model, str(norm_node.target), nn.Sequential(norm, shuffle_layer))
        else:
            _set(model, str(norm_node.target), norm)
    knobs = {name: "groups" for name in switchable}
    if len(ratios) > 1:
        grouped = {str(conv_node.target) for conv_node, _ in pairs}
        widths = _add_widths(model, graph, modules, calls, grouped, static, ratios)
        switchable += [name for name, kind in widths.items() if kind.startswith("width")]
        knobs.update(widths)
    return ConversionReport(tuple(switchable), static, knobs=knobs)


def _add_widths(model: nn.Module, graph: fx.Graph, modules: dict[str, nn.Module], calls: Counter,
                grouped: set[str], static: dict[str, str], ratios: Sequence[float]) -> dict[str, str]:
    """Give a width knob to every static dense conv / linear layer whose output reaches only dense
    layers of its kind through per-channel operations (`_width`); updates `static` (the layers
    that still have no knob, with why) and returns what each changed layer got."""
    state = WidthState()
    knobs: dict[str, tuple[int, ...]] = {}
    reads: dict[str, str] = {}  # consumer -> the knob of its input
    for node in graph.nodes:
        if node.op != "call_module" or str(node.target) in grouped:
            continue
        name, module = str(node.target), modules[str(node.target)]
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        if calls[node.target] > 1:
            continue  # static already, saying so
        if isinstance(module, nn.Conv2d) and module.groups != 1:
            continue
        if isinstance(module, nn.modules.linear.NonDynamicallyQuantizableLinear):
            static[name] = "linear: an attention projection (its weight is used inside nn.MultiheadAttention)"
            continue
        consumers, why = width_consumers(node, modules, calls, grouped)
        channels = module.out_channels if isinstance(module, nn.Conv2d) else module.out_features
        choices = width_choices(channels, ratios)
        if why is None and len(choices) < 2:
            why = f"{channels} output channels: too few for the width ratios {list(ratios)}"
        if why is not None:
            if name in static and static[name].startswith("no private BN"):
                static[name] = f"{static[name]}; no width knob: {why}"
            elif isinstance(module, nn.Linear):
                static[name] = f"linear: no width knob: {why}"
            continue
        knobs[name] = choices
        for consumer in consumers:
            reads[consumer] = name
    kinds: dict[str, str] = {}
    for name in sorted(set(knobs) | set(reads), key=list(modules).index):
        module = modules[name]
        out_knob, in_knob = (name if name in knobs else None), reads.get(name)
        choices = knobs.get(name, ())
        if isinstance(module, nn.Conv2d):
            _set(model, name, WidthConv2d.from_conv(module, state, out_knob, in_knob, choices))
        else:
            _set(model, name, WidthLinear.from_linear(cast(nn.Linear, module), state, out_knob, in_knob, choices))
        kinds[name] = ", ".join(kind for kind, on in (("width", out_knob), ("input width", in_knob)) if on)
        if out_knob is not None:
            static.pop(name, None)
    sort_by_norm(model)
    return kinds


def convert_to_wenet(model: nn.Module, group_choices: Sequence[int] = (1, 2, 4, 8, 16),
                     shuffle: bool = True, shuffle_rule: str = "max", width_ratios: Sequence[float] = (1.0,)) -> nn.Module:
    """Convert in place and return `model` (see `convert_with_report`)."""
    convert_with_report(model, group_choices, shuffle, shuffle_rule, width_ratios)
    return model
