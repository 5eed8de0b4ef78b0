"""Build supernets by name from an architecture config (a small JSON-able dict saved with every
checkpoint); building is a pure function of that config."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from subnetsearch.supernets._convert import convert_to_wenet
from subnetsearch.supernets._ddi import DEFAULT_BUDGETS, DEFAULT_THRESHOLDS, GATINGS, DDISupernet
from subnetsearch.supernets._resnet import CifarResNet
from subnetsearch.supernets._wenet import WeNetSupernet
from subnetsearch.supernets._width import WidthSupernet


class ArchError(ValueError):
    """An architecture config that cannot be built."""


def _take(arch: Mapping[str, Any], allowed: set[str]) -> dict[str, Any]:
    unknown = sorted(set(arch) - allowed - {"family"})
    if unknown:
        raise ArchError(f"unknown architecture field(s) {unknown} for family {arch['family']!r}; allowed: {sorted(allowed)}")
    return {key: arch[key] for key in allowed if key in arch}


def _cifar_resnet(arch: Mapping[str, Any]) -> WeNetSupernet:
    fields = _take(arch, {"depth", "widths", "in_channels", "num_classes", "group_choices", "shuffle",
                          "shuffle_rule", "switch_classifier", "input_size"})
    input_size = fields.pop("input_size", 32)
    network = CifarResNet(**fields)
    config = {"family": "wenet-cifar-resnet", **CIFAR_RESNET_DEFAULTS, **_take(arch, set(CIFAR_RESNET_DEFAULTS))}
    return WeNetSupernet(network, config, (fields.get("in_channels", 1), input_size, input_size))


def _torchvision(arch: Mapping[str, Any]) -> WeNetSupernet:
    fields = _take(arch, {"model", "num_classes", "input_size", "group_choices", "shuffle", "shuffle_rule"})
    import torchvision

    name = fields.get("model", "resnet50")
    builder = getattr(torchvision.models, name, None)
    if builder is None or not callable(builder):
        raise ArchError(f"torchvision has no model {name!r}")
    model: nn.Module = builder(weights=None, num_classes=fields.get("num_classes", 1000))
    convert_to_wenet(model, fields.get("group_choices", (1, 2, 4, 8, 16)), fields.get("shuffle", True),
                     fields.get("shuffle_rule", "max"))
    size = fields.get("input_size", 224)
    return WeNetSupernet(model, {"family": "wenet-torchvision", **fields}, (3, size, size))


def _width_resnet(arch: Mapping[str, Any]) -> WidthSupernet:
    fields = _take(arch, set(WIDTH_RESNET_DEFAULTS))
    if len(fields.get("widths", WIDTH_RESNET_DEFAULTS["widths"])) != 3:
        raise ArchError(f"widths must give 3 stage widths, got {fields['widths']}")
    return WidthSupernet({"family": "width-cifar-resnet", **WIDTH_RESNET_DEFAULTS, **fields})


def _ddi_resnet(arch: Mapping[str, Any]) -> DDISupernet:
    fields = _take(arch, set(DDI_RESNET_DEFAULTS))
    config = {"family": "ddi-cifar-resnet", **DDI_RESNET_DEFAULTS, **fields}
    if config["gating"] not in GATINGS:
        raise ArchError(f"gating must be one of {GATINGS}, got {config['gating']!r}")
    if len(config["widths"]) != 3:
        raise ArchError(f"widths must give 3 stage widths, got {config['widths']}")
    return DDISupernet(config)


# Dual dynamic inference: gating mgl2s | layer | channel | none; exits (RADI); the runtime knobs'
# values; skip_target: the skip ratio the gates were trained for (a training-time knob, recorded).
DDI_RESNET_DEFAULTS: dict[str, Any] = {
    "depth": 20, "widths": [16, 32, 64], "in_channels": 1, "num_classes": 10, "input_size": 28, "gating": "mgl2s",
    "exits": False, "thresholds": list(DEFAULT_THRESHOLDS), "budgets": list(DEFAULT_BUDGETS), "skip_target": None,
}

# Non-uniform subnets (clipped group-Lasso paper): `subnets` lists {"name", "channels" per slot} from
# largest to smallest; `method` records how they were chosen (clipped-lasso, group-lasso, uniform).
WIDTH_RESNET_DEFAULTS: dict[str, Any] = {
    "depth": 20, "widths": [16, 32, 64], "in_channels": 1, "num_classes": 10, "input_size": 28, "subnets": [],
    "method": "full",
}

CIFAR_RESNET_DEFAULTS: dict[str, Any] = {
    "depth": 20, "widths": [16, 32, 64], "in_channels": 1, "num_classes": 10, "input_size": 28,
    "group_choices": [1, 2, 4, 8, 16], "shuffle": True, "shuffle_rule": "balanced", "switch_classifier": False,
}

Supernet = WeNetSupernet | WidthSupernet | DDISupernet

FAMILIES: dict[str, Callable[[Mapping[str, Any]], Supernet]] = {
    "wenet-cifar-resnet": _cifar_resnet,
    "wenet-torchvision": _torchvision,
    "width-cifar-resnet": _width_resnet,
    "ddi-cifar-resnet": _ddi_resnet,
}


def build_supernet(arch: Mapping[str, Any]) -> Supernet:
    """Build an untrained supernet from its architecture config."""
    family = arch.get("family")
    if family not in FAMILIES:
        raise ArchError(f"unknown supernet family {family!r}; known: {sorted(FAMILIES)}")
    try:
        return FAMILIES[family](arch)
    except (TypeError, ValueError) as error:
        if isinstance(error, ArchError):
            raise
        raise ArchError(f"cannot build {family}: {error}") from error
