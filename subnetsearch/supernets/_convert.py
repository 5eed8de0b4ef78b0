"""Turn a torchvision model into a WeNet supernet: dense convolutions become group-switchable, the BN
after each becomes switchable, and a channel shuffle goes between two consecutive convolutions."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import fx, nn

from subnetsearch.supernets._layers import ChannelShuffle, GroupSwitchConv2d, SwitchableBatchNorm2d
from subnetsearch.supernets._resnet import shuffle_groups

_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU)


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _next_conv_after(node: fx.Node, modules: dict[str, nn.Module]) -> str | None:
    """The name of the one convolution that node's output feeds (through one optional activation)."""
    users = list(node.users)
    if len(users) == 1 and users[0].op == "call_module" and isinstance(modules[users[0].target], _ACTIVATIONS):
        users = list(users[0].users)
    if len(users) == 1 and users[0].op == "call_module" and isinstance(modules[users[0].target], nn.Conv2d):
        return users[0].target
    return None


def _compensate(model: nn.Module, producer: GroupSwitchConv2d, norm: SwitchableBatchNorm2d, consumer_name: str,
                permutation: torch.Tensor) -> None:
    """Keep the full mode equal to the original model after inserting a shuffle y = x[:, p].

    A dense consumer C absorbs it as C'(y) = C(x) with W' = W[:, p]. A depthwise consumer cannot, so
    the producer's output channels (weights, bias, every private BN) are reordered by p^-1 instead.
    """
    consumer = model.get_submodule(consumer_name)
    with torch.no_grad():
        if isinstance(consumer, GroupSwitchConv2d):
            consumer.weight.copy_(consumer.weight[:, permutation])
            return
        inverse = torch.argsort(permutation)
        producer.weight.copy_(producer.weight[inverse])
        if producer.bias is not None:
            producer.bias.copy_(producer.bias[inverse])
        for private in norm.norms:
            for tensor in (private.weight, private.bias, private.running_mean, private.running_var):
                tensor.copy_(tensor[inverse])


def convert_to_wenet(model: nn.Module, group_choices: Sequence[int] = (1, 2, 4, 8, 16),
                     shuffle: bool = True, shuffle_rule: str = "max") -> nn.Module:
    """Convert in place and return `model`. Depthwise / already-grouped convolutions stay as they are.

    The full mode of the result computes exactly what the original model computes (shuffles are
    compensated in the weights), so a pretrained model's weights carry over.
    """
    graph = fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())
    converted: set[str] = set()
    for name, module in list(modules.items()):
        if isinstance(module, nn.Conv2d) and module.groups == 1 and module.kernel_size[0] == module.kernel_size[1]:
            _set(model, name, GroupSwitchConv2d.from_conv(module, group_choices))
            converted.add(name)
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], nn.BatchNorm2d):
            continue
        source = node.args[0]
        if source.op != "call_module" or source.target not in converted:
            continue
        conv = model.get_submodule(source.target)
        norm = SwitchableBatchNorm2d.from_batchnorm(modules[node.target], conv.group_choices)
        consumer = _next_conv_after(node, modules)
        if consumer is not None and len(conv.group_choices) > 1:
            channels = conv.out_channels
            shuffle_layer = ChannelShuffle(channels, shuffle_groups(channels, conv.group_choices, shuffle_rule), shuffle)
            _compensate(model, conv, norm, consumer, shuffle_layer.permutation())
            _set(model, node.target, nn.Sequential(norm, shuffle_layer))
        else:
            _set(model, node.target, norm)
    return model
