"""Paired latency measurement: every candidate timed interleaved with the device's reference network.

Why: on a shared host the time of the same network drifts by tens of per cent between windows a few
minutes apart (the shipped full network read 0.50-0.60 ms, its identical all-dense realization
0.50-0.86 ms, in six separate calls each). A figure taken alone in its own window is compared with
another taken in another window across that drift. Timed in alternation with the reference inside
one window, the candidate/reference ratio keeps its value whatever the host does slowly, and ratios
measured hours apart compare.

Protocol (recorded with every figure, `PAIRING`): the reference and the candidates are prepared on
the device's runtime and warmed up; then `rounds` rounds, each a block of the reference followed by a
block of every candidate (the candidates' order rotating per round), and one closing reference block.
A block is `calls` consecutive calls (as many as fill `block_s` seconds), each timed alone; its
figure is its fastest call (the computation is the same every call: the host's noise only adds time,
and on this shared host it comes in bursts shorter than a block. Measured on two sessions of the same
graph, 8 fresh pairs: the median of block-minimum ratios spread 1.017 max/min, of block-median ratios
1.168). A candidate's ratio in round r is its block over the geometric mean of
the reference blocks around it (r and r+1). The stored figure is the median of all ratios measured
for that graph on that device (measuring again adds ratios), with its distribution-free
order-statistic interval; the latency in ms is that ratio times the reference's pooled median (the
median of every reference block measured on the device, in every window).
"""

from __future__ import annotations

import math
import statistics
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from subnetsearch.devices._latency import LatencyProtocol, example_input, measurement_lock, prepare_runtime
from subnetsearch.errors import InputError


@dataclass(frozen=True)
class Pairing:
    """How a paired window is measured (see the module docstring)."""

    rounds: int = 15
    block_s: float = 0.02  # seconds of calls per block
    confidence: float = 0.95  # of the intervals reported
    enough: int = 1  # windows a graph needs before its figure is reused without measuring it again

    def __post_init__(self) -> None:
        if self.rounds < 2:
            raise InputError(f"rounds must be >= 2, got {self.rounds}")
        if not self.block_s > 0:
            raise InputError(f"block_s must be positive, got {self.block_s}")
        if not 0.5 <= self.confidence < 1:
            raise InputError(f"confidence must be in [0.5, 1), got {self.confidence}")

    def to_dict(self) -> dict:
        return asdict(self)


PAIRING = Pairing()


# ---- interval maths (pure) ----

def median_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float, float]:
    """(median, low, high, achieved confidence): the distribution-free interval for the median from
    order statistics, [x(k), x(n-k+1)] with the largest k whose binomial(n, 1/2) tail is at most
    (1 - confidence) / 2. With too few values for the confidence asked, the whole range and the
    confidence it really has."""
    ordered = sorted(float(v) for v in values)
    n = len(ordered)
    if n == 0:
        raise InputError("no values to take a median of")
    alpha = (1 - confidence) / 2
    cumulative, k = 0.0, 0
    for j in range(n // 2 + 1):  # P(X <= j) for X ~ Bin(n, 1/2)
        cumulative += math.comb(n, j) / 2 ** n
        if cumulative > alpha:
            break
        k = j + 1  # the interval [x(k), x(n-k+1)] (1-based) excludes at most P(X <= k-1) per side
    k = max(k, 1)
    tail = sum(math.comb(n, j) for j in range(k)) / 2 ** n
    return statistics.median(ordered), ordered[k - 1], ordered[n - k], 1 - 2 * tail


@dataclass(frozen=True)
class PairedWindow:
    """One candidate's samples from one window."""

    ratios: tuple[float, ...]  # candidate block / geometric mean of the reference blocks around it
    candidate_ms: tuple[float, ...]  # the candidate's block figures (fastest call of each block)
    reference_ms: tuple[float, ...]  # the reference's block figures in the same window
    node: str | None = None  # the Ray node that measured it (distributed searches)


@dataclass(frozen=True)
class GraphSamples:
    """Every ratio measured for one graph against one reference on one device, window by window.

    Windows, not ratios, are the independent samples: the ratios of one window share the host's state
    of that moment, and on this host the ratio itself moves with it (a grouped graph against the dense
    reference, the same two sessions, window after window: 1.16-1.65; an identical graph: 0.96-1.03).
    So the figure is the median of the windows' medians, and its interval is over the windows'
    medians (order statistics, with the confidence that many windows really give). A graph measured
    in one window has the interval of its ratios widened by the device's between-window spread
    (`NoiseProfile.between`, 1 where unknown)."""

    per_window: tuple[tuple[float, ...], ...]

    @property
    def windows(self) -> int:
        return len(self.per_window)

    @property
    def ratios(self) -> tuple[float, ...]:
        return tuple(ratio for window in self.per_window for ratio in window)

    @property
    def window_medians(self) -> tuple[float, ...]:
        return tuple(statistics.median(window) for window in self.per_window)

    def figure(self, confidence: float = PAIRING.confidence, between: float = 1.0) -> tuple[float, float, float, float]:
        """(ratio, low, high, achieved confidence)."""
        if self.windows == 1:
            ratio, low, high, achieved = median_interval(self.per_window[0], confidence)
            return ratio, min(low, ratio / between), max(high, ratio * between), achieved
        _, low, high, achieved = median_interval(self.window_medians, confidence)
        return statistics.median(self.window_medians), low, high, achieved


class GraphBook(ABC):
    """The latency figures of one device, protocol and reference, per realized graph (digest).

    `add` appends a window's ratios to a graph's and the window's reference blocks to the reference's
    pool; nothing is replaced. Implementations: `MemoryBook` (one process), the store's book
    (`Store.graph_book`: shared by every process and search that uses the same store)."""

    @abstractmethod
    def get(self, digest: str) -> GraphSamples | None: ...

    @abstractmethod
    def add(self, digest: str, window: PairedWindow) -> GraphSamples: ...

    @abstractmethod
    def reference_ms(self) -> tuple[float, ...]: ...

    def pooled_reference_ms(self) -> float | None:
        pool = self.reference_ms()
        return statistics.median(pool) if pool else None


@dataclass
class MemoryBook(GraphBook):
    graphs: dict[str, GraphSamples] = field(default_factory=dict)
    pool: list[float] = field(default_factory=list)

    def get(self, digest: str) -> GraphSamples | None:
        return self.graphs.get(digest)

    def add(self, digest: str, window: PairedWindow) -> GraphSamples:
        old = self.graphs.get(digest, GraphSamples(()))
        self.graphs[digest] = GraphSamples((*old.per_window, window.ratios))
        self.pool.extend(window.reference_ms)
        return self.graphs[digest]

    def reference_ms(self) -> tuple[float, ...]:
        return tuple(self.pool)


# ---- measurement ----

Timed = Callable[[torch.Tensor], object]


def _block(runnable: Timed, example: torch.Tensor, calls: int) -> float:
    """The fastest of `calls` consecutive calls, each timed alone (ms)."""
    times = []
    with torch.no_grad():
        for _ in range(calls):
            start = time.perf_counter_ns()
            runnable(example)
            times.append(time.perf_counter_ns() - start)
    return min(times) / 1e6


def _calls_per_block(runnable: Timed, example: torch.Tensor, block_s: float) -> int:
    """How many calls of `runnable` fill `block_s`, from the median of 9 timed calls (a mean of a few
    was thrown 5x off by one slow call on this host)."""
    per_call = max(_block_times(runnable, example, 9)[4], 1e-6)
    return max(3, min(2000, round(block_s / per_call)))


def _block_times(runnable: Timed, example: torch.Tensor, calls: int) -> list[float]:
    times = []
    with torch.no_grad():
        for _ in range(calls):
            start = time.perf_counter_ns()
            runnable(example)
            times.append((time.perf_counter_ns() - start) / 1e9)
    return sorted(times)


def paired_rounds(reference: Timed, candidates: Mapping[str, Timed], example: torch.Tensor,
                  pairing: Pairing = PAIRING) -> dict[str, PairedWindow]:
    """The alternation of the module docstring on prepared callables (warmed up by the caller)."""
    names = list(candidates)
    # one call count for every block of the window: the minimum of more calls is lower, so blocks of
    # different lengths would bias the ratio (seen: 0.79 for two sessions of the same graph)
    reference_calls = _calls_per_block(reference, example, pairing.block_s)
    calls = dict.fromkeys(names, reference_calls)
    reference_blocks: list[float] = []
    blocks: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(pairing.rounds):
        reference_blocks.append(_block(reference, example, reference_calls))
        shift = round_index % max(len(names), 1)
        for name in names[shift:] + names[:shift]:
            blocks[name].append(_block(candidates[name], example, calls[name]))
    reference_blocks.append(_block(reference, example, reference_calls))
    around = [math.sqrt(a * b) for a, b in zip(reference_blocks, reference_blocks[1:], strict=False)]
    return {name: PairedWindow(tuple(c / r for c, r in zip(blocks[name], around, strict=True)),
                               tuple(blocks[name]), tuple(reference_blocks)) for name in names}


def measure_paired(candidates: Mapping[str, nn.Module], reference: nn.Module, input_shape: tuple[int, ...],
                   protocol: LatencyProtocol, pairing: Pairing = PAIRING) -> dict[str, PairedWindow]:
    """One paired window on this host: the static `candidates` interleaved with the static `reference`
    on the protocol's runtime, threads and batch, holding the host's measurement lock."""
    example = example_input((protocol.batch_size, *input_shape), protocol)
    previous_threads = torch.get_num_threads()
    with measurement_lock():
        torch.set_num_threads(protocol.threads)
        try:
            prepared = {name: prepare_runtime(model, example, protocol.runtime, protocol.threads, protocol.channels_last)
                        for name, model in {"__reference__": reference, **candidates}.items()}
            with torch.no_grad():
                for run in prepared.values():
                    for _ in range(protocol.warmup):
                        run(example)
            runs = dict(prepared)
            reference_run = runs.pop("__reference__")
            return paired_rounds(reference_run, runs, example, pairing)
        finally:
            torch.set_num_threads(previous_threads)


@dataclass(frozen=True)
class NoiseProfile:
    """A device's repeatability, measured in `windows` separate windows, each pairing the reference
    against a second copy of itself (an identical graph: its true ratio is 1) and, where given,
    against another graph (a mode of the supernet with grouped layers: its true ratio is unknown but
    fixed).

    `unpaired_spread`: max/min of the windows' own reference medians (what a figure taken alone in
    its window scatters by); `paired_error`: the largest |ratio - 1| of the copy's window medians
    (drift that pairing leaves); `halfwidth`: the median relative half-width of one window's interval;
    `between`: sqrt(max/min) of the other graph's window medians, the factor by which a graph's ratio
    itself moves between windows (the host's state changes kernels of different kinds differently:
    pairing cannot cancel that, only more windows average it). `resolution`: the smallest relative
    difference a figure from one window separates."""

    windows: int
    reference_ms: tuple[float, ...]
    ratios: tuple[float, ...]
    halfwidths: tuple[float, ...]
    reference_digest: str
    other_ratios: tuple[float, ...] = ()  # the other graph's window medians (empty: none was measured)

    @property
    def unpaired_spread(self) -> float:
        return max(self.reference_ms) / min(self.reference_ms)

    @property
    def paired_error(self) -> float:
        return max(abs(ratio - 1) for ratio in self.ratios)

    @property
    def halfwidth(self) -> float:
        return statistics.median(self.halfwidths)

    @property
    def between(self) -> float:
        return math.sqrt(max(self.other_ratios) / min(self.other_ratios)) if len(self.other_ratios) > 1 else 1.0

    @property
    def resolution(self) -> float:
        """The smallest relative latency difference a one-window paired figure separates here."""
        return max(self.paired_error, self.halfwidth, self.between - 1)

    def to_dict(self) -> dict:
        return {"windows": self.windows, "reference_ms": list(self.reference_ms), "ratios": list(self.ratios),
                "halfwidths": list(self.halfwidths), "reference_digest": self.reference_digest,
                "other_ratios": list(self.other_ratios), "unpaired_spread": self.unpaired_spread,
                "paired_error": self.paired_error, "between": self.between, "resolution": self.resolution}

    @classmethod
    def from_dict(cls, payload: dict | None) -> NoiseProfile | None:
        if not payload:
            return None
        return cls(int(payload["windows"]), tuple(payload["reference_ms"]), tuple(payload["ratios"]),
                   tuple(payload["halfwidths"]), str(payload["reference_digest"]),
                   tuple(payload.get("other_ratios", ())))

    def describe(self) -> str:
        other = ("" if len(self.other_ratios) < 2 else
                 f"; a grouped graph's ratio moved between windows by x{self.between:.3f} either way")
        return (f"{self.windows} windows: reference {min(self.reference_ms):.3f}-{max(self.reference_ms):.3f} ms "
                f"unpaired (max/min {self.unpaired_spread:.2f}); paired against itself off by at most "
                f"{self.paired_error * 100:.1f} %, interval +-{self.halfwidth * 100:.1f} %{other}: "
                f"resolution {self.resolution * 100:.1f} %")


def measure_noise(reference: nn.Module, input_shape: tuple[int, ...], protocol: LatencyProtocol, digest: str,
                  windows: int = 5, pairing: Pairing = PAIRING, pause_s: float = 0.5,
                  other: nn.Module | None = None) -> NoiseProfile:
    """The device's `NoiseProfile`: `windows` separate paired windows, `pause_s` apart, of the reference
    against a copy of itself (and against `other`, another graph, if given)."""
    if windows < 2:
        raise InputError(f"a noise profile needs at least 2 windows, got {windows}")
    medians, ratios, halfwidths, others = [], [], [], []
    candidates = {"copy": reference, **({"other": other} if other is not None else {})}
    for index in range(windows):
        if index:
            time.sleep(pause_s)
        measured = measure_paired(candidates, reference, input_shape, protocol, pairing)
        ratio, low, high, _ = median_interval(measured["copy"].ratios, pairing.confidence)
        medians.append(statistics.median(measured["copy"].reference_ms))
        ratios.append(ratio)
        halfwidths.append((high - low) / 2 / ratio)
        if other is not None:
            others.append(statistics.median(measured["other"].ratios))
    return NoiseProfile(windows, tuple(medians), tuple(ratios), tuple(halfwidths), digest, tuple(others))
