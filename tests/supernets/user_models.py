"""Model factories as a user writes them, for `--model module:callable` and the `wenet-module`
family (importable as tests.supernets.user_models)."""

from __future__ import annotations

from torch import nn


def small_cnn(num_classes: int = 10, width: int = 16) -> nn.Module:
    """Conv-BN-ReLU blocks and a linear head: every conv but the stem can be grouped."""
    def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(*block(3, width, 1), *block(width, width, 1), *block(width, 2 * width, 2),
                         *block(2 * width, 2 * width, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(2 * width, num_classes))


def fixed_classes() -> nn.Module:
    """A factory without a num_classes argument (called with no arguments)."""
    return small_cnn(num_classes=4)


def without_batchnorm(num_classes: int = 10) -> nn.Module:
    """Nothing the converter can make switchable: no conv is followed by a BatchNorm2d."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))


def not_a_module(num_classes: int = 10) -> str:
    return "a model"


def broken(num_classes: int = 10) -> nn.Module:
    raise RuntimeError("weights server unreachable")


def cnn_with_mlp(num_classes: int = 10, width: int = 16) -> nn.Module:
    """Conv-BN-ReLU blocks (group knobs) and an MLP head (a width knob on its hidden layer)."""
    def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(*block(3, width, 1), *block(width, width, 1), *block(width, 2 * width, 2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, 64), nn.ReLU(), nn.Dropout(0.1),
                         nn.Linear(64, num_classes))


def tiny_vit(num_classes: int = 10) -> nn.Module:
    """torchvision's ViT definition, small: 12x12 images in 4x4 patches, 2 blocks of width 32."""
    from torchvision.models import VisionTransformer

    return VisionTransformer(image_size=12, patch_size=4, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                             num_classes=num_classes)


def nothing_sliceable(num_classes: int = 10) -> nn.Module:
    """No knob of any kind: one conv without BN whose output is pooled and flattened, one linear head."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, num_classes))
