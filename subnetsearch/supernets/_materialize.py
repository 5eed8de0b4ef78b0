"""Turn a supernet in one mode into a plain static network: ordinary nn.Conv2d(groups=g), BN folded
into the convolutions, channel shuffles folded into a neighbouring dense convolution where possible."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Collection
from typing import cast

import torch
from torch import fx, nn
from torch.fx.experimental.optimization import fuse

from subnetsearch.errors import InputError
from subnetsearch.supernets._layers import (
    ChannelShuffle,
    GroupSwitchConv2d,
    GroupSwitchLinear,
    SwitchableBatchNorm2d,
)
from subnetsearch.supernets._width import WIDTH_LAYERS, is_attention


def _static_module(module: nn.Module, dense: bool = False) -> nn.Module | None:
    if isinstance(module, (GroupSwitchConv2d, GroupSwitchLinear)):
        return module.to_static(dense)
    if isinstance(module, WIDTH_LAYERS):
        return module.to_static()
    if isinstance(module, SwitchableBatchNorm2d):
        return copy.deepcopy(module.active)
    if isinstance(module, ChannelShuffle) and (not module.enabled or module.max_groups == 1):
        return nn.Identity()
    return None


def to_static(network: nn.Module, dense: Collection[str] = ()) -> nn.Module:
    """A copy of `network` (already switched to the wanted mode) with every dynamic layer replaced;
    the grouped layers named in `dense` by their dense equivalents."""
    static = copy.deepcopy(network)
    unknown = sorted(set(dense) - {name for name, m in static.named_modules()
                                   if isinstance(m, (GroupSwitchConv2d, GroupSwitchLinear))})
    if unknown:
        raise InputError(f"no switchable layer {unknown[0]!r} to realize as a dense one")
    for name, module in list(static.named_modules()):
        replacement = _static_module(module, name in dense)
        if replacement is not None and name:
            parent_name, _, child = name.rpartition(".")
            setattr(static.get_submodule(parent_name) if parent_name else static, child, replacement)
    return static.eval()


class DynamicLeafTracer(fx.Tracer):
    """Keeps every dynamic layer (group or width), ChannelShuffle and attention module as one graph node (the graph passes of
    materialize, S-BN pairing and the latency lookup table all look for them)."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        leaves = (GroupSwitchConv2d, GroupSwitchLinear, SwitchableBatchNorm2d, ChannelShuffle, *WIDTH_LAYERS)
        return isinstance(module, leaves) or is_attention(module) or super().is_leaf_module(module, qualified_name)


def single_user(node: fx.Node | None) -> fx.Node | None:
    if node is None:
        return None
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def is_relu(node: fx.Node | None, modules: dict[str, nn.Module]) -> bool:
    """A ReLU / ReLU6 node, functional or module."""
    if node is None:
        return False
    if node.op == "call_function":
        return node.target in (torch.relu, torch.nn.functional.relu)
    return node.op == "call_module" and isinstance(modules[str(node.target)], (nn.ReLU, nn.ReLU6))


def _dense_conv(node: fx.Node | None, modules: dict[str, nn.Module]) -> nn.Conv2d | None:
    if node is not None and node.op == "call_module":
        module = modules[str(node.target)]
        if isinstance(module, nn.Conv2d) and module.groups == 1:
            return module
    return None


def fold_shuffles(graph_module: fx.GraphModule) -> int:
    """Fold each channel shuffle into a dense conv next to it. Returns how many were folded.

    y = shuffle(x) has y[:, i] = x[:, p[i]]. A dense consumer conv absorbs it by reordering its input
    channels (W[:, argsort(p)]); a dense producer conv -> (ReLU) -> shuffle absorbs it by reordering
    its output channels (W[p], b[p]), ReLU being elementwise. Grouped neighbours cannot absorb a
    permutation that crosses their groups, so the shuffle stays there.
    """
    modules = dict(graph_module.named_modules())
    folded = 0
    for node in list(graph_module.graph.nodes):
        if node.op != "call_module" or not isinstance(modules[str(node.target)], ChannelShuffle):
            continue
        permutation = modules[str(node.target)].permutation()
        consumer = _dense_conv(single_user(node), modules)
        source = node.args[0]
        producer_node = source.args[0] if is_relu(source, modules) and single_user(source) is node else source
        producer = _dense_conv(producer_node, modules) if single_user(producer_node) in (source, node) else None
        with torch.no_grad():
            if consumer is not None:
                consumer.weight.copy_(consumer.weight[:, torch.argsort(permutation)])
            elif producer is not None:
                producer.weight.copy_(producer.weight[permutation])
                if producer.bias is not None:
                    producer.bias.copy_(producer.bias[permutation])
            else:
                continue
        node.replace_all_uses_with(source)
        graph_module.graph.erase_node(node)
        folded += 1
    graph_module.graph.lint()
    graph_module.recompile()
    graph_module.delete_all_unused_submodules()
    return folded


class GatherShuffle(nn.Module):
    """A channel shuffle as one gather along the channel axis (ONNX `Gather` with a constant index):
    on some runtimes cheaper than reshape-transpose-reshape, three operators per shuffle."""

    index: torch.Tensor

    def __init__(self, permutation: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("index", permutation.clone().long())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(1, self.index)

    def extra_repr(self) -> str:
        return f"{int(self.index.numel())} channels"


def gather_shuffles(network: nn.Module) -> int:
    """Replace every active channel shuffle left in `network` by its `GatherShuffle`. Returns how many."""
    replaced = 0
    for name, module in list(network.named_modules()):
        if isinstance(module, ChannelShuffle) and module.enabled and module.max_groups > 1 and name:
            parent_name, _, child = name.rpartition(".")
            setattr(network.get_submodule(parent_name) if parent_name else network, child,
                    GatherShuffle(module.permutation()))
            replaced += 1
    return replaced


_WARNED: set[str] = set()


def warn_untraceable(network: nn.Module, error: BaseException) -> None:
    """Say once per network class that its modes are materialized without folding BN and shuffles
    (FX cannot trace it: data-dependent control flow, an untraceable call): the static copy computes
    the same function, only slower. Never silent, never repeated per mode."""
    name = type(network).__qualname__
    if name not in _WARNED:
        _WARNED.add(name)
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        warnings.warn(f"{name} is not FX-traceable ({type(error).__name__}: {first[:200]}): its modes are "
                      "materialized without folding batch norm and shuffles (same outputs, slower)", stacklevel=3)


def materialize_network(network: nn.Module, dense: Collection[str] = (), shuffle: str = "reshape") -> nn.Module:
    """Static, BN-folded, shuffle-folded copy of a network whose dynamic layers are set to a mode
    (the grouped layers named in `dense` realized as dense ones: a shuffle next to one folds away);
    with `shuffle="gather"` the shuffles that remain are computed as one channel gather each."""
    static = to_static(network, dense)
    try:
        traced = fx.GraphModule(static, DynamicLeafTracer().trace(static))
    except Exception as error:  # not FX-traceable (data-dependent control flow): the unfused copy is still exact
        warn_untraceable(static, error)
        if shuffle == "gather":
            gather_shuffles(static)
        return static
    fused = fuse(traced, inplace=True, no_trace=True)
    fold_shuffles(cast(fx.GraphModule, fused))  # no_trace: fuse returns the GraphModule it was given
    if shuffle == "gather":
        gather_shuffles(fused)
    return fused.eval()
