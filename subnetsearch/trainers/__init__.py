"""Training loops: WeNet Algorithm 1 (and single-mode "twin" training through the same loop)."""

from subnetsearch.trainers._evaluate import evaluate_accuracy, evaluate_split
from subnetsearch.trainers._wenet import WeNetRecipe, sample_patterns, train_step, train_wenet

__all__ = ["WeNetRecipe", "evaluate_accuracy", "evaluate_split", "sample_patterns", "train_step", "train_wenet"]
