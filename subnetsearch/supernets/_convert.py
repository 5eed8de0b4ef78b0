"""Turn a torchvision model into a WeNet supernet: dense convolutions followed by a batch norm become
group-switchable, that BN becomes switchable (one private BN per group count, the premise of WeNet
section III-C), and a channel shuffle goes between two consecutive convolutions.

A convolution whose output does not go straight into a BatchNorm2d (a squeeze-excitation conv, a
DenseNet conv feeding a concatenation, a ConvNeXt downsampling conv after a LayerNorm) stays static:
switching its groups would change its output distribution with no private BN to absorb it. What was
left static, and why, is in the `ConversionReport`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import fx, nn

from subnetsearch.errors import SubnetsearchError
from subnetsearch.supernets._layers import ChannelShuffle, GroupSwitchConv2d, SwitchableBatchNorm2d
from subnetsearch.supernets._resnet import shuffle_groups

_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU)


class ConversionError(SubnetsearchError, ValueError):
    """A model the converter cannot turn into a useful supernet; the message names the model, the
    layer and the reason."""


@dataclass(frozen=True)
class ConversionReport:
    """What the converter made switchable and what it left static.

    `switchable`: the layers that became knobs. `static`: every other conv / linear layer with the
    reason it stayed static. `switchable_macs_share`: the knobs' share of the full network's MACs
    (filled in once the supernet has traced its layer shapes; None before)."""

    switchable: tuple[str, ...]
    static: dict[str, str] = field(default_factory=dict)
    switchable_macs_share: float | None = None

    def to_dict(self) -> dict:
        return {"switchable": list(self.switchable), "static": dict(self.static),
                "switchable_macs_share": self.switchable_macs_share}

    def summary(self) -> str:
        share = "" if self.switchable_macs_share is None else f" ({self.switchable_macs_share:.1%} of the MACs)"
        reasons = Counter(reason.split(":")[0] for reason in self.static.values())
        kept = "; ".join(f"{count} {reason}" for reason, count in reasons.most_common())
        return f"{len(self.switchable)} switchable layers{share}; static: {kept or 'none'}"


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
                        shuffle: bool = True, shuffle_rule: str = "max") -> ConversionReport:
    """Convert `model` in place; report what became switchable and what stayed static, and why.

    The full mode of the result computes exactly what the original model computes (shuffles are
    compensated in the weights; every private BN copies the original's parameters, statistics, eps
    and momentum), so a pretrained model's weights carry over. Raises ConversionError if the model
    cannot be traced.
    """
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
            static[str(node.target)] = "linear: only convolutions are made switchable"
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
    return ConversionReport(tuple(switchable), static)


def convert_to_wenet(model: nn.Module, group_choices: Sequence[int] = (1, 2, 4, 8, 16),
                     shuffle: bool = True, shuffle_rule: str = "max") -> nn.Module:
    """Convert in place and return `model` (see `convert_with_report`)."""
    convert_with_report(model, group_choices, shuffle, shuffle_rule)
    return model
