"""Nested widths for converted models: the layers the group converter leaves static because no
private BN follows them (transformer MLPs, ConvNeXt's pointwise MLPs, convolutions without BN as in
VGG, AlexNet, SqueezeNet) get a width knob instead.

A *width pair* is a producer (a dense conv or linear layer, called once) whose output reaches only
dense layers of its kind through operations that act on each channel (feature) alone (activations,
dropout, pooling): ViT's `Linear -> GELU -> Dropout -> Linear`, VGG's `Conv -> ReLU -> MaxPool ->
Conv`, SqueezeNet's squeeze conv feeding both expand convs. The producer then computes the first `w`
of its output channels (`w` from its width choices, the architecture's `width_ratios` of its full
width) and every consumer reads as many input channels as it is given: a narrower width is a prefix
of a wider one (MatFormer's nested FFN, slimmable networks), and a switch is an integer assignment.
The channel order is the trained one: which channels come first is set by training (the sandwich
rule trains every prefix), and a model converted from pretrained weights can be sorted by filter
norm first (`sort_by_norm`). No normalization sits inside a pair, so no statistics need slicing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import fx, nn

# Operations that act on each channel (feature) alone, without parameters: a width pair passes through them.
_PER_CHANNEL_MODULES = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Tanh, nn.Sigmoid, nn.Dropout,
                        nn.Identity, nn.MaxPool2d, nn.AvgPool2d)
_PER_CHANNEL_FUNCTIONS = (F.relu, torch.relu, F.gelu, F.silu, F.dropout, torch.tanh, torch.sigmoid)


class WidthState:
    """The active width of every width knob of one network (a plain dict, shared by its layers)."""

    __slots__ = ("widths",)

    def __init__(self, widths: Mapping[str, int] | None = None) -> None:
        self.widths = dict(widths or {})


def width_choices(channels: int, ratios: Sequence[float]) -> tuple[int, ...]:
    """The widths a layer of `channels` outputs offers, widest first (each ratio of it, at least 1)."""
    return tuple(sorted({max(1, round(channels * float(ratio))) for ratio in ratios}, reverse=True))


class _Width:
    """What a width layer knows: its own knob (`out_knob`, None when only its input is sliced), the
    knob of its input (`in_knob`) and the shared state."""

    state: WidthState
    out_knob: str | None
    in_knob: str | None
    width_choices: tuple[int, ...]

    def _bind(self, state: WidthState, out_knob: str | None, in_knob: str | None, choices: tuple[int, ...]) -> None:
        self.state, self.out_knob, self.in_knob, self.width_choices = state, out_knob, in_knob, choices

    def active_out(self, full: int) -> int:
        return full if self.out_knob is None else self.state.widths.get(self.out_knob, full)

    def active_in(self, full: int) -> int:
        return full if self.in_knob is None else self.state.widths.get(self.in_knob, full)


def _copy_prefix(target: nn.Conv2d | nn.Linear, source: nn.Conv2d | nn.Linear, out: int, inputs: int) -> None:
    """Copy the first `out` x `inputs` of `source`'s weight (and its bias's first `out`) into `target`."""
    with torch.no_grad():
        target.weight.copy_(source.weight[:out, :inputs])
        if source.bias is not None and target.bias is not None:
            target.bias.copy_(source.bias[:out])


class WidthConv2d(nn.Conv2d, _Width):
    """A dense conv on the first `active` output channels and as many input channels as it is given."""

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, state: WidthState, out_knob: str | None, in_knob: str | None,
                  choices: tuple[int, ...]) -> WidthConv2d:
        layer = cls(conv.in_channels, conv.out_channels, cast(Any, conv.kernel_size), cast(Any, conv.stride),
                    cast(Any, conv.padding), cast(Any, conv.dilation), 1, conv.bias is not None, conv.padding_mode)
        _copy_prefix(layer, conv, conv.out_channels, conv.in_channels)
        layer._bind(state, out_knob, in_knob, choices)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.active_out(self.out_channels)
        weight = self.weight[:out, :x.shape[1]]
        return self._conv_forward(x, weight, None if self.bias is None else self.bias[:out])

    def to_static(self) -> nn.Conv2d:
        out, source = self.active_out(self.out_channels), self.active_in(self.in_channels)
        conv = nn.Conv2d(source, out, cast(Any, self.kernel_size), cast(Any, self.stride), cast(Any, self.padding),
                         cast(Any, self.dilation), 1, self.bias is not None, self.padding_mode)
        _copy_prefix(conv, self, out, source)
        return conv.eval()


class WidthLinear(nn.Linear, _Width):
    """A linear layer on the first `active` output features and as many input features as it is given."""

    @classmethod
    def from_linear(cls, linear: nn.Linear, state: WidthState, out_knob: str | None, in_knob: str | None,
                    choices: tuple[int, ...]) -> WidthLinear:
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None)
        _copy_prefix(layer, linear, linear.out_features, linear.in_features)
        layer._bind(state, out_knob, in_knob, choices)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.active_out(self.out_features)
        return F.linear(x, self.weight[:out, :x.shape[-1]], None if self.bias is None else self.bias[:out])

    def to_static(self) -> nn.Linear:
        out, source = self.active_out(self.out_features), self.active_in(self.in_features)
        linear = nn.Linear(source, out, self.bias is not None)
        _copy_prefix(linear, self, out, source)
        return linear.eval()


WIDTH_LAYERS = (WidthConv2d, WidthLinear)


def attention_projections(module: nn.Module, query: torch.Tensor) -> list[tuple[str, int, int, int, bool]]:
    """The linear projections an attention module computes with its weights directly (so no linear
    layer's forward runs): (name, in features, out features, positions, bias) of
    `nn.MultiheadAttention` (self-attention: q, k, v from one input) and torchvision Swin's shifted
    window attention (on the input padded to whole windows); [] for any other module."""
    if isinstance(module, nn.MultiheadAttention):
        embed = module.embed_dim
        positions = int(query.numel() // embed)
        return [("in_proj", embed, 3 * embed, positions, module.in_proj_bias is not None),
                ("out_proj", embed, embed, positions, module.out_proj.bias is not None)]
    qkv, proj, window = getattr(module, "qkv", None), getattr(module, "proj", None), getattr(module, "window_size", None)
    if isinstance(qkv, nn.Linear) and isinstance(proj, nn.Linear) and window is not None and query.dim() == 4:
        height, width = int(query.shape[1]), int(query.shape[2])
        padded = (-(-height // window[0]) * window[0]) * (-(-width // window[1]) * window[1])
        return [("qkv", qkv.in_features, qkv.out_features, padded, qkv.bias is not None),
                ("proj", proj.in_features, proj.out_features, padded, proj.bias is not None)]
    return []


def is_attention(module: nn.Module) -> bool:
    """An attention module whose projections `attention_projections` counts (kept whole when traced,
    so that its cost stays attributable to it)."""
    return isinstance(module, nn.MultiheadAttention) or bool(attention_projections(module, torch.zeros(1, 1, 1, 1)))


def _per_channel(node: fx.Node, modules: Mapping[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules[str(node.target)], _PER_CHANNEL_MODULES)
    if node.op == "call_function":
        return node.target in _PER_CHANNEL_FUNCTIONS
    return node.op == "call_method" and node.target in ("relu", "gelu", "sigmoid", "tanh")


def _dense(module: nn.Module, kind: type[nn.Module]) -> bool:
    if kind is nn.Conv2d:
        return type(module) is nn.Conv2d and module.groups == 1
    return isinstance(module, nn.Linear) and not isinstance(module, nn.modules.linear.NonDynamicallyQuantizableLinear)


def width_consumers(node: fx.Node, modules: Mapping[str, nn.Module], calls: Counter,
                    excluded: set[str]) -> tuple[list[str], str | None]:
    """The layers that read `node`'s output channels (a dense conv's or linear's) through per-channel
    operations, all of them dense layers of its kind called once: (their names, None); or ([], why not)."""
    kind = nn.Conv2d if isinstance(modules[str(node.target)], nn.Conv2d) else nn.Linear
    cursor = node
    while len(cursor.users) == 1 and _per_channel(next(iter(cursor.users)), modules):
        cursor = next(iter(cursor.users))
    users = list(cursor.users)
    if not users:
        return [], "its output feeds nothing"
    names = []
    for user in users:
        target = str(user.target)
        if (user.op != "call_module" or not _dense(modules[target], kind) or calls[user.target] > 1
                or target in excluded or user.args[:1] != (cursor,) or len(user.args) != 1):
            what = (f"{type(modules[target]).__name__} {target}" if user.op == "call_module"
                    else "the network's output" if user.op == "output"
                    else getattr(user.target, "__name__", str(user.target)))
            layer = "dense convolution" if kind is nn.Conv2d else "linear layer"
            return [], f"its output feeds {what}, not only a {layer} (through per-channel operations)"
        names.append(target)
    return names, None


def sort_by_norm(model: nn.Module) -> dict[str, list[int]]:
    """Put each width knob's strongest output channels first (L2 norm of the filter, the order
    slimmable networks and Once-for-All start from), permuting every consumer's input the same way:
    the full network computes the same function after. Returns each knob's permutation (new -> old)."""
    layers = [m for m in model.modules() if isinstance(m, WIDTH_LAYERS)]
    orders: dict[str, list[int]] = {}
    with torch.no_grad():
        for producer in layers:
            knob = producer.out_knob
            if knob is None:
                continue
            order = torch.argsort(producer.weight.flatten(1).norm(dim=1), descending=True, stable=True)
            producer.weight.copy_(producer.weight[order])
            if producer.bias is not None:
                producer.bias.copy_(producer.bias[order])
            for consumer in layers:
                if consumer.in_knob == knob:
                    consumer.weight.copy_(consumer.weight.index_select(1, order))
            orders[knob] = order.tolist()
    return orders
