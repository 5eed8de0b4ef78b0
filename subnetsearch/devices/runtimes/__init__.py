"""Deployment runtimes: how a device executes (and a user deploys) a materialized mode.

One module per runtime, each registering a `Runtime` subclass: `eager` and `optimized` (TorchScript)
ship with PyTorch, `onnxruntime` with the base install, `openvino` and `executorch` (XNNPACK) are
optional extras (`pip install 'subnetsearch[openvino]'`, `[executorch]`). A runtime whose extra is
missing is still known (a device profile may name it, to be measured on a Ray node that has it); using
it here raises `RuntimeUnavailable` naming the `pip install` to run. A new runtime is one module here
with its import added below.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from subnetsearch.errors import ExportError, InputError, SubnetsearchError

Runnable = Callable[[torch.Tensor], torch.Tensor]


class RuntimeUnavailable(SubnetsearchError, RuntimeError):
    """A runtime that is known but cannot run here (its optional extra is not installed)."""


class Runtime(ABC):
    """How a device runs a static network. `prepare` turns a materialized mode into a callable on
    inputs shaped like `example` (batch included: runtimes that compile for static shapes compile for
    it); `save` gives the deployable files of the runtime's format (suffix -> bytes), or None where
    the runtime has no file format of its own. Their callers (`prepare_runtime`, `export_mode`) check
    `require()` first; `load` checks it itself."""

    name: ClassVar[str]
    summary: ClassVar[str]
    modules: ClassVar[tuple[str, ...]] = ()  # what it imports (all present = available)
    extra: ClassVar[str | None] = None  # the optional extra of subnetsearch that installs them
    torch_layout: ClassVar[bool] = False  # runs PyTorch tensors as they are (channels_last applies)
    format: ClassVar[str | None] = None  # its export format's name
    suffixes: ClassVar[tuple[str, ...]] = ()  # suffixes of its main file (`save` keys it by the first)
    companions: ClassVar[tuple[str, ...]] = ()  # suffixes of files written beside the main one
    # how channel shuffles that stay in a realized graph are computed on it (supernets.Realization.shuffle):
    # the cheaper form measured by benchmarks/shuffle_forms.py
    shuffle: ClassVar[str] = "reshape"

    def missing(self) -> str | None:
        """Why this runtime cannot run here (None: it can)."""
        absent = [module for module in self.modules if importlib.util.find_spec(module) is None]
        if not absent:
            return None
        install = f"pip install 'subnetsearch[{self.extra}]'" if self.extra else f"pip install {' '.join(absent)}"
        return f"runtime {self.name!r} needs {', '.join(absent)}, which is not installed here: run `{install}`"

    def require(self) -> None:
        reason = self.missing()
        if reason is not None:
            raise RuntimeUnavailable(reason)

    @abstractmethod
    def prepare(self, model: nn.Module, example: torch.Tensor, threads: int) -> Runnable: ...

    def save(self, model: nn.Module, example: torch.Tensor, metadata: dict[str, str]) -> dict[str, bytes] | None:
        return None

    def save_control_flow(self, model: nn.Module, examples: tuple[torch.Tensor, ...], defaults: dict[str, float],
                          metadata: dict[str, str]) -> dict[str, bytes]:
        """Like `save`, for a model with data-dependent control flow written with `torch.cond` (DDI's
        gated blocks): the runtime's files keep the branches. `examples`: its inputs (the first is the
        pixels; the others are named by `defaults`, with this mode's value of each, for the metadata)."""
        raise ExportError(f"{self.name} has no export of data-dependent control flow")

    def load(self, path: Path, threads: int = 1) -> Runnable:
        """Run a file `save` wrote (as a deployment would), for runtimes with a format."""
        raise NotImplementedError(f"runtime {self.name!r} has no file format")


_RUNTIMES: dict[str, Runtime] = {}


def register_runtime(runtime: type[Runtime]) -> type[Runtime]:
    """Class decorator: make a runtime known by its name."""
    if runtime.name in _RUNTIMES:
        raise InputError(f"runtime {runtime.name!r} is registered already")
    _RUNTIMES[runtime.name] = runtime()
    return runtime


def runtime_names() -> tuple[str, ...]:
    return tuple(_RUNTIMES)


def get_runtime(name: str) -> Runtime:
    try:
        return _RUNTIMES[name]
    except KeyError:
        raise InputError(f"runtime must be one of {runtime_names()}, got {name!r}") from None


def available_runtimes() -> tuple[str, ...]:
    """The runtimes that can run on this machine now."""
    return tuple(name for name, runtime in _RUNTIMES.items() if runtime.missing() is None)


def export_formats() -> dict[str, Runtime]:
    """Export format name -> the runtime that writes it."""
    return {runtime.format: runtime for runtime in _RUNTIMES.values() if runtime.format is not None}


# Registration order is the order users see them in.
from subnetsearch.devices.runtimes import _eager  # noqa: E402, F401, I001
from subnetsearch.devices.runtimes import _torchscript  # noqa: E402, F401
from subnetsearch.devices.runtimes import _onnxruntime  # noqa: E402, F401
from subnetsearch.devices.runtimes import _openvino  # noqa: E402, F401
from subnetsearch.devices.runtimes import _executorch  # noqa: E402, F401

RUNTIMES: tuple[str, ...] = runtime_names()
