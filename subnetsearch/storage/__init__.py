"""Persistent storage: one SQL URL for devices, supernets, searches, evaluations and Pareto fronts
(and Optuna's tables)."""

from subnetsearch.storage._engine import DEFAULT_URL, URL_ENVIRONMENT, StorageError, safe_url, storage_url
from subnetsearch.storage._queries import Store
from subnetsearch.storage._records import BestMode, Budget, SearchRecord, StoredEvaluation, SupernetRecord
from subnetsearch.storage._store import settings_key
from subnetsearch.storage._studies import distinct_trials
from subnetsearch.storage._uncertain import (
    Figures,
    Z,
    accuracy_interval,
    could_join,
    noise_front,
    paired_accuracy_difference,
    surely_no_worse,
)

__all__ = [
    "Figures",
    "accuracy_interval",
    "noise_front",
    "could_join",
    "surely_no_worse",
    "Z",
    "paired_accuracy_difference",
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
