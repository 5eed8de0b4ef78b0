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
from subnetsearch.devices._profile import LOCATIONS, Device, DeviceError, default_host_device, host_description

__all__ = [
    "LOCATIONS",
    "RUNTIMES",
    "Device",
    "DeviceError",
    "default_host_device",
    "host_description",
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
