"""The supernet of the clipped group-Lasso (non-uniform channels) family: 1x1-conv shortcuts, nested
channel prefixes, a private BN per configuration."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from subnetsearch.spaces import ModeError
from subnetsearch.supernets import ArchError, build_supernet, scaled_channels
from subnetsearch.supernets._lasso import ShortcutBlock, channel_slots, uniform_channels
from tests.conftest import randomize_batchnorm

# depth 8: stem, layer1.0 (conv1, conv2), layer2.0, layer3.0 -> 7 channel slots
ARCH = {"family": "lasso-cifar-resnet", "depth": 8, "widths": [8, 16, 16], "input_size": 12, "num_classes": 4,
        "subnets": [{"name": "mid", "channels": [6, 4, 6, 8, 12, 12, 12]},
                    {"name": "small", "channels": [2, 2, 3, 4, 5, 6, 7]}]}


@pytest.fixture
def lasso_supernet():
    supernet = build_supernet(ARCH)
    randomize_batchnorm(supernet)
    return supernet.eval()


def test_slots_and_modes(lasso_supernet) -> None:
    assert lasso_supernet.slots == channel_slots(8) == ["stem", "layer1.0.conv1", "layer1.0.conv2", "layer2.0.conv1",
                                                        "layer2.0.conv2", "layer3.0.conv1", "layer3.0.conv2"]
    assert lasso_supernet.names == ["full", "mid", "small"]
    assert lasso_supernet.channels(lasso_supernet.full_mode()) == (8, 8, 8, 16, 16, 16, 16)
    assert lasso_supernet.describe(lasso_supernet.subnet_mode("small")) == "small: 2-2-3-4-5-6-7"
    with pytest.raises(ModeError, match="no subnet 'tiny'"):
        lasso_supernet.subnet_mode("tiny")
    assert lasso_supernet.mode_named("uniform:2") is None  # no group counts: not a mode name it knows
    assert lasso_supernet.mode_named(f"subnet:{lasso_supernet.names[-1]}") == lasso_supernet.smallest_mode()


def test_materialized_subnet_equals_the_switched_supernet_and_is_physically_smaller(lasso_supernet) -> None:
    x = torch.randn(5, 1, 12, 12)
    for index, expected in enumerate(lasso_supernet.configs):
        mode = lasso_supernet.space.mode({"width": index})
        lasso_supernet.set_mode(mode)
        with torch.no_grad():
            dynamic = lasso_supernet(x)
            static = lasso_supernet.materialize(mode)
            assert lasso_supernet.mode == mode  # materialize leaves the mode as it was
            torch.testing.assert_close(static(x), dynamic, rtol=1e-4, atol=1e-5)
        convs = [m for m in static.modules() if isinstance(m, nn.Conv2d)]
        assert sorted({c.out_channels for c in convs}) == sorted(set(expected))
        assert not any(isinstance(m, nn.BatchNorm2d) for m in static.modules())  # folded
        assert sum(p.numel() for p in static.parameters()) == lasso_supernet.cost(mode).params


def test_the_shortcut_block_joins_different_input_and_output_widths(lasso_supernet) -> None:
    block = lasso_supernet.network.layer2[0]
    assert isinstance(block, ShortcutBlock)
    lasso_supernet.set_mode(lasso_supernet.subnet_mode("small"))  # layer2.0: 3 channels in, 4 inner, 5 out
    out = block(torch.randn(2, 3, 12, 12))
    assert out.shape == (2, 5, 6, 6)
    static = lasso_supernet.materialize(lasso_supernet.subnet_mode("small"))
    shortcut = dict(static.named_modules())["layer2.0.shortcut"]
    assert (shortcut.in_channels, shortcut.out_channels, shortcut.kernel_size) == (3, 5, (1, 1))


def test_cost_is_hand_computable(lasso_supernet) -> None:
    small = lasso_supernet.subnet_mode("small")
    c = lasso_supernet.channels(small)  # 2-2-3-4-5-6-7 on 12x12 -> 12x12 -> 6x6 -> 3x3
    convs = [(1, c[0], 9, 144), (c[0], c[1], 9, 144), (c[1], c[2], 9, 144), (c[0], c[2], 1, 144),
             (c[2], c[3], 9, 36), (c[3], c[4], 9, 36), (c[2], c[4], 1, 36),
             (c[4], c[5], 9, 9), (c[5], c[6], 9, 9), (c[4], c[6], 1, 9)]
    macs = sum(i * o * k * area for i, o, k, area in convs) + c[6] * 4
    params = sum(i * o * k + o for i, o, k, _ in convs) + c[6] * 4 + 4
    assert lasso_supernet.cost(small).macs == macs
    assert lasso_supernet.cost(small).params == params


def test_private_bn_per_configuration(lasso_supernet) -> None:
    bn = lasso_supernet.network.layer1[0].bn1
    assert [norm.num_features for norm in bn.norms] == [8, 4, 2]
    lasso_supernet.set_mode(lasso_supernet.subnet_mode("mid"))
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


def test_a_checkpoint_written_under_the_legacy_family_name_loads_unchanged(tmp_path, lasso_supernet) -> None:
    from subnetsearch.supernets import load_checkpoint, save_checkpoint

    legacy = build_supernet({**ARCH, "family": "width-cifar-resnet"})  # what earlier versions wrote
    legacy.load_state_dict(lasso_supernet.state_dict())
    path = tmp_path / "old.pt"
    save_checkpoint(path, legacy, {}, {"name": "synthetic", "split_seed": 0}, {})
    checkpoint = load_checkpoint(path)
    rebuilt = checkpoint.build()
    assert type(rebuilt) is type(lasso_supernet) and rebuilt.family == "lasso"
    assert checkpoint.family == "lasso-cifar-resnet"
    # its architecture keeps the name it was written with: the same content hash, the same mode ids
    assert rebuilt.arch["family"] == "width-cifar-resnet" and load_checkpoint(path).hash == checkpoint.hash
    assert rebuilt.space.mode({"width": 1}).id == legacy.space.mode({"width": 1}).id
    images = torch.randn(2, 1, 12, 12)
    assert torch.equal(rebuilt(images), lasso_supernet(images))
    with pytest.raises(ValueError, match="registered already"):
        from subnetsearch.supernets import register_family

        register_family("width-cifar-resnet", lambda arch: legacy)
