"""Latency measurement protocol for materialized modes on this host.

Protocol (recorded with every figure): eval mode, inference only (no autograd), explicit thread
count, warm-up runs, then `torch.utils.benchmark` timing: each repeat is a `blocked_autorange`
(median over timed blocks, with its inter-quartile range); the reported figure is the minimum of
the repeats' medians (a stable-process rule: the least-disturbed repeat wins). A host-wide lock
serializes measurements: two at once on 2 cores corrupt each other.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from torch.utils import benchmark

Runtime = Literal["eager", "optimized"]
_PROCESS_LOCK = threading.Lock()
LOCK_PATH = Path(os.environ.get("SUBNETSEARCH_LATENCY_LOCK", Path(tempfile.gettempdir()) / "subnetsearch-latency.lock"))


@contextmanager
def measurement_lock() -> Iterator[None]:
    """Exclusive on this host: a thread lock within the process, an flock across processes."""
    with _PROCESS_LOCK:
        LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
        with open(LOCK_PATH, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True)
class LatencyProtocol:
    runtime: Runtime = "optimized"
    batch_size: int = 1
    threads: int = 2
    warmup: int = 10
    repeats: int = 5
    min_run_time: float = 0.2  # seconds per blocked_autorange repeat

    def __post_init__(self) -> None:
        if self.runtime not in ("eager", "optimized"):
            raise ValueError(f"runtime must be 'eager' or 'optimized', got {self.runtime!r}")
        for name in ("batch_size", "threads", "repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class Latency:
    """One measured latency, with how it was measured."""

    ms: float  # min over repeats of the median
    iqr_ms: float  # inter-quartile range of the repeat that gave `ms`
    medians_ms: tuple[float, ...]
    protocol: LatencyProtocol
    input_shape: tuple[int, ...]

    def to_dict(self) -> dict:
        return {"ms": self.ms, "iqr_ms": self.iqr_ms, "medians_ms": list(self.medians_ms),
                "input_shape": list(self.input_shape), "measured": True, **asdict(self.protocol)}


def prepare_runtime(model: nn.Module, example: torch.Tensor, runtime: Runtime) -> nn.Module:
    """`eager`: the module as is. `optimized`: TorchScript trace, `torch.jit.freeze` and
    `optimize_for_inference` (BN folding, oneDNN weight prepacking)."""
    model = model.eval()
    if runtime == "eager":
        return model
    # TorchScript is deprecated in favour of torch.compile, but it is still the runtime that folds
    # BN and prepacks oneDNN weights without a compile step per mode; the warnings are expected.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(model, example)
        return torch.jit.optimize_for_inference(torch.jit.freeze(traced))


def measure_latency(model: nn.Module, input_shape: tuple[int, ...], protocol: LatencyProtocol = LatencyProtocol(),
                    label: str = "") -> Latency:
    """Measure `model` (a materialized mode) on inputs of (batch, *input_shape)."""
    previous_threads = torch.get_num_threads()
    shape = (protocol.batch_size, *input_shape)
    example = torch.randn(shape)
    with measurement_lock():
        torch.set_num_threads(protocol.threads)
        try:
            runnable = prepare_runtime(model, example, protocol.runtime)
            with torch.no_grad():
                for _ in range(protocol.warmup):
                    runnable(example)
            timer = benchmark.Timer("with torch.no_grad(): model(x)", num_threads=protocol.threads, label=label,
                                    globals={"model": runnable, "x": example, "torch": torch})
            runs = [timer.blocked_autorange(min_run_time=protocol.min_run_time) for _ in range(protocol.repeats)]
        finally:
            torch.set_num_threads(previous_threads)
    best = min(runs, key=lambda m: m.median)
    return Latency(best.median * 1e3, best.iqr * 1e3, tuple(m.median * 1e3 for m in runs), protocol, shape)
