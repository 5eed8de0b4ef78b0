"""Build supernets by name from an architecture config (a small JSON-able dict saved with every
checkpoint); building is a pure function of that config."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from torch import nn

from subnetsearch.costs import layer_cost
from subnetsearch.errors import InputError, SubnetsearchError
from subnetsearch.supernets._base import BaseSupernet
from subnetsearch.supernets._convert import ConversionError, convert_with_report
from subnetsearch.supernets._ddi import DEFAULT_BUDGETS, DEFAULT_THRESHOLDS, DDISupernet
from subnetsearch.supernets._ddi_network import GATINGS
from subnetsearch.supernets._lasso import LassoSupernet
from subnetsearch.supernets._models import build_model_supernet
from subnetsearch.supernets._nested import NESTED_RESNET_DEFAULTS, NestedSupernet
from subnetsearch.supernets._resnet import CifarResNet
from subnetsearch.supernets._wenet import WeNetSupernet


class ArchError(SubnetsearchError, ValueError):
    """An architecture config that cannot be built."""


def _take(arch: Mapping[str, Any], allowed: set[str]) -> dict[str, Any]:
    """The fields of `arch` in `allowed`, refusing unknown ones and values of another kind than the
    field's default (an int where a list is due, a boolean where a number is due)."""
    unknown = sorted(set(arch) - allowed - {"family"})
    if unknown:
        raise ArchError(f"unknown architecture field(s) {unknown} for family {arch['family']!r}; allowed: {sorted(allowed)}")
    taken = {key: arch[key] for key in allowed if key in arch}
    for key, value in taken.items():
        default = _FIELD_KINDS.get(key)
        if default is not None and value is not None and (
                isinstance(value, bool) != isinstance(default, bool) or not isinstance(value, type(default))):
            raise ArchError(f"architecture field {key!r} must be {type(default).__name__}, got {value!r}")
    return taken


def _cifar_resnet(arch: Mapping[str, Any]) -> WeNetSupernet:
    fields = _take(arch, {"depth", "widths", "in_channels", "num_classes", "group_choices", "shuffle",
                          "shuffle_rule", "switch_classifier", "input_size"})
    input_size = fields.pop("input_size", 32)
    network = CifarResNet(**fields)
    config = {"family": "wenet-cifar-resnet", **CIFAR_RESNET_DEFAULTS, **_take(arch, set(CIFAR_RESNET_DEFAULTS))}
    return WeNetSupernet(network, config, (fields.get("in_channels", 1), input_size, input_size))


_MODEL_FIELDS = {"num_classes", "input_size", "in_channels", "group_choices", "shuffle", "shuffle_rule", "width_ratios"}


def _torchvision(arch: Mapping[str, Any]) -> WeNetSupernet:
    """A torchvision classifier by name (`model`), converted; random weights (a checkpoint's fill it)."""
    fields = _take(arch, {"model", *_MODEL_FIELDS})
    return build_model_supernet({"family": "wenet-torchvision", **fields})


def _module_factory(arch: Mapping[str, Any]) -> WeNetSupernet:
    """A user's model from its `factory` ("module:callable"), converted."""
    fields = _take(arch, {"factory", *_MODEL_FIELDS})
    if "factory" not in fields:
        raise ArchError("family 'wenet-module' needs a 'factory' (module:callable)")
    return build_model_supernet({"family": "wenet-module", **fields})


# Below these shares of switchable MACs a converted supernet barely trades: warned, then refused.
LOW_SHARE, USELESS_SHARE = 0.5, 0.2


def supernet_from_model(model: nn.Module, name: str, arch: Mapping[str, Any], input_shape: tuple[int, int, int],
                        group_choices: Sequence[int] = (1, 2, 4, 8, 16), shuffle: bool = True,
                        shuffle_rule: str = "max", width_ratios: Sequence[float] | None = None) -> WeNetSupernet:
    """Convert `model` and wrap it as a supernet with its `conversion` report. Refuses a model with
    nothing switchable or with under 20 % of its MACs switchable (measured at `input_shape`); warns
    under 50 %. `width_ratios` (default: the arch's, else none) give width knobs (`_width`)."""
    ratios = width_ratios if width_ratios is not None else arch.get("width_ratios", (1.0,))
    report = convert_with_report(model, group_choices, shuffle, shuffle_rule, ratios)
    if not report.switchable:
        reasons = "; ".join(f"{layer}: {why}" for layer, why in list(report.static.items())[:4])
        raise ConversionError(f"{name}: no layer can be made switchable ({len(report.static)} static: {reasons}"
                              f"{' ...' if len(report.static) > 4 else ''})")
    if len(ratios) > 1:  # recorded, so that a rebuild from the arch (a checkpoint) gets the same knobs
        arch = {**arch, "width_ratios": [float(r) for r in ratios]}
    supernet = WeNetSupernet(model, arch, input_shape)
    total = sum(layer_cost(layer, layer.fixed_groups).macs for layer in supernet.layer_shapes)
    switchable = sum(layer_cost(layer, 1).macs for layer in supernet.layer_shapes
                     if layer.knob or layer.out_knob or layer.in_knob)
    share = switchable / total if total else 0.0
    supernet.conversion = replace(report, switchable_macs_share=share)
    if share < USELESS_SHARE:
        raise ConversionError(f"{name}: only {share:.1%} of the MACs are in switchable layers, so no mode can save "
                              f"much ({supernet.conversion.summary()})")
    if share < LOW_SHARE:
        warnings.warn(f"{name}: the switchable layers hold only {share:.1%} of the MACs, so its modes can save "
                      f"little ({supernet.conversion.summary()})", stacklevel=2)
    return supernet


def _lasso_resnet(arch: Mapping[str, Any]) -> LassoSupernet:
    fields = _take(arch, set(LASSO_RESNET_DEFAULTS))
    if len(fields.get("widths", LASSO_RESNET_DEFAULTS["widths"])) != 3:
        raise ArchError(f"widths must give 3 stage widths, got {fields['widths']}")
    # the family string as given: a checkpoint written under the legacy name keeps its architecture
    # (and so its content hash and its modes' ids) byte for byte
    return LassoSupernet({"family": arch["family"], **LASSO_RESNET_DEFAULTS, **fields})


def _ddi_resnet(arch: Mapping[str, Any]) -> DDISupernet:
    fields = _take(arch, set(DDI_RESNET_DEFAULTS))
    config = {"family": "ddi-cifar-resnet", **DDI_RESNET_DEFAULTS, **fields}
    if config["gating"] not in GATINGS:
        raise ArchError(f"gating must be one of {GATINGS}, got {config['gating']!r}")
    if len(config["widths"]) != 3:
        raise ArchError(f"widths must give 3 stage widths, got {config['widths']}")
    return DDISupernet(config)


def _nested_resnet(arch: Mapping[str, Any]) -> NestedSupernet:
    fields = _take(arch, {*NESTED_RESNET_DEFAULTS, "group_choices"})  # group counts: only where given
    config = {"family": "nested-cifar-resnet", **NESTED_RESNET_DEFAULTS, **fields}
    try:
        return NestedSupernet(config)
    except InputError as error:
        raise ArchError(str(error)) from None


# Dual dynamic inference: gating mgl2s | layer | channel | none; exits (RADI); the runtime knobs'
# values; skip_target: the skip ratio the gates were trained for (a training-time knob, recorded).
DDI_RESNET_DEFAULTS: dict[str, Any] = {
    "depth": 20, "widths": [16, 32, 64], "in_channels": 1, "num_classes": 10, "input_size": 28, "gating": "mgl2s",
    "exits": False, "thresholds": list(DEFAULT_THRESHOLDS), "budgets": list(DEFAULT_BUDGETS), "skip_target": None,
}

# Non-uniform subnets (clipped group-Lasso paper): `subnets` lists {"name", "channels" per slot} from
# largest to smallest; `method` records how they were chosen (clipped-lasso, group-lasso, uniform).
LASSO_RESNET_DEFAULTS: dict[str, Any] = {
    "depth": 20, "widths": [16, 32, 64], "in_channels": 1, "num_classes": 10, "input_size": 28, "subnets": [],
    "method": "full",
}

CIFAR_RESNET_DEFAULTS: dict[str, Any] = {
    "depth": 20, "widths": [16, 32, 64], "in_channels": 1, "num_classes": 10, "input_size": 28,
    "group_choices": [1, 2, 4, 8, 16], "shuffle": True, "shuffle_rule": "balanced", "switch_classifier": False,
}

# The kind each field takes (from the defaults; lists may arrive as tuples from Python callers).
_FIELD_KINDS: dict[str, Any] = {key: value for defaults in (CIFAR_RESNET_DEFAULTS, LASSO_RESNET_DEFAULTS,
                                                            DDI_RESNET_DEFAULTS) for key, value in defaults.items()
                                if value is not None and not isinstance(value, list)}
_FIELD_KINDS["model"] = "resnet50"
_FIELD_KINDS["factory"] = "module:callable"

Builder = Callable[[Mapping[str, Any]], BaseSupernet]
FAMILIES: dict[str, Builder] = {}
# Names earlier versions wrote into checkpoints, and the family each now is.
LEGACY_FAMILIES: dict[str, str] = {"width-cifar-resnet": "lasso-cifar-resnet"}


def family_builder(name: object) -> Builder | None:
    """The builder of a registered family or of a legacy name for one; None for an unknown name."""
    if not isinstance(name, str):
        return None
    return FAMILIES.get(LEGACY_FAMILIES.get(name, name))


def register_family(name: str, builder: Builder) -> None:
    """Make `build_supernet` (and so checkpoints, searches, the CLI) know an architecture family:
    `builder(arch)` builds an untrained supernet from an `arch` whose "family" is `name`. A name
    registered already is refused (two families must never read each other's checkpoints)."""
    if not name or not isinstance(name, str):
        raise InputError(f"a family name must be a non-empty string, got {name!r}")
    if name in LEGACY_FAMILIES:
        raise InputError(f"supernet family {name!r} is registered already (a legacy name of "
                         f"{LEGACY_FAMILIES[name]!r})")
    if name in FAMILIES:
        raise InputError(f"supernet family {name!r} is registered already (by {FAMILIES[name].__module__})")
    FAMILIES[name] = builder


def unregister_family(name: str) -> None:
    """Forget a family registered with `register_family` (a plugin unloaded, a test's family after
    the test); a name that is not registered is refused."""
    if name not in FAMILIES:
        raise InputError(f"supernet family {name!r} is not registered")
    del FAMILIES[name]


register_family("wenet-cifar-resnet", _cifar_resnet)
register_family("wenet-torchvision", _torchvision)
register_family("wenet-module", _module_factory)
register_family("lasso-cifar-resnet", _lasso_resnet)
register_family("ddi-cifar-resnet", _ddi_resnet)
register_family("nested-cifar-resnet", _nested_resnet)


S = TypeVar("S", bound=BaseSupernet)


def build_supernet_of(kind: type[S], arch: Mapping[str, Any]) -> S:
    """`build_supernet`, for a caller that needs one family's supernet: an ArchError names the family
    the architecture builds instead."""
    supernet = build_supernet(arch)
    if not isinstance(supernet, kind):
        raise ArchError(f"architecture family {arch.get('family')!r} builds a {type(supernet).__name__}, "
                        f"not a {kind.__name__}")
    return supernet


def build_supernet(arch: Mapping[str, Any]) -> BaseSupernet:
    """Build an untrained supernet from its architecture config."""
    family = arch.get("family")
    builder = family_builder(family)
    if builder is None:
        raise ArchError(f"unknown supernet family {family!r}; known: {sorted(FAMILIES)}")
    try:
        return builder(arch)
    except (TypeError, ValueError) as error:
        if isinstance(error, ArchError):
            raise
        raise ArchError(f"cannot build {family}: {error}") from error
