"""Distributed searches on a Ray cluster: DSE candidates fanned out to evaluation actors, Optuna
searches run as Ray Tune trials, latency measured only on the nodes of the device measured.
Importing this package does not import Ray; the backend does when it connects."""

from subnetsearch.distributed._backend import RayBackend
from subnetsearch.distributed._cluster import (
    ADDRESS_HELP,
    ClusterError,
    cluster_cpus,
    connect,
    missing_device_message,
    shared_storage_url,
)

__all__ = ["ADDRESS_HELP", "ClusterError", "RayBackend", "cluster_cpus", "connect", "missing_device_message",
           "shared_storage_url"]
