"""The width-switchable supernet of the non-uniform subnets family (1x1-conv shortcuts, nested
channel prefixes, a private BN per configuration)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from subnetsearch.spaces import ModeError
from subnetsearch.supernets import ArchError, build_supernet
from subnetsearch.supernets._width import ShortcutBlock, channel_slots, scaled_channels, uniform_channels
from tests.conftest import randomize_batchnorm

# depth 8: stem, layer1.0 (conv1, conv2), layer2.0, layer3.0 -> 7 channel slots
ARCH = {"family": "width-cifar-resnet", "depth": 8, "widths": [8, 16, 16], "input_size": 12, "num_classes": 4,
        "subnets": [{"name": "mid", "channels": [6, 4, 6, 8, 12, 12, 12]},
                    {"name": "small", "channels": [2, 2, 3, 4, 5, 6, 7]}]}


@pytest.fixture
def width_supernet():
    supernet = build_supernet(ARCH)
    randomize_batchnorm(supernet)
    return supernet.eval()


def test_slots_and_modes(width_supernet) -> None:
    assert width_supernet.slots == channel_slots(8) == ["stem", "layer1.0.conv1", "layer1.0.conv2", "layer2.0.conv1",
                                                        "layer2.0.conv2", "layer3.0.conv1", "layer3.0.conv2"]
    assert width_supernet.names == ["full", "mid", "small"]
    assert width_supernet.channels(width_supernet.full_mode()) == (8, 8, 8, 16, 16, 16, 16)
    assert width_supernet.describe(width_supernet.subnet_mode("small")) == "small: 2-2-3-4-5-6-7"
    with pytest.raises(ModeError, match="no subnet 'tiny'"):
        width_supernet.subnet_mode("tiny")
    assert width_supernet.mode_named("uniform:2") is None  # no group counts: not a mode name it knows
    assert width_supernet.mode_named(f"subnet:{width_supernet.names[-1]}") == width_supernet.smallest_mode()


def test_materialized_subnet_equals_the_switched_supernet_and_is_physically_smaller(width_supernet) -> None:
    x = torch.randn(5, 1, 12, 12)
    for index, expected in enumerate(width_supernet.configs):
        mode = width_supernet.space.mode({"width": index})
        width_supernet.set_mode(mode)
        with torch.no_grad():
            dynamic = width_supernet(x)
            static = width_supernet.materialize(mode)
            assert width_supernet.mode == mode  # materialize leaves the mode as it was
            torch.testing.assert_close(static(x), dynamic, rtol=1e-4, atol=1e-5)
        convs = [m for m in static.modules() if isinstance(m, nn.Conv2d)]
        assert sorted({c.out_channels for c in convs}) == sorted(set(expected))
        assert not any(isinstance(m, nn.BatchNorm2d) for m in static.modules())  # folded
        assert sum(p.numel() for p in static.parameters()) == width_supernet.cost(mode).params


def test_the_shortcut_block_joins_different_input_and_output_widths(width_supernet) -> None:
    block = width_supernet.network.layer2[0]
    assert isinstance(block, ShortcutBlock)
    width_supernet.set_mode(width_supernet.subnet_mode("small"))  # layer2.0: 3 channels in, 4 inner, 5 out
    out = block(torch.randn(2, 3, 12, 12))
    assert out.shape == (2, 5, 6, 6)
    static = width_supernet.materialize(width_supernet.subnet_mode("small"))
    shortcut = dict(static.named_modules())["layer2.0.shortcut"]
    assert (shortcut.in_channels, shortcut.out_channels, shortcut.kernel_size) == (3, 5, (1, 1))


def test_cost_is_hand_computable(width_supernet) -> None:
    small = width_supernet.subnet_mode("small")
    c = width_supernet.channels(small)  # 2-2-3-4-5-6-7 on 12x12 -> 12x12 -> 6x6 -> 3x3
    convs = [(1, c[0], 9, 144), (c[0], c[1], 9, 144), (c[1], c[2], 9, 144), (c[0], c[2], 1, 144),
             (c[2], c[3], 9, 36), (c[3], c[4], 9, 36), (c[2], c[4], 1, 36),
             (c[4], c[5], 9, 9), (c[5], c[6], 9, 9), (c[4], c[6], 1, 9)]
    macs = sum(i * o * k * area for i, o, k, area in convs) + c[6] * 4
    params = sum(i * o * k + o for i, o, k, _ in convs) + c[6] * 4 + 4
    assert width_supernet.cost(small).macs == macs
    assert width_supernet.cost(small).params == params


def test_private_bn_per_configuration(width_supernet) -> None:
    bn = width_supernet.network.layer1[0].bn1
    assert [norm.num_features for norm in bn.norms] == [8, 4, 2]
    width_supernet.set_mode(width_supernet.subnet_mode("mid"))
    assert bn.active is bn.norms[1]


@pytest.mark.parametrize("change, message", [
    ({"subnets": [{"name": "x", "channels": [1, 2]}]}, "gives 2 channel counts"),
    ({"subnets": [{"name": "x", "channels": [9, 1, 1, 1, 1, 1, 1]}]}, "within 1..full width"),
    ({"subnets": [{"name": "x", "channels": [0, 1, 1, 1, 1, 1, 1]}]}, "within 1..full width"),
    ({"subnets": [ARCH["subnets"][1], ARCH["subnets"][0]]}, "largest to smallest"),
    ({"widths": [8, 16]}, "3 stage widths"),
    ({"depth": 9}, r"6n\+2"),
    ({"groups": 3}, "unknown architecture field"),
])
def test_bad_architectures_are_refused(change, message) -> None:
    with pytest.raises(ArchError, match=message):
        build_supernet({**ARCH, **change})


def test_uniform_and_scaled_channels() -> None:
    full = [16, 16, 16, 32, 32, 64, 64]
    assert uniform_channels(full, 0.5) == [8, 8, 8, 16, 16, 32, 32]
    assert uniform_channels(full, 0.01) == [1] * 7
    low = [10, 4, 12, 8, 30, 20, 64]
    assert scaled_channels(low, full, 1.0) == low
    assert scaled_channels(low, full, 2.0) == [16, 8, 16, 16, 32, 40, 64]  # capped at the full widths
