"""Which runtime runs a supernet's modes fastest on this host: `devices add --runtime auto`.

Each installed runtime measures the same modes (both realizations of each: grouped kernels and
dense equivalents; the faster counts, as in a search) in a process of its own, one after another:
runtimes that share a process can crash it (ExecuTorch beside ONNX Runtime and OpenVINO sessions did
here), and a crash or failure then costs that runtime only. The runtime with the smallest geometric
mean latency over the modes wins.
"""

from __future__ import annotations

import concurrent.futures
import math
import multiprocessing
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from torch import nn

from subnetsearch.devices._latency import LatencyProtocol, measure_latencies
from subnetsearch.devices.runtimes import available_runtimes
from subnetsearch.errors import InputError
from subnetsearch.spaces import Mode
from subnetsearch.supernets import PLAIN, BaseSupernet, Realization, load_checkpoint


@dataclass
class RuntimeTrial:
    runtime: str
    latencies_ms: dict[str, float] = field(default_factory=dict)  # mode -> the faster realization's ms
    kernels: dict[str, str] = field(default_factory=dict)  # mode -> grouped | dense
    error: str | None = None

    @property
    def score_ms(self) -> float:
        """Geometric mean latency over the modes (inf if it failed)."""
        if self.error or not self.latencies_ms:
            return math.inf
        return math.exp(sum(math.log(ms) for ms in self.latencies_ms.values()) / len(self.latencies_ms))


def both_realizations(supernet: BaseSupernet, modes: Mapping[str, Mode]) -> dict[str, nn.Module]:
    """`<name>|grouped` for every mode, and `<name>|dense` (its grouped layers as dense equivalents)
    for every mode that has grouped layers: what one interleaved measurement times."""
    models = {}
    for name, mode in modes.items():
        models[f"{name}|grouped"] = supernet.realize(mode, PLAIN)
        if grouped := supernet.grouped_layers(mode):
            models[f"{name}|dense"] = supernet.realize(mode, Realization(tuple(grouped)))
    return models


def _measure_modes(checkpoint: str, names: Sequence[str], protocol: dict) -> dict[str, float]:
    """In the child process: every mode's grouped and (where it has grouped layers) dense realization."""
    supernet = load_checkpoint(Path(checkpoint)).build()
    modes = {}
    for name in names:
        mode = supernet.mode_named(name)
        if mode is None:
            raise InputError(f"the supernet names no mode {name!r}")
        modes[name] = mode
    measured = measure_latencies(both_realizations(supernet, modes), supernet.input_shape, LatencyProtocol(**protocol))
    return {label: latency.ms for label, latency in measured.items()}


def compare_runtimes(checkpoint: Path, modes: Sequence[str], protocol: LatencyProtocol,
                     runtimes: Sequence[str] | None = None, timeout_s: float = 900.0) -> list[RuntimeTrial]:
    """Measure `modes` (names the supernet knows: full, smallest, uniform:G, ...) under `protocol` on
    each of `runtimes` (default: every runtime installed here), one child process per runtime, each
    given `timeout_s`. Trials come back in the order measured; failed ones carry their error."""
    trials = []
    context = multiprocessing.get_context("spawn")
    for runtime in runtimes if runtimes is not None else available_runtimes():
        trial = RuntimeTrial(runtime)
        settings = asdict(replace(protocol, runtime=runtime))
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
            future = pool.submit(_measure_modes, str(checkpoint), list(modes), settings)
            try:
                measured = future.result(timeout=timeout_s)
            except concurrent.futures.TimeoutError:
                for process in list(getattr(pool, "_processes", {}).values()):
                    process.kill()
                trial.error = f"no result within {timeout_s:.0f} s"
                measured = None
            except concurrent.futures.process.BrokenProcessPool:
                trial.error = "its measuring process crashed"
                measured = None
            except Exception as error:  # the runtime's export or execution failed
                trial.error = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
                measured = None
        if measured is not None:
            for name in modes:
                options = {kind: measured[f"{name}|{kind}"] for kind in ("grouped", "dense") if f"{name}|{kind}" in measured}
                kind = min(options, key=options.__getitem__)
                trial.latencies_ms[name], trial.kernels[name] = options[kind], kind
        trials.append(trial)
    return trials
