"""The shipped supernets: the default (a ResNet-20 of nested widths 32-64-128 on Fashion-MNIST, whose
modes trade on a 2-core CPU: the 24-48-96 one below grown to that width and trained on), the 24-48-96
nested supernet it started from (the default before it) and the WeNet one before that (a ResNet-20
of widths 16-32-64), both still shipped so that stores and scripts that name them keep working."""

from __future__ import annotations

from pathlib import Path

from subnetsearch.supernets._checkpoint import Checkpoint, load_checkpoint

PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"
DEFAULT_CHECKPOINT = PRETRAINED_DIR / "nested-resnet20-wide-fmnist" / "supernet.pt"
# The 24-48-96 nested supernet (the default until 2026-12-07, trained from scratch in 10 epochs): the
# default's start, grown to DEFAULT_WIDTHS (its weights the prefix of the wider ones)
NESTED_CHECKPOINT = PRETRAINED_DIR / "nested-resnet20-fmnist" / "supernet.pt"
NESTED_SHA256 = "0a90e1f0337831543760a25ddb6231a95064b9434e1de5a5c4f824f3d73299ce"
# What the default was trained as: the trainer (`train --family`), the stage widths it was grown to,
# and the fine-tuning schedule (epochs, peak learning rate) it was trained with from NESTED_CHECKPOINT
DEFAULT_FAMILY, DEFAULT_WIDTHS = "nested", (32, 64, 128)
DEFAULT_EPOCHS, DEFAULT_LR = 5, 0.03
# The exact command that produced DEFAULT_CHECKPOINT (its log is train_log.jsonl beside it).
DEFAULT_TRAIN_COMMAND = ("subnetsearch train --family nested --start "
                         "subnetsearch/pretrained/nested-resnet20-fmnist/supernet.pt --widths 32,64,128 "
                         "--out runs/default --epochs 5 --lr 0.03")
# The shipped file's SHA-256 (tests check the file is the one trained and described)
DEFAULT_SHA256 = "363fe979cf21878877c04153b141c2039525c32d99e72aa4b2f7d97ef5b7be0f"
WENET_CHECKPOINT = PRETRAINED_DIR / "wenet-resnet20-fmnist" / "supernet.pt"  # the default until 2026-12


def default_checkpoint() -> Checkpoint:
    """The shipped default supernet's checkpoint (`.build()` it; `.data` is the split it was trained on)."""
    return load_checkpoint(DEFAULT_CHECKPOINT)
