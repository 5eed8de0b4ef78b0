"""Distributed searches on a Ray cluster: DSE candidates fanned out to evaluation actors, Optuna
searches and training-time searches run as Ray Tune trials (`RayTrials`), latency measured only on
the nodes of the device measured, and supernets trained data parallel on Ray Train (`train_on_ray`).
Importing this package does not import Ray; the backend does when it connects."""

from subnetsearch.distributed._backend import RayBackend
from subnetsearch.distributed._cluster import (
    ADDRESS_HELP,
    ClusterError,
    check_reachable,
    cluster_cpus,
    connect,
    missing_device_message,
    requires_token,
    shared_storage_url,
)
from subnetsearch.distributed._train import RayTrainSettings, train_on_ray
from subnetsearch.distributed._trials import RayTrials

__all__ = ["ADDRESS_HELP", "ClusterError", "RayBackend", "RayTrainSettings", "RayTrials", "check_reachable",
           "cluster_cpus", "connect", "missing_device_message", "requires_token", "shared_storage_url", "train_on_ray"]
