"""Hardware targets: the latency measurement protocol on this host and its runtimes, and the
analytical energy model."""

from subnetsearch.costs import Accesses, EnergyCoefficients, energy_pj, layer_accesses, network_accesses
from subnetsearch.devices._compare import RuntimeTrial, both_realizations, compare_runtimes
from subnetsearch.devices._digest import KERNEL_OPTIONS, graph_digest
from subnetsearch.devices._figures import REFERENCE, PairedMeter, Reference, paired_latency, reference_for
from subnetsearch.devices._latency import (
    Latency,
    LatencyProtocol,
    compute_lock,
    measure_latencies,
    measure_latency,
    measurement_lock,
    prepare_runtime,
)
from subnetsearch.devices._lookup import LatencyPredictor, LatencyTable, all_layer_configs, build_table, conv_sites
from subnetsearch.devices._paired import (
    PAIRING,
    GraphBook,
    GraphSamples,
    MemoryBook,
    NoiseProfile,
    PairedWindow,
    Pairing,
    measure_noise,
    measure_paired,
    median_interval,
)
from subnetsearch.devices._profile import LOCATIONS, Device, DeviceError, default_host_device, host_description
from subnetsearch.devices._rapl import measure_energy_mj, rapl_domains
from subnetsearch.devices._roofline import Roofline, cache_sizes, host_roofline, measure_roofline
from subnetsearch.devices.runtimes import (
    RUNTIMES,
    Runtime,
    RuntimeUnavailable,
    available_runtimes,
    export_formats,
    get_runtime,
    register_runtime,
)
from subnetsearch.devices.runtimes._onnxruntime import OnnxRuntimeModel, export_onnx

__all__ = [
    "KERNEL_OPTIONS",
    "graph_digest",
    "REFERENCE",
    "PairedMeter",
    "Reference",
    "paired_latency",
    "reference_for",
    "PAIRING",
    "GraphBook",
    "GraphSamples",
    "MemoryBook",
    "NoiseProfile",
    "PairedWindow",
    "Pairing",
    "measure_noise",
    "measure_paired",
    "median_interval",
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
    "Roofline",
    "measure_roofline",
    "host_roofline",
    "cache_sizes",
    "RuntimeTrial",
    "compare_runtimes",
    "both_realizations",
    "Runtime",
    "RuntimeUnavailable",
    "available_runtimes",
    "export_formats",
    "get_runtime",
    "register_runtime",
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
