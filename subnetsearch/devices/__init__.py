"""Hardware targets: the latency measurement protocol on this host and its runtimes, and the
analytical energy model."""

from subnetsearch.devices._energy import Accesses, EnergyCoefficients, energy_pj, layer_accesses, network_accesses
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
    "Accesses",
    "EnergyCoefficients",
    "energy_pj",
    "layer_accesses",
    "network_accesses",
    "Latency",
    "LatencyProtocol",
    "OnnxRuntimeModel",
    "export_onnx",
    "measure_latencies",
    "measure_latency",
    "measurement_lock",
    "prepare_runtime",
]
