"""Hardware targets: the latency measurement protocol on this host."""

from subnetsearch.devices._latency import (
    Latency,
    LatencyProtocol,
    measure_latency,
    measurement_lock,
    prepare_runtime,
)

__all__ = ["Latency", "LatencyProtocol", "measure_latency", "measurement_lock", "prepare_runtime"]
