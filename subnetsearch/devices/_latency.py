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
import logging
import os
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from subnetsearch.devices.runtimes import Runnable, get_runtime
from subnetsearch.errors import InputError

# torch.utils.benchmark imports cpp_extension, which warns on every start that this CPU-only host
# has no CUDA runtime; that says nothing about the measurement.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
from torch.utils import benchmark  # noqa: E402

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
    runtime: str = "optimized"  # a name in subnetsearch.devices.runtimes
    batch_size: int = 1
    threads: int = 2
    warmup: int = 10
    repeats: int = 5
    min_run_time: float = 0.2  # seconds per blocked_autorange repeat
    channels_last: bool = False  # NHWC activations and weights (oneDNN's fast path for grouped convs)

    def __post_init__(self) -> None:
        get_runtime(self.runtime)  # an unknown name is refused, naming the known ones
        for name in ("batch_size", "threads", "repeats"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")


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
    bound_ms: float | None = None  # the device's roofline time for this mode (devices._roofline)
    # paired against the device's reference (devices._paired): the ratio, its interval, the graph's digest,
    # how many ratios and windows it rests on, where the figure came from; None: measured alone in its window
    paired: dict | None = None
    interval_ms: tuple[float, float] | None = None  # the paired interval times the reference's pooled median

    def to_dict(self) -> dict:
        extra: dict[str, object] = {} if self.measured else {"table": self.table}
        if self.realization is not None:
            extra["realization"] = self.realization
        if self.alternatives_ms is not None:
            extra["alternatives_ms"] = self.alternatives_ms
        if self.bound_ms is not None:
            extra["bound_ms"] = self.bound_ms
        if self.node is not None:
            extra["node"] = self.node
        if self.samples is not None:
            extra["samples"] = self.samples
        if self.paired is not None:
            extra["paired"] = self.paired
        if self.interval_ms is not None:
            extra["interval_ms"] = list(self.interval_ms)
        return {"ms": self.ms, "iqr_ms": self.iqr_ms, "medians_ms": list(self.medians_ms),
                "input_shape": list(self.input_shape), "measured": self.measured, **extra, **asdict(self.protocol)}


def example_input(shape: tuple[int, ...], protocol: LatencyProtocol) -> torch.Tensor:
    example = torch.randn(shape)
    if protocol.channels_last and get_runtime(protocol.runtime).torch_layout and example.dim() == 4:
        example = example.contiguous(memory_format=torch.channels_last)
    return example


def prepare_runtime(model: nn.Module, example: torch.Tensor, runtime: str, threads: int = 2,
                    channels_last: bool = False) -> Runnable:
    """The model as `runtime` runs it (see `subnetsearch.devices.runtimes`), for inputs shaped like
    `example`. `channels_last` converts a copy of the model for the PyTorch runtimes (the example
    must be converted by the caller: see `example_input`). A runtime whose extra is missing raises
    `RuntimeUnavailable` naming the `pip install` to run."""
    chosen = get_runtime(runtime)
    chosen.require()
    model = model.eval()
    if channels_last and chosen.torch_layout:
        model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    return chosen.prepare(model, example, threads)


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
