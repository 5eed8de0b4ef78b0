"""Evaluation of modes (cached in the store), the search strategies (greedy DSE, Optuna), and export."""

from subnetsearch.search._cache import CachedEvaluator, to_record
from subnetsearch.search._dse import COSTS, DSEResult, DSEStep, cost_of, greedy_dse, next_candidates
from subnetsearch.search._evaluator import (
    EvaluationSettings,
    Metrics,
    calibration_batches,
    evaluate_mode,
    evaluation_settings,
    mode_accuracy,
    mode_accuracy_and_loss,
    mode_energy_mj,
)
from subnetsearch.search._export import FORMATS, ExportError, export_mode, materialized_model, mode_document
from subnetsearch.search._optuna import (
    OBJECTIVES,
    SAMPLERS,
    Constraints,
    check_objectives,
    finish_orphans,
    make_sampler,
    objective_values,
    open_study,
    optuna_search,
    record_trial,
)

__all__ = [
    "FORMATS",
    "ExportError",
    "export_mode",
    "materialized_model",
    "mode_document",
    "OBJECTIVES",
    "SAMPLERS",
    "check_objectives",
    "Constraints",
    "finish_orphans",
    "make_sampler",
    "objective_values",
    "open_study",
    "optuna_search",
    "record_trial",
    "COSTS",
    "DSEResult",
    "DSEStep",
    "cost_of",
    "greedy_dse",
    "next_candidates",
    "CachedEvaluator",
    "to_record",
    "EvaluationSettings",
    "Metrics",
    "calibration_batches",
    "evaluate_mode",
    "evaluation_settings",
    "mode_accuracy",
    "mode_accuracy_and_loss",
    "mode_energy_mj",
]
