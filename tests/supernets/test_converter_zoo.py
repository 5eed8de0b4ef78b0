"""The converter over torchvision's whole classification zoo, the way timm tests its models.

Every model in `torchvision.models.list_models(module=torchvision.models)` is either converted (group
counts where a private BN follows a conv, widths where a layer feeds only dense layers: transformer
MLPs, BN-less CNNs), and then checked for exactness (full mode == original, materialized random
modes == the supernet, the analytic cost == MACs counted by hooks on the materialized network, ONNX
== materialized), or refused with the reason listed in REFUSED. A model added to torchvision shows
up here and fails until it is classified. BN statistics and affine parameters are randomized
(otherwise BN is nearly the identity and an equivalence test cannot fail); inputs are small to keep
the suite fast.
"""

from __future__ import annotations

import copy
import os
import warnings

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from subnetsearch.devices import export_onnx
from subnetsearch.supernets import ArchError, SwitchableBatchNorm2d, build_supernet, supernet_from_model
from subnetsearch.supernets._models import original_model
from tests.conftest import randomize_batchnorm

pytestmark = pytest.mark.zoo  # the full tier (pytest --full); see pyproject.toml

# Models the converter refuses, and the reason it must give: none since width knobs (issue 31).
REFUSED: dict[str, str] = {}
WIDTHS = [1.0, 0.75, 0.5, 0.25]
# The input each model is checked at, where 32 is too small (AlexNet's pools), not a multiple of the
# patch (ViT-H/14), or mostly padding (Swin pads its 8x8 tokens at 32 to 14x14 windows, so its
# attention projections would hold 88 % of the MACs and no knob could save much).
INPUT_SIZE = {"inception_v3": 80, "maxvit_t": 224, "alexnet": 64, "vit_h_14": 28,
              **{name: 224 for name in ("swin_t", "swin_s", "swin_b", "swin_v2_t", "swin_v2_s", "swin_v2_b")}}
# The fast suite (CI) leaves out the largest variants, each built from the same blocks as a smaller
# sibling that it checks; SUBNETSEARCH_FULL_ZOO=1 checks them too (about 3 minutes more here: 4.5 min in all vs 1.5).
LARGE = {
    "regnet_y_128gf": "regnet_y_8gf", "regnet_y_32gf": "regnet_y_8gf", "regnet_y_16gf": "regnet_y_8gf",
    "regnet_x_32gf": "regnet_x_8gf", "regnet_x_16gf": "regnet_x_8gf", "wide_resnet101_2": "wide_resnet50_2",
    "resnet152": "resnet101", "resnext101_32x8d": "resnext50_32x4d", "resnext101_64x4d": "resnext50_32x4d",
    "efficientnet_v2_l": "efficientnet_v2_s", "efficientnet_v2_m": "efficientnet_v2_s",
    "efficientnet_b7": "efficientnet_b3", "efficientnet_b6": "efficientnet_b3", "efficientnet_b5": "efficientnet_b3",
    "densenet201": "densenet121", "densenet169": "densenet121", "densenet161": "densenet121",
    "vgg19_bn": "vgg11_bn", "vgg16_bn": "vgg11_bn", "vgg13_bn": "vgg11_bn",
    "vit_h_14": "vit_b_32", "vit_l_16": "vit_b_32", "vit_l_32": "vit_b_32", "vit_b_16": "vit_b_32",
    "convnext_large": "convnext_tiny", "convnext_base": "convnext_tiny", "swin_v2_b": "swin_v2_t",
    "swin_b": "swin_t", "swin_v2_s": "swin_v2_t", "swin_s": "swin_t",
}
# ONNX cannot export VGG's adaptive pool to 7x7 (AlexNet's to 6x6) from the 1x1 map a small input
# leaves (fine at 224).
NO_ONNX_AT_32 = {"vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn", "vgg11", "vgg13", "vgg16", "vgg19", "alexnet"}

MODELS = torchvision.models.list_models(module=torchvision.models)


def _build_original(name: str, size: int) -> nn.Module:
    """The plain model the `wenet-torchvision` family converts (the product's builder)."""
    return original_model({"family": "wenet-torchvision", "model": name, "num_classes": 10,
                           "input_size": size}).eval()


def hook_macs(model: nn.Module, x: torch.Tensor) -> int:
    """MACs of every conv and linear layer, counted on the tensors that really flow (batch 1), and of
    the projections attention modules compute with their weights directly (nn.MultiheadAttention's
    in/out projections; Swin's qkv / proj on its input padded to whole windows)."""
    total = 0

    def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kernel = module.kernel_size[0] * module.kernel_size[1]
            total += output.numel() * (module.in_channels // module.groups) * kernel
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features
        elif isinstance(module, nn.MultiheadAttention):
            tokens = inputs[0].numel() // module.embed_dim
            total += tokens * module.embed_dim * module.embed_dim * 4  # q, k, v and out
        else:  # Swin's shifted window attention: tokens padded to whole windows
            _, height, width, _ = inputs[0].shape
            windows = [-(-size // w) * w for size, w in zip((height, width), module.window_size, strict=True)]
            tokens = windows[0] * windows[1]
            total += tokens * (module.qkv.in_features * module.qkv.out_features
                               + module.proj.in_features * module.proj.out_features)

    def counted(m: nn.Module) -> bool:
        return isinstance(m, (nn.Conv2d, nn.Linear, nn.MultiheadAttention)) or type(m).__name__.startswith(
            "ShiftedWindowAttention")

    hooks = [m.register_forward_hook(count) for m in model.modules() if counted(m)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return total


def _close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    scale = float(expected.abs().max()) or 1.0
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4 * scale, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("name", MODELS)
def test_every_torchvision_classifier_is_converted_exactly_or_refused_with_its_reason(name: str) -> None:
    if name in LARGE and not os.environ.get("SUBNETSEARCH_FULL_ZOO"):
        pytest.skip(f"large variant: the fast suite checks {LARGE[name]} (same blocks); SUBNETSEARCH_FULL_ZOO=1 runs it")
    size = INPUT_SIZE.get(name, 32)
    arch = {"family": "wenet-torchvision", "model": name, "num_classes": 10, "input_size": size, "width_ratios": WIDTHS}
    if name in REFUSED:
        with pytest.raises(ArchError, match=REFUSED[name]):
            build_supernet(arch)
        return
    torch.manual_seed(0)
    original = _build_original(name, size)
    randomize_batchnorm(original)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # low switchable share: asserted in its own test
        supernet = supernet_from_model(copy.deepcopy(original), name, arch, (3, size, size)).eval()
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))

    # full mode == the original, BN hyperparameters carried over
    supernet.set_mode(supernet.full_mode())
    with torch.no_grad():
        _close(supernet(x), original(x), "full mode vs original")
    originals = dict(original.named_modules())
    for layer_name, module in supernet.network.named_modules():
        if isinstance(module, SwitchableBatchNorm2d):
            source = originals[layer_name.removesuffix(".0")]
            assert {(n.eps, n.momentum) for n in module.norms} == {(source.eps, source.momentum)}, layer_name

    # materialize == supernet, analytic cost == counted MACs, ONNX == materialized, on random modes
    generator = torch.Generator().manual_seed(2)
    for mode in (supernet.full_mode(), supernet.random_mode(generator), supernet.smallest_mode()):
        supernet.set_mode(mode)
        static = supernet.materialize(mode)
        assert supernet.mode == mode
        with torch.no_grad():
            expected = supernet(x)
            _close(static(x), expected, f"materialized {supernet.describe(mode)}")
        assert supernet.cost(mode).macs == hook_macs(static, x), supernet.describe(mode)
    if name in NO_ONNX_AT_32:
        return
    import onnxruntime

    session = onnxruntime.InferenceSession(export_onnx(static, x), providers=["CPUExecutionProvider"])
    (onnx_logits,) = session.run(None, {"input": x.numpy()})
    _close(torch.from_numpy(np.asarray(onnx_logits)), expected, "ONNX vs materialized")


def test_the_conversion_report_says_what_stayed_static_and_warns_on_a_small_switchable_share() -> None:
    with pytest.warns(UserWarning, match=r"densenet121: the switchable layers hold only 4\d\.\d% of the MACs"):
        supernet = build_supernet({"family": "wenet-torchvision", "model": "densenet121", "num_classes": 10,
                                   "input_size": 32})
    report = supernet.conversion
    assert 0.3 < report.switchable_macs_share < 0.5
    # a DenseNet conv feeding the concatenation has no private BN: static, with the reason
    assert "features.denseblock1.denselayer1.conv2" in report.static
    assert "not a BatchNorm2d" in report.static["features.denseblock1.denselayer1.conv2"]
    assert "features.denseblock1.denselayer1.conv1" in report.switchable
    mobilenet = build_supernet({"family": "wenet-torchvision", "model": "mobilenet_v3_small", "num_classes": 10,
                                "input_size": 32})
    squeeze_excitation = [n for n in mobilenet.conversion.static if ".fc1" in n or ".fc2" in n]
    assert squeeze_excitation and all("no private BN" in mobilenet.conversion.static[n] for n in squeeze_excitation)
    assert "already grouped" in mobilenet.conversion.static["features.1.block.0.0"]  # depthwise
    assert mobilenet.conversion.summary().startswith(f"{len(mobilenet.space)} switchable layers")


class _ChannelsLastMLP(nn.Module):
    """A ConvNeXt-style block: a switchable conv + BN, then linear layers on a channels-last tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(16)
        self.mlp = nn.Sequential(nn.Linear(16, 64), nn.GELU(), nn.Linear(64, 16))
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm2(self.conv2(torch.relu(self.norm(self.conv(x)))))
        x = self.mlp(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.head(x.mean((2, 3)))


def test_the_cost_of_a_linear_layer_on_a_channels_last_tensor_counts_every_position() -> None:
    supernet = supernet_from_model(_ChannelsLastMLP(), "mlp", {"family": "test"}, (3, 9, 7)).eval()
    x = torch.randn(1, 3, 9, 7)
    for mode in (supernet.full_mode(), supernet.smallest_mode()):
        static = supernet.materialize(mode)
        assert supernet.cost(mode).macs == hook_macs(static, x)
    mlp = [layer for layer in supernet.layer_shapes if layer.name == "mlp.0"][0]
    assert (mlp.output_area, mlp.input_area) == (63, 63)  # 9 x 7 positions, not the last two dims
