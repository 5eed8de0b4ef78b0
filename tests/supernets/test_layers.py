import pytest
import torch
import torch.nn.functional as F

from subnetsearch.supernets import (
    ChannelShuffle,
    GroupSwitchConv2d,
    GroupSwitchLinear,
    SwitchableBatchNorm2d,
    allowed_groups,
    block_diagonal,
)


def block_mask(c_out: int, c_in: int, groups: int) -> torch.Tensor:
    rows = torch.arange(c_out) // (c_out // groups)
    cols = torch.arange(c_in) // (c_in // groups)
    return (rows.view(-1, 1) == cols.view(1, -1)).float()


@pytest.mark.parametrize("groups", [1, 2, 4, 8, 16])
def test_grouped_conv_equals_block_diagonal_masked_full_conv(groups: int) -> None:
    layer = GroupSwitchConv2d(16, 32, 3, stride=2, padding=1)
    layer.set_groups(groups)
    x = torch.randn(2, 16, 9, 9)
    masked = layer.weight * block_mask(32, 16, groups).view(32, 16, 1, 1)
    expected = F.conv2d(x, masked, None, 2, 1)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_grouped_weight_is_a_view_of_the_full_weight_with_gradients() -> None:
    layer = GroupSwitchConv2d(8, 8, 3, padding=1)
    layer.set_groups(4)
    layer(torch.randn(1, 8, 5, 5)).sum().backward()
    off_block = layer.weight.grad * (1 - block_mask(8, 8, 4).view(8, 8, 1, 1))
    assert off_block.abs().sum() == 0
    assert layer.weight.grad.abs().sum() > 0
    assert block_diagonal(layer.weight, 4).shape == (8, 2, 3, 3)


def test_allowed_groups_divide_both_channel_counts() -> None:
    assert allowed_groups(16, 24, (1, 2, 4, 8, 16)) == (1, 2, 4, 8)
    assert allowed_groups(3, 64, (1, 2, 4)) == (1,)
    with pytest.raises(ValueError, match="not allowed"):
        GroupSwitchConv2d(12, 12, 3).set_groups(8)


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_group_switch_linear_matches_masked_dense(groups: int) -> None:
    layer = GroupSwitchLinear(8, 12)
    layer.set_groups(groups)
    x = torch.randn(5, 8)
    expected = F.linear(x, layer.weight * block_mask(12, 8, groups), layer.bias)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.to_static()(x), expected, rtol=1e-5, atol=1e-5)


def test_channel_shuffle_is_the_papers_reshape_transpose_flatten() -> None:
    shuffle = ChannelShuffle(8, 4)
    x = torch.arange(8.0).view(1, 8, 1, 1)
    # (g=4, n=2): [[0,1],[2,3],[4,5],[6,7]] -> transpose -> [0,2,4,6,1,3,5,7]
    assert shuffle(x).flatten().tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
    assert shuffle.permutation().tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
    assert ChannelShuffle(8, 4, enabled=False)(x).flatten().tolist() == list(range(8))


def test_switchable_bn_selects_private_parameters_and_statistics() -> None:
    norm = SwitchableBatchNorm2d(4, (1, 2, 4))
    for index, private in enumerate(norm.norms):
        private.running_mean.fill_(float(index))
    norm.eval()
    x = torch.zeros(1, 4, 2, 2)
    outputs = []
    for key in (1, 2, 4):
        norm.set_key(key)
        outputs.append(norm(x).mean().item())
    assert outputs[0] > outputs[1] > outputs[2]  # (0 - mean) / std falls as the private mean grows
    with pytest.raises(ValueError, match="no private BN"):
        norm.set_key(8)


def test_bn_without_tracking_leaves_running_stats_alone() -> None:
    norm = SwitchableBatchNorm2d(4, (1,))
    norm.train()
    norm.update_running_stats = False
    norm(torch.randn(8, 4, 3, 3) + 5)
    assert norm.active.running_mean.abs().sum() == 0
    norm.update_running_stats = True
    norm(torch.randn(8, 4, 3, 3) + 5)
    assert norm.active.running_mean.mean() > 0.1
