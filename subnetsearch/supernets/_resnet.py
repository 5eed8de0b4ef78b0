"""CIFAR-style ResNet (He et al. 2016, section 4.2: 6n+2 layers, widths 16-32-64) built from WeNet
dynamic layers. Every convolution after the stem is group-switchable; a channel shuffle sits
between the two convolutions of each block (paper III-B: "between two convolutional layers")."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from subnetsearch.errors import InputError
from subnetsearch.supernets._layers import (
    ChannelShuffle,
    GroupSwitchConv2d,
    GroupSwitchLinear,
    SwitchableBatchNorm2d,
)


def shuffle_groups(channels: int, group_choices: Sequence[int], rule: str) -> int:
    """The fixed G of a shuffle's (G, n) reshape.

    "max" is the paper's rule (G = the layer's maximum group count). On narrow layers it degenerates:
    with 16 channels and G = 16 the permutation is the identity and groups never mix. "balanced"
    takes the largest allowed G with G * G <= channels, so that every next-layer group of size
    >= G draws from every previous group (16 -> 4, 32 -> 4, 64 -> 8).
    """
    if rule == "max":
        return max(group_choices)
    if rule == "balanced":
        return max(g for g in group_choices if g * g <= channels)
    raise InputError(f"unknown shuffle rule {rule!r}; use 'max' or 'balanced'")


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, group_choices: Sequence[int],
                 shuffle: bool, shuffle_rule: str) -> None:
        super().__init__()
        self.conv1 = GroupSwitchConv2d(in_channels, out_channels, 3, stride, 1, group_choices=group_choices)
        self.bn1 = SwitchableBatchNorm2d(out_channels, self.conv1.group_choices)
        self.shuffle = ChannelShuffle(out_channels, shuffle_groups(out_channels, self.conv1.group_choices,
                                                                   shuffle_rule), shuffle)
        self.conv2 = GroupSwitchConv2d(out_channels, out_channels, 3, 1, 1, group_choices=group_choices)
        self.bn2 = SwitchableBatchNorm2d(out_channels, self.conv2.group_choices)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_channels != out_channels:
            conv = GroupSwitchConv2d(in_channels, out_channels, 1, stride, group_choices=group_choices)
            self.downsample = nn.Sequential(conv, SwitchableBatchNorm2d(out_channels, conv.group_choices))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.shuffle(F.relu(self.bn1(self.conv1(x))))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class CifarResNet(nn.Module):
    """Stem conv (dense: 1 or 3 input channels) -> 3 stages of n blocks -> pool -> classifier."""

    def __init__(self, depth: int = 20, widths: Sequence[int] = (16, 32, 64), in_channels: int = 1,
                 num_classes: int = 10, group_choices: Sequence[int] = (1, 2, 4, 8, 16),
                 shuffle: bool = True, shuffle_rule: str = "balanced", switch_classifier: bool = False) -> None:
        super().__init__()
        if (depth - 2) % 6 or depth < 8:
            raise InputError(f"CIFAR ResNet depth must be 6n+2 with n >= 1, got {depth}")
        if len(widths) != 3:
            raise InputError(f"widths must give 3 stage widths, got {widths}")
        blocks_per_stage = (depth - 2) // 6
        self.stem = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.stem_bn = nn.BatchNorm2d(widths[0])
        stages = []
        channels = widths[0]
        for index, width in enumerate(widths):
            blocks = []
            for block in range(blocks_per_stage):
                stride = 2 if index > 0 and block == 0 else 1
                blocks.append(BasicBlock(channels, width, stride, group_choices, shuffle, shuffle_rule))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        classifier_choices = group_choices if switch_classifier else (1,)
        self.fc = GroupSwitchLinear(channels, num_classes, group_choices=classifier_choices)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem_bn(self.stem(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
