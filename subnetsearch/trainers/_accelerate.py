"""Where training runs and in what precision: the device (CPU or a CUDA GPU), autocast to bf16 or
fp16 with a gradient scaler where fp16 needs one, and the channels-last memory format.

Weights always stay fp32 (autocast only lowers the matmuls and convolutions), and checkpoints are
written from CPU copies, so a checkpoint trained on a GPU loads on a CPU-only machine and back.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
from torch import nn

from subnetsearch.errors import SubnetsearchError

ACCELERATORS = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class AcceleratorError(SubnetsearchError, ValueError):
    """An accelerator or precision this machine cannot give; the message says what was asked and why."""


def cuda_status() -> str:
    """Why CUDA is or is not usable here, for messages."""
    built = torch.version.cuda or "none"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} CUDA device(s), first {torch.cuda.get_device_name(0)}"
    seen = f"; CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else ""
    return f"no CUDA device is visible (torch {torch.__version__}, built for CUDA {built}{seen})"


@dataclass(frozen=True)
class Accelerator:
    """A resolved training device: `device` (cpu, cuda or cuda:N), `precision` (fp32 | bf16 | fp16
    autocast) and `channels_last`. Build one with `Accelerator.resolve`."""

    device: torch.device = torch.device("cpu")
    precision: str = "fp32"
    channels_last: bool = False

    @classmethod
    def resolve(cls, name: str = "auto", precision: str = "fp32", channels_last: bool = False) -> Accelerator:
        """`auto`: the first CUDA GPU when there is one, else the CPU; `cuda` (or `cuda:N`) asked for
        on a machine without one is an AcceleratorError naming why, never a silent CPU run."""
        if precision not in PRECISIONS:
            raise AcceleratorError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        base = name.split(":", 1)[0]
        if base not in ACCELERATORS or (":" in name and base != "cuda"):
            raise AcceleratorError(f"accelerator must be one of {', '.join(ACCELERATORS)} (or cuda:N), got {name!r}")
        if base == "cuda" and not torch.cuda.is_available():
            raise AcceleratorError(f"--accelerator {name}: {cuda_status()}; use --accelerator cpu (or auto)")
        if base == "cuda" and ":" in name:
            index = name.split(":", 1)[1]
            if not index.isdigit() or int(index) >= torch.cuda.device_count():
                raise AcceleratorError(f"--accelerator {name}: there are {torch.cuda.device_count()} CUDA devices "
                                       "(cuda:0 ...)")
        use_cuda = base == "cuda" or (base == "auto" and torch.cuda.is_available())
        device = torch.device(name if ":" in name else "cuda") if use_cuda else torch.device("cpu")
        if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise AcceleratorError(f"bf16 is not supported by {torch.cuda.get_device_name(device)}; use fp16")
        return cls(device, precision, channels_last)

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype, None in fp32."""
        return _DTYPES.get(self.precision)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast to the precision's dtype on this device (a no-op in fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler:
        """A gradient scaler, enabled only for fp16 (bf16 has fp32's range and needs none)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def prepare(self, model: nn.Module) -> nn.Module:
        """Move `model` to the device (and layout); returns it."""
        return model.to(self.device).to(memory_format=self.memory_format)

    def batch(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch on the device: pinned and copied asynchronously to a GPU (unless it is there
        already: `Splits.batches(device=...)` transforms it there); in the memory format."""
        if self.device.type == "cuda" and images.device.type == "cpu":
            images, labels = images.pin_memory(), labels.pin_memory()
        images = images.to(self.device, non_blocking=True, memory_format=self.memory_format)
        return images, labels.to(self.device, non_blocking=True)

    def describe(self) -> str:
        where = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "CPU"
        layout = ", channels-last" if self.channels_last else ""
        return f"{self.device} ({where}), {self.precision}{layout}"


CPU = Accelerator()
