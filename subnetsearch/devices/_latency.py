"""Latency measurement protocol for materialized modes on this host.

Protocol (recorded with every figure): eval mode, inference only (no autograd), explicit thread
count, warm-up runs, then `torch.utils.benchmark` timing: each repeat is a `blocked_autorange`
(median over timed blocks, with its inter-quartile range); the reported figure is the minimum of
the repeats' medians (a stable-process rule: the least-disturbed repeat wins). A host-wide lock
serializes measurements: two at once on 2 cores corrupt each other. Evaluation work that runs beside
measurements (other search workers on the same host) takes the same lock shared (`compute_lock`): it
waits while a measurement runs, and a waiting measurement goes before new work starts.
"""

from __future__ import annotations

import copy
import fcntl
import io
import logging
import os
import tempfile
import threading
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

# torch.utils.benchmark imports cpp_extension, which warns on every start that this CPU-only host
# has no CUDA runtime; that says nothing about the measurement.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
from torch.utils import benchmark  # noqa: E402

Runtime = Literal["eager", "optimized", "onnxruntime"]
RUNTIMES: tuple[str, ...] = ("eager", "optimized", "onnxruntime")
_PROCESS_LOCK = threading.Lock()
LOCK_PATH = Path(os.environ.get("SUBNETSEARCH_LATENCY_LOCK", Path(tempfile.gettempdir()) / "subnetsearch-latency.lock"))


@contextmanager
def _flock(path: Path, mode: int) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, mode)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _turnstile() -> Path:
    return LOCK_PATH.with_name(LOCK_PATH.name + ".turnstile")


@contextmanager
def measurement_lock() -> Iterator[None]:
    """Exclusive on this host: a thread lock within the process, flocks across processes. Holding
    the turnstile while waiting keeps new `compute_lock` holders out, so a measurement is never
    starved by a stream of evaluations."""
    with _PROCESS_LOCK, _flock(_turnstile(), fcntl.LOCK_EX), _flock(LOCK_PATH, fcntl.LOCK_EX):
        yield


@contextmanager
def compute_lock() -> Iterator[None]:
    """Shared on this host: computation that must not overlap a latency measurement (it would
    corrupt the timing). Many holders at once; never take `measurement_lock` while holding it."""
    with _flock(_turnstile(), fcntl.LOCK_EX):
        pass
    with _flock(LOCK_PATH, fcntl.LOCK_SH):
        yield


@dataclass(frozen=True)
class LatencyProtocol:
    runtime: Runtime = "optimized"
    batch_size: int = 1
    threads: int = 2
    warmup: int = 10
    repeats: int = 5
    min_run_time: float = 0.2  # seconds per blocked_autorange repeat
    channels_last: bool = False  # NHWC activations and weights (oneDNN's fast path for grouped convs)

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {self.runtime!r}")
        for name in ("batch_size", "threads", "repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class Latency:
    """One latency figure, with how it was obtained (measured end to end, or predicted)."""

    ms: float  # min over repeats of the median
    iqr_ms: float  # inter-quartile range of the repeat that gave `ms`
    medians_ms: tuple[float, ...]
    protocol: LatencyProtocol
    input_shape: tuple[int, ...]
    measured: bool = True  # False: predicted by a lookup table measured with `protocol`
    table: str | None = None  # the digest of that table
    node: str | None = None  # the Ray node that measured it (distributed searches)
    samples: int | None = None  # per-sample latency: one call ran these real samples one by one, divided
    realization: dict | None = None  # which grouped layers ran as dense equivalents (Realization.to_dict)
    alternatives_ms: dict[str, float] | None = None  # the other realizations measured for this mode

    def to_dict(self) -> dict:
        extra: dict[str, object] = {} if self.measured else {"table": self.table}
        if self.realization is not None:
            extra["realization"] = self.realization
        if self.alternatives_ms is not None:
            extra["alternatives_ms"] = self.alternatives_ms
        if self.node is not None:
            extra["node"] = self.node
        if self.samples is not None:
            extra["samples"] = self.samples
        return {"ms": self.ms, "iqr_ms": self.iqr_ms, "medians_ms": list(self.medians_ms),
                "input_shape": list(self.input_shape), "measured": self.measured, **extra, **asdict(self.protocol)}


class OnnxRuntimeModel:
    """A materialized mode exported to ONNX and run by ONNX Runtime's CPU provider."""

    def __init__(self, model: nn.Module, example: torch.Tensor, threads: int) -> None:
        import onnxruntime

        self.onnx_bytes = export_onnx(model, example)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = onnxruntime.InferenceSession(self.onnx_bytes, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {self.input_name: x.numpy()})[0])


def export_onnx(model: nn.Module, example: torch.Tensor) -> bytes:
    """ONNX bytes of a static model. The TorchScript-based exporter takes ~1 s where the dynamo one
    takes ~8 s for ResNet-50; both give the same graph here, so the fast one is used."""
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model.eval(), (example,), buffer, dynamo=False, opset_version=17,  # type: ignore[arg-type]
                              input_names=["input"], output_names=["logits"])
    except Exception as error:  # the exporter raises many kinds
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise RuntimeError(f"ONNX export of the materialized mode failed ({type(error).__name__}): {first_line}") from error
    return buffer.getvalue()


def example_input(shape: tuple[int, ...], protocol: LatencyProtocol) -> torch.Tensor:
    example = torch.randn(shape)
    if protocol.channels_last and protocol.runtime != "onnxruntime" and example.dim() == 4:
        example = example.contiguous(memory_format=torch.channels_last)
    return example


def prepare_runtime(model: nn.Module, example: torch.Tensor, runtime: Runtime, threads: int = 2,
                    channels_last: bool = False):
    """`eager`: the module as is. `optimized`: TorchScript trace, `torch.jit.freeze` and
    `optimize_for_inference` (BN folding, oneDNN weight prepacking). `onnxruntime`: ONNX export run
    by ONNX Runtime with all graph optimizations. `channels_last` converts a copy of the model (the
    example must be converted by the caller: see `example_input`)."""
    model = model.eval()
    if channels_last and runtime != "onnxruntime":
        model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    if runtime == "eager":
        return model
    if runtime == "onnxruntime":
        return OnnxRuntimeModel(model, example, threads)
    # TorchScript is deprecated in favour of torch.compile, but it is still the runtime that folds
    # BN and prepacks oneDNN weights without a compile step per mode; the warnings are expected.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(model, example)
        return torch.jit.optimize_for_inference(torch.jit.freeze(traced))


def measure_latencies(models: Mapping[str, nn.Module], input_shape: tuple[int, ...],
                      protocol: LatencyProtocol = LatencyProtocol(),
                      examples: torch.Tensor | None = None) -> dict[str, Latency]:
    """Measure several materialized modes in one run, repeats interleaved (model A, B, C, A, B, C,
    ...), so that slow drift of the host hits all of them alike and their ratios are fair. With
    `examples` (real inputs, for models whose work depends on them), each call runs them all and the
    figures are per sample."""
    previous_threads = torch.get_num_threads()
    shape = (protocol.batch_size, *input_shape) if examples is None else tuple(examples.shape)
    example = example_input(shape, protocol) if examples is None else examples
    runs: dict[str, list] = {name: [] for name in models}
    with measurement_lock():
        torch.set_num_threads(protocol.threads)
        try:
            timers = {}
            for name, model in models.items():
                runnable = prepare_runtime(model, example, protocol.runtime, protocol.threads, protocol.channels_last)
                with torch.no_grad():
                    for _ in range(protocol.warmup):
                        runnable(example)
                timers[name] = benchmark.Timer("with torch.no_grad(): model(x)", num_threads=protocol.threads,
                                               label=name, globals={"model": runnable, "x": example, "torch": torch})
            for _ in range(protocol.repeats):
                for name, timer in timers.items():
                    runs[name].append(timer.blocked_autorange(min_run_time=protocol.min_run_time))
        finally:
            torch.set_num_threads(previous_threads)
    result = {}
    per = 1 if examples is None else examples.shape[0]
    for name, measurements in runs.items():
        best = min(measurements, key=lambda m: m.median)
        result[name] = Latency(best.median * 1e3 / per, best.iqr * 1e3 / per,
                               tuple(m.median * 1e3 / per for m in measurements), protocol, shape,
                               samples=None if examples is None else per)
    return result


def measure_latency(model: nn.Module, input_shape: tuple[int, ...], protocol: LatencyProtocol = LatencyProtocol(),
                    label: str = "model", examples: torch.Tensor | None = None) -> Latency:
    """Measure one materialized mode on inputs of (batch, *input_shape), or per sample on `examples`."""
    return measure_latencies({label: model}, input_shape, protocol, examples)[label]
