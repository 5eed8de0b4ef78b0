"""Dynamic layers of the WeNet family (paper sections III-A to III-C).

Each layer keeps one full set of weights; the active group count only selects a view of it, so a
mode switch is an integer assignment (DESIGN.md: "a mode switch is a pointer change").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from subnetsearch.errors import InputError

DEFAULT_GROUP_CHOICES: tuple[int, ...] = (1, 2, 4, 8, 16)


def allowed_groups(in_channels: int, out_channels: int, choices: Sequence[int]) -> tuple[int, ...]:
    """Group counts from `choices` that divide both channel counts (paper: evenly divided layers)."""
    bad = [g for g in choices if isinstance(g, bool) or not isinstance(g, int) or g < 1]
    if bad:
        raise InputError(f"group counts must be positive integers, got {bad}")
    return tuple(sorted(g for g in set(choices) if in_channels % g == 0 and out_channels % g == 0))


def block_diagonal(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """The grouped-conv weight (c_out, c_in/g, ...) made of the g diagonal blocks of a full weight.

    Block j connects input channels [j*c_in/g, (j+1)*c_in/g) to output channels
    [j*c_out/g, (j+1)*c_out/g) (paper Fig. 3). Differentiable: gradients reach the full weight.
    """
    if groups == 1:
        return weight
    c_out, c_in = weight.shape[:2]
    rest = weight.shape[2:]
    blocks = weight.view(groups, c_out // groups, groups, c_in // groups, *rest)
    diagonal = torch.diagonal(blocks, dim1=0, dim2=2)  # (c_out/g, c_in/g, *rest, g)
    return diagonal.movedim(-1, 0).reshape(c_out, c_in // groups, *rest)


def block_diagonal_dense(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """The dense weight (c_out, c_in, ...) equivalent to the grouped one: the full weight with every
    block off the diagonal zeroed. A dense layer with it computes exactly what the grouped layer
    does (a realization some runtimes run faster than their grouped kernels)."""
    if groups == 1:
        return weight
    c_out, c_in = weight.shape[:2]
    rows = torch.arange(c_out, device=weight.device) // (c_out // groups)
    columns = torch.arange(c_in, device=weight.device) // (c_in // groups)
    mask = (rows[:, None] == columns[None, :]).to(weight.dtype)
    return weight * mask.view(c_out, c_in, *([1] * (weight.dim() - 2)))


class SwitchState:
    """The active group count of every switchable layer of one network, as one tuple.

    Layers of a supernet are bound to one shared state and read their slot at forward time, so a
    mode switch is one tuple assignment: O(1), no weight touched. A layer built alone has its own.
    """

    __slots__ = ("values",)

    def __init__(self, values: Sequence[int]) -> None:
        self.values = tuple(values)

    def set(self, slot: int, value: int) -> None:
        values = list(self.values)
        values[slot] = value
        self.values = tuple(values)


class _Switched(nn.Module):
    """A module whose active setting is slot `_slot` of a (possibly shared) SwitchState."""

    def _init_switch(self, initial: int) -> None:
        self._switch, self._slot = SwitchState((initial,)), 0

    def bind(self, state: SwitchState, slot: int) -> None:
        self._switch, self._slot = state, slot

    @property
    def _active(self) -> int:
        return self._switch.values[self._slot]


class _GroupSwitch(_Switched):
    """Shared bookkeeping: the allowed group counts and the active one."""

    def _init_groups(self, in_features: int, out_features: int, choices: Sequence[int]) -> None:
        self.group_choices = allowed_groups(in_features, out_features, choices)
        if not self.group_choices or self.group_choices[0] != 1:
            raise InputError(f"group choices {tuple(choices)} must include 1")
        self._init_switch(1)

    @property
    def groups(self) -> int:
        return self._active

    def set_groups(self, groups: int) -> None:
        if groups not in self.group_choices:
            raise InputError(f"{groups} groups not allowed here; allowed: {self.group_choices}")
        self._switch.set(self._slot, groups)


class GroupSwitchConv2d(_GroupSwitch):
    """A convolution whose group count is chosen at run time from one full (c_out, c_in, k, k) weight."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, dilation: int = 1, bias: bool = False,
                 group_choices: Sequence[int] = DEFAULT_GROUP_CHOICES) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding, self.dilation = kernel_size, stride, padding, dilation
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        self._init_groups(in_channels, out_channels, group_choices)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, group_choices: Sequence[int]) -> GroupSwitchConv2d:
        """Wrap a dense nn.Conv2d, keeping its weights (the full mode equals the original layer)."""
        if conv.groups != 1 or conv.kernel_size[0] != conv.kernel_size[1]:
            raise InputError(f"only dense square convolutions can be made group-switchable, got {conv}")
        if isinstance(conv.padding, str):  # "same" (stride 1, odd kernel) or "valid", as a number
            padding = conv.dilation[0] * (conv.kernel_size[0] - 1) // 2 if conv.padding == "same" else 0
        else:
            padding = conv.padding[0]
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size[0], conv.stride[0],
                    padding, conv.dilation[0], conv.bias is not None, group_choices)
        with torch.no_grad():
            layer.weight.copy_(conv.weight)
            if conv.bias is not None and layer.bias is not None:
                layer.bias.copy_(conv.bias)
        return layer

    def active_weight(self) -> torch.Tensor:
        return block_diagonal(self.weight, self.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.active_weight(), self.bias, self.stride, self.padding, self.dilation, self.groups)

    def to_static(self, dense: bool = False) -> nn.Conv2d:
        """An ordinary nn.Conv2d(groups=g) holding a copy of the active blocks; with `dense`, the
        equivalent nn.Conv2d(groups=1) whose weight is zero off the blocks (the same function)."""
        groups = 1 if dense else self.groups
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                         self.dilation, groups, self.bias is not None)
        with torch.no_grad():
            conv.weight.copy_(block_diagonal_dense(self.weight, self.groups) if dense else self.active_weight())
            if self.bias is not None and conv.bias is not None:
                conv.bias.copy_(self.bias)
        return conv

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"groups={self.groups} of {self.group_choices}")


class GroupSwitchLinear(_GroupSwitch):
    """The paper's dense WeNet layer (Fig. 2): input and output split into g independent groups."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 group_choices: Sequence[int] = DEFAULT_GROUP_CHOICES) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        reference = nn.Linear(in_features, out_features, bias)
        self.weight = nn.Parameter(reference.weight.detach().clone())
        self.bias = nn.Parameter(reference.bias.detach().clone()) if bias else None
        self._init_groups(in_features, out_features, group_choices)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.groups == 1:
            return F.linear(x, self.weight, self.bias)
        g = self.groups
        blocks = block_diagonal(self.weight, g).view(g, self.out_features // g, self.in_features // g)
        grouped = x.reshape(-1, g, self.in_features // g).transpose(0, 1)  # (g, N, in/g)
        out = torch.bmm(grouped, blocks.transpose(1, 2)).transpose(0, 1).reshape(*x.shape[:-1], self.out_features)
        return out if self.bias is None else out + self.bias

    def to_static(self, dense: bool = False) -> nn.Module:
        """An nn.Linear (one group), a grouped 1x1 convolution on a (N, C, 1, 1) view, or with `dense`
        the equivalent nn.Linear whose weight is zero off the blocks."""
        if self.groups == 1 or dense:
            linear = nn.Linear(self.in_features, self.out_features, self.bias is not None)
            with torch.no_grad():
                linear.weight.copy_(block_diagonal_dense(self.weight, self.groups))
                if self.bias is not None:
                    linear.bias.copy_(self.bias)
            return linear
        # A grouped dense layer is a grouped 1x1 convolution on a (N, C, 1, 1) view.
        conv = nn.Conv2d(self.in_features, self.out_features, 1, groups=self.groups, bias=self.bias is not None)
        with torch.no_grad():
            conv.weight.copy_(block_diagonal(self.weight, self.groups).unsqueeze(-1).unsqueeze(-1))
            if self.bias is not None and conv.bias is not None:
                conv.bias.copy_(self.bias)
        return nn.Sequential(nn.Unflatten(1, (self.in_features, 1, 1)), conv, nn.Flatten(1))

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, groups={self.groups} of {self.group_choices}"


class SwitchableBatchNorm2d(_Switched):
    """Private BN (affine + running statistics) per group count of the layer it follows (paper III-C).

    `track_running_stats` can be switched off for a forward pass (the trainer does so for random
    mixed patterns, whose statistics would pollute the keys of uniform modes).
    """

    def __init__(self, num_features: int, keys: Sequence[int], eps: float = 1e-5, momentum: float | None = 0.1) -> None:
        super().__init__()
        self.num_features = num_features
        self.keys = tuple(keys)
        self.norms = nn.ModuleList(nn.BatchNorm2d(num_features, eps=eps, momentum=momentum) for _ in self.keys)
        self._index = {key: index for index, key in enumerate(self.keys)}
        self._init_switch(self.keys[0])
        self.update_running_stats = True

    @classmethod
    def from_batchnorm(cls, norm: nn.BatchNorm2d, keys: Sequence[int]) -> SwitchableBatchNorm2d:
        """Every private BN a copy of `norm`, hyperparameters included (eps, momentum), so the full mode
        computes exactly what `norm` computes and trains at its momentum."""
        if not (norm.affine and norm.track_running_stats):
            raise InputError(f"only affine BatchNorm2d with running statistics can be made switchable, got {norm}")
        layer = cls(norm.num_features, keys, norm.eps, norm.momentum)
        for private in layer.norms:
            private.load_state_dict(norm.state_dict())
        return layer

    @property
    def key(self) -> int:
        return self._active

    def set_key(self, key: int) -> None:
        if key not in self._index:
            raise InputError(f"no private BN for key {key}; keys: {self.keys}")
        self._switch.set(self._slot, key)

    @property
    def active(self) -> nn.BatchNorm2d:
        return cast(nn.BatchNorm2d, self.norms[self._index[self._active]])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = self.active
        if self.training and not self.update_running_stats:
            synced = getattr(norm, "forward_without_stats", None)  # data parallel with synchronized BN
            if synced is not None:
                return synced(x)
            return F.batch_norm(x, None, None, norm.weight, norm.bias, True, 0.0, norm.eps)
        return norm(x)

    def extra_repr(self) -> str:
        return f"{self.num_features}, key={self.key} of {self.keys}"


class ChannelShuffle(nn.Module):
    """Fixed shuffle (paper III-B): reshape channels to (g_max, n), transpose to (n, g_max), flatten.

    The permutation depends only on g_max, not on the active group count, so switching modes never
    changes it. `enabled=False` makes it the identity (Table II's "without shuffling").
    """

    def __init__(self, channels: int, max_groups: int, enabled: bool = True) -> None:
        super().__init__()
        if channels % max_groups:
            raise InputError(f"{channels} channels cannot be shuffled in {max_groups} groups")
        self.channels, self.max_groups, self.enabled = channels, max_groups, enabled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled or self.max_groups == 1:
            return x
        if torch.onnx.is_in_onnx_export():  # ONNX has no channel_shuffle: export the reshape form, its
            # shapes free of the batch size (a traced x.shape[0] would fix the graph's batch)
            return x.unflatten(1, (self.max_groups, -1)).transpose(1, 2).flatten(1, 2)
        # Native op: the same permutation, and it keeps channels_last layouts (15x faster here).
        return torch.channel_shuffle(x, self.max_groups)

    def permutation(self) -> torch.Tensor:
        """Output channel i takes input channel permutation()[i]."""
        index = torch.arange(self.channels)
        if not self.enabled or self.max_groups == 1:
            return index
        return index.view(self.max_groups, -1).t().reshape(-1)

    def extra_repr(self) -> str:
        return f"{self.channels}, max_groups={self.max_groups}, enabled={self.enabled}"
