"""Shared fixtures: tiny models and data keep the suite fast on 2 cores."""

from __future__ import annotations

import pytest
import torch

from subnetsearch.data import synthetic
from subnetsearch.supernets import WeNetSupernet, build_supernet

TINY_ARCH = {
    "family": "wenet-cifar-resnet", "depth": 8, "widths": [8, 16, 16], "in_channels": 1, "num_classes": 4,
    "input_size": 12, "group_choices": [1, 2, 4, 8], "shuffle": True, "shuffle_rule": "balanced",
}


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_arch() -> dict:
    return dict(TINY_ARCH)


@pytest.fixture
def tiny_supernet() -> WeNetSupernet:
    return build_supernet(TINY_ARCH)


@pytest.fixture(scope="session")
def tiny_data():
    return synthetic(num_classes=4, per_class=64, size=12)


def randomize_batchnorm(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every BN non-trivial statistics and affine parameters, so equivalence tests can fail."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=generator) * 0.4 - 0.2)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(n, generator=generator) * 0.4 - 0.2)
