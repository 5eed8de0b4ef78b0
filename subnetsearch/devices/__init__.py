"""Hardware targets: the latency measurement protocol on this host and its runtimes."""

from subnetsearch.devices._latency import (
    RUNTIMES,
    Latency,
    LatencyProtocol,
    OnnxRuntimeModel,
    export_onnx,
    measure_latencies,
    measure_latency,
    measurement_lock,
    prepare_runtime,
)

__all__ = [
    "RUNTIMES",
    "Latency",
    "LatencyProtocol",
    "OnnxRuntimeModel",
    "export_onnx",
    "measure_latencies",
    "measure_latency",
    "measurement_lock",
    "prepare_runtime",
]
