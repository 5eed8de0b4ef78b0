"""Clipped group-Lasso (Eq. 1, 3), channel counting (Eq. 4), channel sorting and fused subnet
training (Algorithm 1) of the non-uniform subnets family."""

from __future__ import annotations

import pytest
import torch

from subnetsearch.supernets import build_supernet
from subnetsearch.trainers._lasso import (
    LassoRecipe,
    clipped_group_lasso,
    count_channels,
    fused_step,
    group_lasso,
    init_from_full,
    sort_channels,
    train_lasso,
)
from tests.conftest import randomize_batchnorm

FULL = {"family": "lasso-cifar-resnet", "depth": 8, "widths": [8, 16, 16], "input_size": 12, "num_classes": 4}
SUBNETS = [{"name": "mid", "channels": [6, 4, 6, 8, 12, 12, 12]}, {"name": "small", "channels": [2, 2, 3, 4, 5, 6, 7]}]


def _hand_made() -> torch.Tensor:
    # three output channels with norms 3, 1 and 0.5 (weight shape (3, 2, 1, 1))
    return torch.tensor([[3.0, 0.0], [0.0, 1.0], [0.5, 0.0]]).reshape(3, 2, 1, 1).requires_grad_()


def test_clipped_penalty_value_and_gradient_on_hand_made_weights() -> None:
    weight = _hand_made()
    # mean norm 1.5, a = 1 -> delta = 1.5: norms clipped to (1.5, 1, 0.5), sum 3, times lambda 0.1
    penalty = clipped_group_lasso([weight], lam=0.1, a=1.0)
    assert penalty.item() == pytest.approx(0.3)
    penalty.backward()
    grad = weight.grad.reshape(3, 2)
    # the clipped group gets no gradient: delta is a constant (were it not detached, the mean would
    # pass a gradient of lambda * a / 3 to every group)
    assert torch.equal(grad[0], torch.zeros(2))
    torch.testing.assert_close(grad[1], torch.tensor([0.0, 0.1]))  # lambda * W / ||W||
    torch.testing.assert_close(grad[2], torch.tensor([0.1, 0.0]))


def test_a_small_a_clips_more_groups_and_plain_group_lasso_clips_none() -> None:
    weight = _hand_made()
    # a = 0.5 -> delta = 0.75: only the 0.5 group stays below it
    assert clipped_group_lasso([weight], lam=1.0, a=0.5).item() == pytest.approx(0.75 + 0.75 + 0.5)
    penalty = group_lasso([weight], lam=0.1)
    assert penalty.item() == pytest.approx(0.45)
    penalty.backward()
    torch.testing.assert_close(weight.grad.reshape(3, 2)[0], torch.tensor([0.1, 0.0]))


def test_channel_counting_follows_the_data_flow() -> None:
    supernet = build_supernet(FULL)
    modules = dict(supernet.network.named_modules())
    with torch.no_grad():
        modules["stem"].weight[2].zero_()
        modules["layer1.0.conv1"].weight[[0, 5]] = 0
        modules["layer1.0.conv2"].weight[[3, 5]] = 0  # channel 3 still alive through the shortcut
        modules["layer1.0.shortcut"].weight[5] = 0  # channel 5 dead in both: the block output loses it
        modules["layer2.0.conv1"].weight[4] *= 0.01  # 1% of the others' norms: below 5% of the largest
    count = count_channels(supernet)
    assert count.channels == [7, 6, 7, 15, 16, 16, 16]
    assert count.masks[0].tolist() == [True, True, False] + [True] * 5
    assert count.masks[2].tolist() == [True] * 5 + [False] + [True] * 2
    assert count.forced == []


def test_a_layer_that_would_lose_every_channel_keeps_its_largest_and_says_so() -> None:
    supernet = build_supernet(FULL)
    with torch.no_grad():
        conv1 = dict(supernet.network.named_modules())["layer2.0.conv1"].weight
        conv1.mul_(1e-6)
        conv1[7] *= 10  # still below the absolute floor, but the largest
    count = count_channels(supernet)
    assert count.channels[3] == 1 and count.masks[3].nonzero().flatten().tolist() == [7]
    assert len(count.forced) == 1 and count.forced[0].startswith("layer2.0.conv1: every channel's filter norm was below")


def test_sorting_channels_keeps_the_function_and_puts_the_strongest_first() -> None:
    supernet = build_supernet(FULL)
    randomize_batchnorm(supernet)
    supernet.eval()
    x = torch.randn(4, 1, 12, 12)
    with torch.no_grad():
        before = supernet(x)
        sort_channels(supernet)
        torch.testing.assert_close(supernet(x), before, rtol=1e-5, atol=1e-6)
    stem_norms = supernet.network.stem.weight.flatten(1).norm(dim=1)
    assert torch.equal(stem_norms, stem_norms.sort(descending=True).values)


def test_fused_step_accumulates_one_gradient_per_subnet() -> None:
    full = build_supernet(FULL)
    supernet = build_supernet({**FULL, "subnets": SUBNETS})
    init_from_full(supernet, full)
    supernet.train()
    images, labels = torch.randn(8, 1, 12, 12), torch.randint(0, 4, (8,))
    params = dict(supernet.named_parameters())
    expected = {name: torch.zeros_like(p) for name, p in params.items()}
    for index in range(3):  # each configuration alone
        supernet.zero_grad(set_to_none=True)
        supernet.state.select(index)
        torch.nn.functional.cross_entropy(supernet(images), labels).backward()
        for name, p in params.items():
            if p.grad is not None:
                expected[name] += p.grad
    # BN running statistics moved during those passes: start again from the same weights and stats
    supernet = build_supernet({**FULL, "subnets": SUBNETS})
    init_from_full(supernet, full)
    supernet.train()
    optimizer = torch.optim.SGD(supernet.parameters(), lr=0.0)  # no step: the accumulated gradients stay
    fused_step(supernet, optimizer, images, labels, [0, 1, 2], LassoRecipe())
    for name, p in supernet.named_parameters():
        torch.testing.assert_close(p.grad if p.grad is not None else torch.zeros_like(p), expected[name],
                                   rtol=1e-5, atol=1e-6, msg=name)
    bn = supernet.network.layer1[0].bn1
    assert all(norm.weight.grad is not None and norm.weight.grad.abs().sum() > 0 for norm in bn.norms)


def test_penalty_training_sparsifies_channels_and_fused_training_trains_every_subnet(tiny_data) -> None:
    supernet = build_supernet(FULL)
    strong = LassoRecipe(epochs=4, batch_size=32, lr=0.1, penalty="clipped", lam=2.0, a=1.0, augment=False)
    train_lasso(supernet, tiny_data, strong, None, {})
    count = count_channels(supernet)
    assert sum(count.channels) < sum(supernet.configs[0])  # some channels were driven to zero
    fused = build_supernet({**FULL, "subnets": SUBNETS})
    init_from_full(fused, supernet)
    result = train_lasso(fused, tiny_data, LassoRecipe(epochs=1, batch_size=32, augment=False), None, {})
    assert set(result["history"][-1]["val_acc"]) == {"full", "mid", "small"}


@pytest.mark.parametrize("fields, message", [
    ({"penalty": "l1"}, "penalty must be"),
    ({"penalty": "clipped", "lam": 0.0}, "lambda must be > 0"),
    ({"penalty": "clipped", "lam": 0.1, "a": 0.0}, "a must be > 0"),
    ({"epochs": 0}, "epochs must be >= 1"),
    ({"lr": -1.0}, "lr must be > 0"),
])
def test_bad_recipes_are_refused(fields, message) -> None:
    with pytest.raises(ValueError, match=message):
        LassoRecipe(**fields)


def test_training_configurations_that_do_not_exist_are_refused(tiny_data) -> None:
    supernet = build_supernet(FULL)
    with pytest.raises(ValueError, match=r"configurations \[3\] do not exist"):
        train_lasso(supernet, tiny_data, LassoRecipe(configs=(3,)), None, {})
