"""Accuracy and loss of a model on one split."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from subnetsearch.data import ArraySplit, Splits
from subnetsearch.errors import InputError
from subnetsearch.supernets import module_device


def evaluate_split(model: nn.Module, splits: Splits, split: ArraySplit, batch_size: int = 500,
                   max_batches: int | None = None) -> tuple[float, float]:
    """Top-1 accuracy and mean cross-entropy in eval mode, in inference mode, on the model's device.
    Restores the model's training flag."""
    accuracy, loss, _ = evaluate_split_correct(model, splits, split, batch_size, max_batches)
    return accuracy, loss


CPU_CHUNK = 100  # images per forward pass on a CPU (measured: benchmarks/results/evaluation_chunks.json)


def evaluate_split_correct(model: nn.Module, splits: Splits, split: ArraySplit, batch_size: int = 500,
                           max_batches: int | None = None, chunk: int | None = None,
                           ) -> tuple[float, float, torch.Tensor]:
    """`evaluate_split`, and which images (in split order) the model classified correctly: a bool
    tensor, for the accuracy's standard error and paired comparisons between models.

    `batch_size` and `max_batches` say which images are scored (`--eval-batches` counts batches of
    500); on a CPU each batch runs in forward passes of `CPU_CHUNK` images, whose activations stay
    in cache (2.2x faster than passes of 500 for the default supernet's full network on 2 cores; in
    eval mode every image's answer is its own, so the chunking changes no figure). On an
    accelerator a batch is one pass. `chunk` overrides both."""
    was_training = model.training
    model.eval()
    hits: list[torch.Tensor] = []
    loss_sum = 0.0
    device = module_device(model)
    if chunk is None:
        chunk = CPU_CHUNK if device.type == "cpu" else batch_size
    elif chunk < 1:
        raise InputError(f"chunk must be >= 1 images, got {chunk}")
    with torch.inference_mode():
        for batch, batch_labels in splits.batches(split, batch_size, max_batches=max_batches, device=device):
            for images, labels in zip(batch.split(chunk), batch_labels.split(chunk), strict=True):
                logits = model(images)
                hits.append((logits.argmax(1) == labels).cpu())
                loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
    model.train(was_training)
    correct = torch.cat(hits) if hits else torch.zeros(0, dtype=torch.bool)
    if correct.numel() == 0:
        raise InputError("cannot evaluate accuracy on an empty split")
    total = int(correct.numel())
    return int(correct.sum()) / total, loss_sum / total, correct


def evaluate_accuracy(model: nn.Module, splits: Splits, split: ArraySplit, batch_size: int = 500,
                      max_batches: int | None = None) -> float:
    return evaluate_split(model, splits, split, batch_size, max_batches)[0]
