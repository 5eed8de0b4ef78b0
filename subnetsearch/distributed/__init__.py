"""Distributed searches on a Ray cluster: DSE candidates fanned out to evaluation actors, Optuna
searches run as Ray Tune trials, latency measured only on the nodes of the device measured, and
supernets trained data parallel on Ray Train (`train_on_ray`).
Importing this package does not import Ray; the backend does when it connects."""

from typing import Any

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


def tune_lasso(*args: Any, **kwargs: Any) -> Any:
    """Clipped-Lasso generation trials as Ray Tune trials (`subnetsearch.distributed._tune.tune_lasso`);
    Ray Tune is imported on the first call, not with this package."""
    from subnetsearch.distributed._tune import tune_lasso as run

    return run(*args, **kwargs)


def tune_ddi(*args: Any, **kwargs: Any) -> Any:
    """DDI skip-target trials as Ray Tune trials (`subnetsearch.distributed._tune.tune_ddi`); Ray Tune
    is imported on the first call, not with this package."""
    from subnetsearch.distributed._tune import tune_ddi as run

    return run(*args, **kwargs)


__all__ = ["ADDRESS_HELP", "ClusterError", "RayBackend", "RayTrainSettings", "check_reachable", "cluster_cpus",
           "connect", "missing_device_message", "requires_token", "shared_storage_url", "train_on_ray", "tune_ddi",
           "tune_lasso"]
