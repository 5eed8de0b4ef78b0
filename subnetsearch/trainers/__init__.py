"""Training loops: WeNet Algorithm 1 (and single-mode "twin" training through the same loop), the
lasso family's fused training, and DDI's phases."""

from subnetsearch.trainers._ddi import DDIPhase, copy_backbone, train_phase
from subnetsearch.trainers._evaluate import evaluate_accuracy, evaluate_split
from subnetsearch.trainers._lasso import NEAR_ZERO, LassoRecipe, count_channels, init_from_full, sort_channels, train_lasso
from subnetsearch.trainers._wenet import WeNetRecipe, sample_patterns, train_step, train_wenet

__all__ = [
    "NEAR_ZERO",
    "DDIPhase",
    "WeNetRecipe",
    "LassoRecipe",
    "copy_backbone",
    "count_channels",
    "evaluate_accuracy",
    "evaluate_split",
    "init_from_full",
    "sample_patterns",
    "sort_channels",
    "train_phase",
    "train_step",
    "train_wenet",
    "train_lasso",
]
