"""Accuracy of a model on one split."""

from __future__ import annotations

import torch
from torch import nn

from subnetsearch.data import ArraySplit, Splits


def evaluate_accuracy(model: nn.Module, splits: Splits, split: ArraySplit, batch_size: int = 500,
                      max_batches: int | None = None) -> float:
    """Top-1 accuracy in eval mode, without gradients. Restores the model's training flag."""
    was_training = model.training
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels in splits.batches(split, batch_size, max_batches=max_batches):
            correct += int((model(images).argmax(1) == labels).sum())
            total += int(labels.shape[0])
    model.train(was_training)
    if total == 0:
        raise ValueError("cannot evaluate accuracy on an empty split")
    return correct / total
