"""A structural digest of a static network as a runtime runs it: one latency figure per realized graph.

Two realizations with the same digest run the same operators on the same shapes (every all-dense
realization of a grouped mode is the full network's graph: the same convolutions, the same shapes,
other weight values), so they share one latency figure instead of each drawing its own from the
host's noise. The digest covers what decides the time a runtime takes and nothing else:

- the computation: for a traced (FX) network every node in order (its kind, its target, how its
  arguments refer to earlier nodes, its constants); for any other network every submodule in order;
- every module's configuration (type, and its `extra_repr`: channels, kernel, stride, padding,
  groups, bias, eps, ...), every parameter's and buffer's shape and dtype, never their values;
- the input shape (batch included) and the runtime with the options that change its kernels
  (runtime, threads, batch, channels_last); not the timing settings (warm-up, repeats).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import torch
from torch import fx, nn

from subnetsearch.devices._latency import LatencyProtocol

KERNEL_OPTIONS = ("runtime", "batch_size", "threads", "channels_last")  # protocol fields that change what runs


def _tensor(value: torch.Tensor) -> list[Any]:
    return ["tensor", list(value.shape), str(value.dtype)]


def _module_signature(module: nn.Module) -> list[Any]:
    """Type, configuration, and the shapes/dtypes of its own parameters and buffers."""
    kind = type(module)
    own = [[name, *_tensor(tensor)] for name, tensor in
           [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)] if tensor is not None]
    return [f"{kind.__module__}.{kind.__qualname__}", module.extra_repr(), own]


def _argument(value: Any, positions: dict[fx.Node, int]) -> Any:
    if isinstance(value, fx.Node):
        return ["node", positions[value]]
    if isinstance(value, (list, tuple)):
        return [_argument(item, positions) for item in value]
    if isinstance(value, dict):
        return {str(key): _argument(item, positions) for key, item in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, torch.Tensor):
        return _tensor(value)
    if callable(value):
        return getattr(value, "__qualname__", repr(value))
    return repr(value)


def _graph_structure(graph_module: fx.GraphModule) -> list[Any]:
    modules = dict(graph_module.named_modules())
    positions: dict[fx.Node, int] = {}
    nodes = []
    for index, node in enumerate(graph_module.graph.nodes):
        positions[node] = index
        if node.op == "call_module":
            target: Any = _module_signature(modules[str(node.target)])
        elif node.op == "get_attr":
            attribute = graph_module
            for part in str(node.target).split("."):
                attribute = getattr(attribute, part)
            target = _tensor(attribute) if isinstance(attribute, torch.Tensor) else repr(type(attribute))
        elif node.op in ("placeholder", "output"):
            target = node.op
        else:
            target = _argument(node.target, positions)
        nodes.append([node.op, target, _argument(node.args, positions), _argument(node.kwargs, positions)])
    return nodes


def structure(model: nn.Module) -> list[Any]:
    """The computation of `model` as plain data (see the module docstring)."""
    if isinstance(model, fx.GraphModule):
        return ["fx", _graph_structure(model)]
    return ["modules", [[name, _module_signature(module)] for name, module in model.named_modules()]]


def graph_digest(model: nn.Module, input_shape: Sequence[int], protocol: LatencyProtocol) -> str:
    """SHA-256 (hex) of `model`'s structure run on inputs of `input_shape` (without batch) under the
    kernel options of `protocol`: equal for identical graphs whatever their weights, different for any
    change of operator, shape, groups, stride, dtype, batch or runtime option."""
    options = {key: getattr(protocol, key) for key in KERNEL_OPTIONS}
    payload = {"structure": structure(model), "input": [protocol.batch_size, *input_shape], "runtime": options}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
