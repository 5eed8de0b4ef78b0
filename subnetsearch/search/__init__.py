"""Evaluation of modes (and, later, the search strategies)."""

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
    "EvaluationSettings",
    "Metrics",
    "calibration_batches",
    "evaluate_mode",
    "mode_accuracy",
    "mode_accuracy_and_loss",
    "mode_energy_mj",
]
