"""Evaluation of modes (and, later, the search strategies)."""

from subnetsearch.search._cache import CachedEvaluator, to_record
from subnetsearch.search._evaluator import (
    EvaluationSettings,
    Metrics,
    calibration_batches,
    evaluate_mode,
    mode_accuracy,
    mode_accuracy_and_loss,
    mode_energy_mj,
)

__all__ = [
    "CachedEvaluator",
    "to_record",
    "EvaluationSettings",
    "Metrics",
    "calibration_batches",
    "evaluate_mode",
    "mode_accuracy",
    "mode_accuracy_and_loss",
    "mode_energy_mj",
]
