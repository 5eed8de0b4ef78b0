"""Accuracy and loss of a model on one split."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from subnetsearch.data import ArraySplit, Splits
from subnetsearch.supernets import module_device


def evaluate_split(model: nn.Module, splits: Splits, split: ArraySplit, batch_size: int = 500,
                   max_batches: int | None = None) -> tuple[float, float]:
    """Top-1 accuracy and mean cross-entropy in eval mode, in inference mode, on the model's device.
    Restores the model's training flag."""
    was_training = model.training
    model.eval()
    correct = total = 0
    loss_sum = 0.0
    device = module_device(model)
    with torch.inference_mode():
        for images, labels in splits.batches(split, batch_size, max_batches=max_batches, device=device):
            logits = model(images)
            correct += int((logits.argmax(1) == labels).sum())
            loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
            total += int(labels.shape[0])
    model.train(was_training)
    if total == 0:
        raise ValueError("cannot evaluate accuracy on an empty split")
    return correct / total, loss_sum / total


def evaluate_accuracy(model: nn.Module, splits: Splits, split: ArraySplit, batch_size: int = 500,
                      max_batches: int | None = None) -> float:
    return evaluate_split(model, splits, split, batch_size, max_batches)[0]
