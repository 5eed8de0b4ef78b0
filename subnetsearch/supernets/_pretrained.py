"""The shipped default supernet: a ResNet-20 WeNet trained on Fashion-MNIST."""

from __future__ import annotations

from pathlib import Path

from subnetsearch.supernets._checkpoint import Checkpoint, load_checkpoint

PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"
DEFAULT_CHECKPOINT = PRETRAINED_DIR / "wenet-resnet20-fmnist" / "supernet.pt"

# The exact command that produced DEFAULT_CHECKPOINT (its log is train_log.jsonl beside it).
DEFAULT_TRAIN_COMMAND = "subnetsearch train --out runs/default --epochs 10"


def default_checkpoint() -> Checkpoint:
    """The shipped default supernet's checkpoint (`.build()` it; `.data` is the split it was trained on)."""
    return load_checkpoint(DEFAULT_CHECKPOINT)
