"""Persistent storage: one SQL URL for devices, supernets, searches, evaluations and Pareto fronts
(and Optuna's tables)."""

from subnetsearch.storage._store import (
    DEFAULT_URL,
    URL_ENVIRONMENT,
    BestMode,
    Budget,
    SearchRecord,
    StorageError,
    Store,
    StoredEvaluation,
    SupernetRecord,
    safe_url,
    settings_key,
    storage_url,
)
from subnetsearch.storage._studies import distinct_trials

__all__ = [
    "distinct_trials",
    "DEFAULT_URL",
    "URL_ENVIRONMENT",
    "BestMode",
    "Budget",
    "SearchRecord",
    "StorageError",
    "Store",
    "StoredEvaluation",
    "SupernetRecord",
    "safe_url",
    "settings_key",
    "storage_url",
]
