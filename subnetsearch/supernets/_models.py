"""Your own model in: a torchvision CNN by name or your own `nn.Module` factory, optionally started
from a local state-dict file (never downloaded), adapted to the data's channels and converted to a
WeNet supernet (`supernet_from_model`).

The architecture config records how to rebuild the model without the weights file: the torchvision
name or the factory's `module:callable`, the classes, the input size and channels, the group
choices. A checkpoint's weights then fill it in.
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from subnetsearch.errors import SubnetsearchError

MODEL_HELP = ("torchvision:NAME (a torchvision classification CNN, e.g. torchvision:resnet18) or module:callable "
              "(your own factory returning an nn.Module; called with num_classes=N if it takes that argument)")
# Builder arguments torchvision needs for a plain classifier (no auxiliary heads, which return tuples).
_TORCHVISION_KWARGS = {"inception_v3": {"aux_logits": False, "init_weights": False},
                       "googlenet": {"aux_logits": False, "init_weights": False}}


class ModelError(SubnetsearchError, ValueError):
    """A model spec, factory or weights file that cannot give a supernet; the message says which and why."""


WIDTH_RATIOS = [1.0, 0.75, 0.5, 0.25]  # the shares of its channels a converted model's width knob offers


def model_arch(spec: str, *, num_classes: int, input_size: int, in_channels: int = 3,
               group_choices: list[int] | None = None, shuffle: bool = True,
               shuffle_rule: str = "max", width_ratios: list[float] | None = None) -> dict[str, Any]:
    """The architecture config of `--model SPEC` on data of `in_channels` x `input_size`^2 images:
    group counts where a private BN follows a conv, widths (`width_ratios`, default
    `WIDTH_RATIOS`; [1.0] for none) where a layer's output reaches only dense layers."""
    common: dict[str, Any] = {"num_classes": num_classes, "input_size": input_size, "in_channels": in_channels,
                              "group_choices": list(group_choices or [1, 2, 4, 8, 16]), "shuffle": shuffle,
                              "shuffle_rule": shuffle_rule,
                              "width_ratios": [float(r) for r in (width_ratios or WIDTH_RATIOS)]}
    kind, _, name = spec.partition(":")
    if not name or not kind:
        raise ModelError(f"--model must be {MODEL_HELP}; got {spec!r}")
    if kind == "torchvision":
        check_torchvision_name(name)
        return {"family": "wenet-torchvision", "model": name, **common}
    return {"family": "wenet-module", "factory": spec, **common}


def check_torchvision_name(name: str) -> None:
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    if name not in names:
        close = [n for n in names if n.startswith(name[:4])][:5] or names[:5]
        raise ModelError(f"torchvision has no classification model {name!r} (e.g. {', '.join(close)}; all: "
                         "torchvision.models.list_models(module=torchvision.models))")


def original_model(arch: Mapping[str, Any]) -> nn.Module:
    """The plain model an arch names, randomly initialized, before any conversion."""
    num_classes = int(arch.get("num_classes", 1000))
    if arch["family"] == "wenet-torchvision":
        import torchvision

        name = str(arch.get("model", "resnet50"))
        check_torchvision_name(name)
        builder = torchvision.models.get_model_builder(name)
        kwargs: dict[str, Any] = dict(_TORCHVISION_KWARGS.get(name, {}))
        if name.startswith("vit_"):  # a ViT's position embedding is sized for its input: the data's
            size = int(arch.get("input_size", 224))
            patch = int(name.rsplit("_", 1)[1])
            if size % patch:
                raise ModelError(f"{name} cuts images into {patch}x{patch} patches: the input size {size} must be a "
                                 f"multiple of {patch}")
            kwargs["image_size"] = size
        return builder(weights=None, num_classes=num_classes, **kwargs)
    return _from_factory(str(arch["factory"]), num_classes)


def _from_factory(spec: str, num_classes: int) -> nn.Module:
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ModelError(f"--model {spec}: cannot import module {module_name!r} ({error}); it must be importable "
                         "here (on PYTHONPATH or installed), and on every Ray node that trains or searches it") from error
    factory = getattr(module, attribute, None)
    if factory is None or not callable(factory):
        raise ModelError(f"--model {spec}: module {module_name!r} has no callable {attribute!r}")
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        parameters = {}  # type: ignore[assignment]
    try:
        model = factory(num_classes=num_classes) if "num_classes" in parameters else factory()
    except Exception as error:  # the user's code: any exception, named
        raise ModelError(f"--model {spec}: the factory failed: {type(error).__name__}: {error}") from error
    if not isinstance(model, nn.Module):
        raise ModelError(f"--model {spec}: the factory returned a {type(model).__name__}, not a torch nn.Module")
    return model


def adapt_input_channels(model: nn.Module, channels: int) -> str | None:
    """Make the model's first convolution take `channels` input channels (grayscale data into an
    RGB model): its weights summed over the input channels, so a pretrained stem sees a gray image
    as it saw the same gray image in RGB. Returns the layer's name if it changed anything."""
    stem = next(((name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if stem is None or stem[1].in_channels == channels:
        return None
    name, conv = stem
    if conv.groups != 1 or channels != 1:
        raise ModelError(f"cannot adapt {name} ({conv.in_channels} input channels, {conv.groups} groups) to "
                         f"{channels}-channel images; give {conv.in_channels}-channel data (--channels)")
    adapted = nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,  # type: ignore[arg-type]
                        conv.dilation, 1, conv.bias is not None, conv.padding_mode)  # type: ignore[arg-type]
    with torch.no_grad():
        adapted.weight.copy_(conv.weight.sum(1, keepdim=True))
        if conv.bias is not None and adapted.bias is not None:
            adapted.bias.copy_(conv.bias)
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, adapted)
    return name


def load_error_reason(error: Exception) -> str:
    """The first line of why `torch.load` failed (torch raises many kinds for damaged or unsafe files)."""
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a local file (`torch.load(weights_only=True)`): the dict itself, or one
    held under "state_dict" or "model" (what training scripts and torchvision's references save)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for damaged or unsafe files
        raise ModelError(f"cannot read weights file {path} as a state dict (weights_only): "
                         f"{load_error_reason(error)}") from error
    if isinstance(payload, dict):
        for key in ("state_dict", "model"):
            if isinstance(payload.get(key), dict):
                payload = payload[key]
                break
    if not isinstance(payload, dict) or not payload or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in payload.items()):
        raise ModelError(f"{path} holds no state dict (a mapping of parameter names to tensors)")
    return {key.removeprefix("module."): value for key, value in payload.items()}  # DDP-saved files too


def load_model_weights(model: nn.Module, path: str | Path, what: str) -> list[str]:
    """Load a state-dict file into the plain `model` (before conversion). Every key must fit, except
    the final classifier's when the file has another number of classes (the fine-tuning case): that
    layer keeps its fresh initialization. Returns the keys left out; a ModelError names the keys of
    a file made for another model."""
    state = read_state_dict(path)
    expected = model.state_dict()
    classifier = next((name for name, m in reversed(list(model.named_modules())) if isinstance(m, nn.Linear)), None)
    head = {f"{classifier}.weight", f"{classifier}.bias"} if classifier else set()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(k for k in expected if k in state and expected[k].shape != state[k].shape)
    other = [k for k in mismatched if k not in head]
    if missing or unexpected or other:
        raise ModelError(f"weights file {path} does not fit {what}: {len(missing)} missing (e.g. {missing[:3]}), "
                         f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}), {len(other)} of other shapes "
                         f"(e.g. {[(k, tuple(state[k].shape), tuple(expected[k].shape)) for k in other[:2]]})")
    kept = {k: v for k, v in state.items() if k not in mismatched}
    model.load_state_dict(kept, strict=False)
    return mismatched


def build_model_supernet(arch: Mapping[str, Any], weights: str | Path | None = None,
                         notes: list[str] | None = None) -> Any:
    """The WeNet supernet of a model arch (`model_arch`), from `weights` if given. With a `notes`
    list, what is worth telling the user goes there (left-out classifier keys, the adapted stem, a
    low switchable share) instead of warnings."""
    from subnetsearch.supernets._registry import ArchError, supernet_from_model

    told = notes if notes is not None else []
    model = original_model(arch)
    what = str(arch.get("model") or arch.get("factory"))
    if weights is not None:
        fresh = load_model_weights(model, weights, what)
        if fresh:
            told.append(f"the weights file has another classifier: {', '.join(fresh)} start fresh "
                        f"({arch.get('num_classes')} classes here)")
    stem = adapt_input_channels(model, int(arch.get("in_channels", 3)))
    if stem:
        told.append(f"{stem} adapted to {arch.get('in_channels')}-channel images (weights summed over RGB)")
    size = int(arch.get("input_size", 224))
    shape = (int(arch.get("in_channels", 3)), size, size)
    with warnings.catch_warnings(record=notes is not None) as caught:
        if notes is not None:
            warnings.simplefilter("always", UserWarning)
        try:
            supernet = supernet_from_model(model, what, dict(arch), shape, arch.get("group_choices", (1, 2, 4, 8, 16)),
                                           arch.get("shuffle", True), arch.get("shuffle_rule", "max"))
        except RuntimeError as error:  # the forward pass at the data's shape failed
            raise ArchError(f"{what} cannot run on {shape} images: {str(error).strip()[:300]}") from error
    told.extend(str(w.message) for w in caught or () if issubclass(w.category, UserWarning))
    return supernet
