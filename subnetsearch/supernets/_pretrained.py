"""The shipped supernets: the default (a ResNet-20 of nested widths 24-48-96 on Fashion-MNIST, whose
modes trade on a 2-core CPU) and the one before it (a ResNet-20 WeNet of widths 16-32-64, still
shipped so that stores and scripts that name it keep working)."""

from __future__ import annotations

from pathlib import Path

from subnetsearch.supernets._checkpoint import Checkpoint, load_checkpoint

PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"
DEFAULT_CHECKPOINT = PRETRAINED_DIR / "nested-resnet20-fmnist" / "supernet.pt"
# What the default was trained as: the trainer (`train --family`) and the stage widths it was given
DEFAULT_FAMILY, DEFAULT_WIDTHS = "nested", (24, 48, 96)
# The exact command that produced DEFAULT_CHECKPOINT (its log is train_log.jsonl beside it).
DEFAULT_TRAIN_COMMAND = "subnetsearch train --family nested --widths 24,48,96 --out runs/default --epochs 10"
# The shipped file's SHA-256 (tests check the file is the one trained and described)
DEFAULT_SHA256 = "0a90e1f0337831543760a25ddb6231a95064b9434e1de5a5c4f824f3d73299ce"
WENET_CHECKPOINT = PRETRAINED_DIR / "wenet-resnet20-fmnist" / "supernet.pt"  # the default until 2026-12


def default_checkpoint() -> Checkpoint:
    """The shipped default supernet's checkpoint (`.build()` it; `.data` is the split it was trained on)."""
    return load_checkpoint(DEFAULT_CHECKPOINT)
