import copy

import pytest
import torch
import torchvision

from subnetsearch.supernets import GroupSwitchConv2d, WeNetSupernet, build_supernet, convert_to_wenet
from tests.conftest import randomize_batchnorm


@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v2"])
def test_converted_full_mode_computes_what_the_original_did(name: str) -> None:
    original = getattr(torchvision.models, name)(weights=None, num_classes=10).eval()
    randomize_batchnorm(original)
    converted = convert_to_wenet(copy.deepcopy(original))
    supernet = WeNetSupernet(converted, {"family": "test", "model": name}, (3, 64, 64)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(supernet(x), original(x), rtol=1e-4, atol=1e-4)
    depthwise = [m for m in converted.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    if name == "mobilenet_v2":
        assert len(depthwise) == 17  # depthwise convolutions stay as they are
    assert len(supernet.space) == sum(isinstance(m, GroupSwitchConv2d) for m in converted.modules()) - 1  # stem


def test_resnet50_supernet_materializes_a_random_mode_exactly() -> None:
    supernet = build_supernet({"family": "wenet-torchvision", "model": "resnet50", "input_size": 64,
                               "num_classes": 10}).eval()
    randomize_batchnorm(supernet)
    mode = supernet.random_mode(torch.Generator().manual_seed(3))
    supernet.set_mode(mode)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = supernet(x)
        actual = supernet.materialize(mode)(x)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)
    assert supernet.cost(mode).macs < supernet.cost(supernet.full_mode()).macs
