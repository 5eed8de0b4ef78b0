"""Hardware targets: the latency measurement protocol on this host and its runtimes, and the
analytical energy model."""

from subnetsearch.costs import Accesses, EnergyCoefficients, energy_pj, layer_accesses, network_accesses
from subnetsearch.devices._latency import (
    RUNTIMES,
    Latency,
    LatencyProtocol,
    OnnxRuntimeModel,
    compute_lock,
    export_onnx,
    measure_latencies,
    measure_latency,
    measurement_lock,
    prepare_runtime,
)
from subnetsearch.devices._lookup import LatencyPredictor, LatencyTable, all_layer_configs, build_table, conv_sites
from subnetsearch.devices._profile import LOCATIONS, Device, DeviceError, default_host_device, host_description
from subnetsearch.devices._rapl import measure_energy_mj, rapl_domains

__all__ = [
    "compute_lock",
    "LatencyPredictor",
    "LatencyTable",
    "all_layer_configs",
    "build_table",
    "conv_sites",
    "measure_energy_mj",
    "rapl_domains",
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
