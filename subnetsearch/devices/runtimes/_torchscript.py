"""`optimized`: TorchScript trace, `torch.jit.freeze` and `optimize_for_inference` (BN folding,
oneDNN weight prepacking). Deprecated upstream in favour of torch.compile, but still the runtime that
folds BN and prepacks weights without a compile step per mode; its warnings are expected."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch
from torch import nn

from subnetsearch.devices.runtimes import Runnable, Runtime, register_runtime


@register_runtime
class TorchScript(Runtime):
    name = "optimized"
    summary = "TorchScript, frozen and optimized for inference"
    torch_layout = True
    format = "torchscript"
    suffixes = (".pt", ".ts")

    def prepare(self, model: nn.Module, example: torch.Tensor, threads: int) -> Runnable:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            traced = torch.jit.trace(model.eval(), example)
            return torch.jit.optimize_for_inference(torch.jit.freeze(traced))

    def save(self, model: nn.Module, example: torch.Tensor, metadata: dict[str, str]) -> dict[str, bytes]:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            traced = torch.jit.freeze(torch.jit.trace(model.eval(), example))
        buffer = io.BytesIO()
        extra = {f"{key}.json" if key.endswith("preprocessing") else key: value for key, value in metadata.items()}
        torch.jit.save(traced, buffer, _extra_files=extra)
        return {".pt": buffer.getvalue()}

    def load(self, path: Path, threads: int = 1) -> Runnable:
        return torch.jit.load(str(path))
