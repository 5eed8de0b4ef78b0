"""The physical bound of a mode on a device (a roofline): per layer, the larger of its MACs at the
device's peak MAC rate and its memory traffic at the bandwidth of the memory level its working set
fits in, summed over layers.

Peak and bandwidths are measured once per device by `measure_roofline`, a calibrated
microbenchmark under the host's measurement lock: the peak is the best of large fp32 matrix
products (the densest kernel the host's BLAS has) and of dense convolutions of several shapes run by
the device's own runtime (its convolution kernels can beat torch's BLAS: MLAS and XNNPACK did on a
host here, and a peak below what the runtime reaches would make the bound no bound); each
bandwidth a copy of a buffer that fills a quarter of one memory level (the caches sysfs lists, then
main memory with a buffer far larger than them). A layer's traffic is the energy model's count
(weights once per batch, every input and output value once per input:
`subnetsearch.costs.layer_accesses`); its working set, those bytes, picks the level. The bound
assumes an ideal runtime: no per-operator overhead, element-wise ops (BN, ReLU, residual adds) fused
into the convolutions, every layer at peak or at bandwidth. A measured latency divided into it
(`bound_ms / ms`, "of bound") says how much of the machine a runtime uses; no runtime beats it.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from subnetsearch.costs import BYTES_PER_VALUE, LayerShape, layer_accesses, layer_cost
from subnetsearch.errors import InputError
from subnetsearch.seeding import seeded


@dataclass(frozen=True)
class Roofline:
    """A device's measured peak MAC rate (MAC/s) and the bandwidth (bytes/s) of each memory level:
    `levels` holds (capacity in bytes, bandwidth), smallest first, main memory last (capacity None)."""

    peak_macs_per_s: float
    levels: tuple[tuple[int | None, float], ...]
    threads: int
    how: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "levels", tuple((None if c is None else int(c), float(b)) for c, b in self.levels))
        if not self.peak_macs_per_s > 0:
            raise InputError(f"roofline peak_macs_per_s must be > 0, got {self.peak_macs_per_s}")
        if not self.levels or self.levels[-1][0] is not None or any(b <= 0 for _, b in self.levels):
            raise InputError(f"roofline levels must end with main memory (capacity None), bandwidths > 0: {self.levels}")

    @property
    def memory_bandwidth(self) -> float:
        return self.levels[-1][1]

    def bandwidth_for(self, working_set: int) -> float:
        for capacity, bandwidth in self.levels:
            if capacity is None or working_set <= capacity:
                return bandwidth
        raise AssertionError("the last level holds everything")

    def to_dict(self) -> dict:
        return {"peak_macs_per_s": self.peak_macs_per_s, "levels": [list(level) for level in self.levels],
                "threads": self.threads, "how": self.how}

    @classmethod
    def from_dict(cls, payload: Mapping | None) -> Roofline | None:
        if not payload:
            return None
        return cls(payload["peak_macs_per_s"], tuple(tuple(level) for level in payload["levels"]),
                   payload["threads"], payload.get("how", ""))

    def bound_ms(self, layers: Iterable[LayerShape], groups: Mapping[str, int], batch: int = 1) -> float:
        """The roofline time of one call at `batch` inputs (ms)."""
        total = 0.0
        for layer in layers:
            g = groups[layer.knob] if layer.knob else layer.fixed_groups
            macs = layer_cost(layer, g).macs * batch
            traffic = layer_accesses(layer, g, batch).dram * BYTES_PER_VALUE
            total += max(macs / self.peak_macs_per_s, traffic / self.bandwidth_for(traffic))
        return total * 1e3


def cache_sizes() -> list[tuple[int, int]]:
    """(bytes, CPUs sharing it) of this CPU's data and unified caches above L1, from sysfs (empty
    where it says nothing)."""
    found = []
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level = int((index / "level").read_text())
            kind = (index / "type").read_text().strip()
            text = (index / "size").read_text().strip().upper()
            shared = (index / "shared_cpu_list").read_text().strip()
        except (OSError, ValueError):
            continue
        if level < 2 or kind == "Instruction":
            continue
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        size = int(text.rstrip("KMG")) * scale
        cpus = sum(len(range(int(a), int(b) + 1)) if "-" in part else 1
                   for part in shared.split(",") for a, _, b in [part.partition("-")])
        found.append((size, max(cpus, 1)))
    return found


def _best_seconds(run, repeats: int, min_time: float) -> float:
    best = float("inf")
    for _ in range(repeats):
        calls, start = 0, time.perf_counter()
        while True:
            run()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                break
        best = min(best, elapsed / calls)
    return best


PEAK_CONVS = ((64, 56, 3), (256, 14, 3), (512, 7, 3), (32, 28, 3))
"""(channels in = out, height = width, kernel) of the dense convolutions (+ ReLU, batch 1) the peak is
measured with on the device's runtime: ResNet-like layers from wide to small (each was the best of some runtime here)."""


def _conv_peak(runtime: str, threads: int, repeats: int, min_time: float) -> float:
    """The best MAC rate of the `PEAK_CONVS` run by `runtime` (raises RuntimeUnavailable)."""
    from subnetsearch.devices.runtimes import get_runtime

    chosen = get_runtime(runtime)
    chosen.require()
    best = 0.0
    with seeded(0):
        for channels, size, kernel in PEAK_CONVS:
            conv = nn.Sequential(nn.Conv2d(channels, channels, kernel, padding=kernel // 2, bias=False), nn.ReLU()).eval()
            x = torch.randn(1, channels, size, size)
            with torch.no_grad():
                run = chosen.prepare(conv, x, threads)
                run(x)
                seconds = _best_seconds(functools.partial(run, x), repeats, min_time)
            best = max(best, channels * channels * kernel * kernel * size * size / seconds)
        return best


def measure_roofline(threads: int, runtime: str | None = None, repeats: int = 3, min_time: float = 0.1,
                     memory_mb: int = 256) -> Roofline:
    """Peak fp32 MAC rate (best of 512^3 and 1024^3 matrix products and, with `runtime`, of that
    runtime's dense convolutions `PEAK_CONVS`) and the copy bandwidth (read + write) of each cache
    level and of main memory (a `memory_mb` MB buffer), with `threads` threads."""
    from subnetsearch.devices._latency import measurement_lock

    previous = torch.get_num_threads()
    levels: list[tuple[int | None, float]] = []
    with measurement_lock():
        torch.set_num_threads(threads)
        try:
            matmul = 0.0
            for size in (512, 1024):
                a, b, out = torch.randn(size, size), torch.randn(size, size), torch.empty(size, size)
                torch.mm(a, b, out=out)
                matmul = max(matmul, size**3 / _best_seconds(functools.partial(torch.mm, a, b, out=out), repeats,
                                                             min_time))
            conv = 0.0 if runtime is None else _conv_peak(runtime, threads, repeats, min_time)
            for size, cpus in cache_sizes():
                capacity = size * threads if cpus == 1 else size  # one private cache per thread
                levels.append((capacity, _copy_bandwidth(capacity // 4, repeats, min_time)))
            levels.append((None, _copy_bandwidth(memory_mb * 2**20, repeats, min_time)))
        finally:
            torch.set_num_threads(previous)
    levels.sort(key=lambda level: float("inf") if level[0] is None else level[0])
    for index in range(len(levels) - 2, -1, -1):  # a smaller level is never slower than a larger one (a
        # small copy that reads slower is call overhead, not bandwidth)
        levels[index] = (levels[index][0], max(levels[index][1], levels[index + 1][1]))
    named = levels_text(levels)
    kernels = f"fp32 matmul {matmul / 1e9:.0f}" + ("" if runtime is None else f", {runtime} conv {conv / 1e9:.0f}")
    return Roofline(max(matmul, conv), tuple(levels), threads,
                    f"peak {max(matmul, conv) / 1e9:.0f} GMAC/s (best of {kernels}); copy bandwidth {named}; "
                    f"{threads} threads, best of {repeats}")


def levels_text(levels: Iterable[tuple[int | None, float]]) -> str:
    """Memory levels as `devices add` and the benchmarks print them: "4096 KB 90 GB/s, memory 15 GB/s"."""
    return ", ".join(f"{'memory' if c is None else f'{c // 1024} KB'} {b / 1e9:.0f} GB/s" for c, b in levels)


@functools.lru_cache(maxsize=8)
def host_roofline(threads: int, runtime: str | None = None) -> Roofline:
    """This host's roofline at `threads` threads (peak including `runtime`'s convolutions), measured
    once per process."""
    return measure_roofline(threads, runtime)


def _copy_bandwidth(nbytes: int, repeats: int, min_time: float) -> float:
    """Read + write bytes per second of copying a buffer of `nbytes` (half read, half written)."""
    source = torch.ones(max(nbytes // 2 // 4, 1024))
    target = torch.empty_like(source)
    target.copy_(source)
    return 2 * source.numel() * 4 / _best_seconds(lambda: target.copy_(source), repeats, min_time)
