"""Training for dual dynamic inference (Wang et al., section IV-A):

1. the backbone alone (gating "none"), or any pre-trained backbone copied into a gated network;
2. IADI step 1: backbone frozen, only the gates train, toward a zero skip ratio;
3. IADI step 2: everything trains jointly toward the target skip ratio, with the resource-aware loss
   of Eq. (5) and the sign of alpha flipped each batch (positive while the batch skips less than
   the target, negative while it skips more);
4. RADI: exit classifiers added and trained with the summed losses of Eq. (4), gates and backbone
   tuned end to end (the alpha rule still holds the skip ratio).

Schedules are CPU-sized: cosine decay over each phase, SGD with momentum 0.9 and weight decay 1e-4
(the paper's), learning rate 0.05.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from subnetsearch.data import Splits
from subnetsearch.supernets import RESOURCES, DDIResNet, resource_loss, signed_alpha
from subnetsearch.trainers._wenet import check_counts

GATE_PREFIXES = ("layer_proj", "channel_conv", "channel_fc", "lstm", "layer_out")


def gate_parameters(net: DDIResNet) -> list[nn.Parameter]:
    return [p for name, p in net.named_parameters() if any(part in name.split(".") for part in GATE_PREFIXES)]


def head_parameters(net: DDIResNet) -> list[nn.Parameter]:
    return [p for name, p in net.named_parameters() if name.startswith("heads.")]


@dataclass(frozen=True)
class DDIPhase:
    """One training phase: which parameters train, toward which skip ratio, with which losses."""

    epochs: int = 1
    lr: float = 0.05
    target: float | None = None  # skip-ratio target of the alpha rule (None: no resource loss)
    alpha: float = 0.5  # |alpha| of Eq. (5), on the cost relative to the plain network
    gate_lr_scale: float = 10.0  # gates learn faster than the backbone: CPU-sized runs are short
    resource: str = "macs"  # the cost E of Eq. (5): macs | energy (Eq. 6)
    train: str = "all"  # all | gates (backbone frozen)
    exits: bool = False  # Eq. (4): sum the losses of every exit
    batch_size: int = 128
    max_steps_per_epoch: int | None = None
    augment: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.resource not in RESOURCES:
            raise ValueError(f"the resource must be one of {RESOURCES}, got {self.resource!r}")
        if self.train not in ("all", "gates"):
            raise ValueError(f"train must be all or gates, got {self.train!r}")
        if self.target is not None and not 0 <= self.target < 1:
            raise ValueError(f"the skip-ratio target must be in [0, 1), got {self.target}")
        check_counts(self, "epochs", "batch_size", "max_steps_per_epoch")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


def _parameters(net: DDIResNet, phase: DDIPhase) -> Iterable[nn.Parameter]:
    if phase.train == "gates":
        gates = gate_parameters(net)
        if not gates:
            raise ValueError(f"a {net.gating!r} network has no gates to train")
        return gates
    return list(net.parameters())


def train_phase(net: DDIResNet, splits: Splits, phase: DDIPhase,
                progress: Callable[[dict], None] | None = None) -> list[dict]:
    """Train one phase; returns per-epoch records (loss, mean skip ratio, mean relative cost)."""
    if phase.exits and not net.heads:
        raise ValueError("this network has no exits to train (build it with exits=True)")
    torch.manual_seed(phase.seed)
    generator = torch.Generator().manual_seed(phase.seed)
    trainable = list(_parameters(net, phase))
    trainable_ids = {id(p) for p in trainable}
    frozen = [p for p in net.parameters() if id(p) not in trainable_ids]
    for p in frozen:
        p.requires_grad_(False)
    gate_ids = {id(p) for p in gate_parameters(net)}
    groups = [{"params": [p for p in trainable if id(p) in gate_ids], "scale": phase.gate_lr_scale},
              {"params": [p for p in trainable if id(p) not in gate_ids], "scale": 1.0}]
    optimizer = torch.optim.SGD([g for g in groups if g["params"]], lr=phase.lr, momentum=0.9, weight_decay=1e-4)
    steps = math.ceil(len(splits.train) / phase.batch_size)
    if phase.max_steps_per_epoch:
        steps = min(steps, phase.max_steps_per_epoch)
    total, full_macs, history = steps * phase.epochs, net.static_macs(), []
    net.train()
    if phase.train == "gates":  # frozen backbone: its BN statistics stay those it was trained with
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
    try:
        for epoch in range(phase.epochs):
            sums = {"loss": 0.0, "skip_ratio": 0.0, "relative_macs": 0.0}
            if phase.resource == "energy":
                sums["relative_energy"] = 0.0
            for step, (images, labels) in enumerate(splits.batches(
                    splits.train, phase.batch_size, shuffle=True, augment=phase.augment, generator=generator,
                    max_batches=steps)):
                for group in optimizer.param_groups:
                    group["lr"] = 0.5 * phase.lr * group["scale"] * (1 + math.cos(math.pi * (epoch * steps + step) / total))
                decisions = net.forward_with_decisions(images)
                if phase.exits:
                    loss = sum(F.cross_entropy(logits, labels) for logits in decisions.exits)
                else:
                    loss = F.cross_entropy(decisions.exits[-1], labels)
                ratio = float(decisions.skip_ratio.detach().mean())
                cost = resource_loss(decisions, net, phase.resource)
                if phase.target is not None:
                    loss = loss + signed_alpha(phase.alpha, ratio, phase.target) * cost
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                sums["loss"] += float(loss.detach())
                sums["skip_ratio"] += ratio
                sums["relative_macs"] += float(decisions.macs.detach().mean()) / full_macs
                if phase.resource == "energy":
                    sums["relative_energy"] += float(cost.detach())
                if progress:
                    progress({"epoch": epoch + 1, "epochs": phase.epochs, "step": step + 1, "steps": steps,
                              "skip_ratio": ratio})
            history.append({"epoch": epoch + 1, **{k: round(v / steps, 5) for k, v in sums.items()}})
    finally:
        for p in frozen:
            p.requires_grad_(True)
    net.eval()
    return history


def copy_backbone(source: DDIResNet, target: DDIResNet) -> None:
    """Start a gated (or exit-carrying) network from another one's weights: every parameter and
    buffer the two share by name and shape is copied; gates and exits the source lacks keep their
    initialization (gates start open: nothing skipped)."""
    own = target.state_dict()
    shared = {k: v for k, v in source.state_dict().items() if k in own and own[k].shape == v.shape}
    own.update(shared)
    target.load_state_dict(own)
