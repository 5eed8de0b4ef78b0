"""Dual dynamic inference (Wang et al., "Dual Dynamic Inference"): a CIFAR-style ResNet whose residual
blocks are skipped per input, whole (layer gate G^L) or per output channel (channel gate G^C), and
which can stop at early-exit classifiers under a budget.

- G^L (Fig. 2a): average pool -> 1x1 conv (c -> 10) -> one LSTM cell (hidden 10) shared by all
  blocks and carried from block to block -> linear -> sigmoid: one scalar per sample.
- G^C (Fig. 2b): 3x3 stride-2 conv (c -> c) -> global average pool -> linear (c -> k) -> sigmoid.
- MGL2S, Eq. (3): F_i = g_L g_C * C_i(F_{i-1}) + (1 - g_L g_C) * F_{i-1}, where C_i is the whole block
  (relu(F + residual)); G^C is not computed for a sample whose layer gate skips.
- Training uses straight-through gates (hard {0,1} forward, sigmoid gradient); inference uses hard
  decisions `p > threshold` (the threshold is a runtime knob; the paper's is 0.5).
- Only blocks whose input and output have the same shape can be skipped (F_{i-1} must stand in for
  F_i); the first block of stages 2 and 3 always runs, as in SkipNet.
- `run_one` executes one sample with real skipping: a skipped block is not computed, and a block
  with channel gating computes only the selected output channels of its second convolution (its
  first convolution feeds every output channel, so it always runs in full).
- Per-sample cost in MACs counts what `run_one` computes, gates included.
- RADI: optional exit classifiers at about 1/4 and 3/4 of every stage (Fig. 5).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from subnetsearch.costs import LayerShape, energy_pj, layer_accesses
from subnetsearch.errors import InputError

GATINGS = ("mgl2s", "layer", "channel", "none")
HIDDEN = 10  # the layer gates' LSTM hidden size (paper IV-A)


def straight_through(probability: torch.Tensor, threshold: float) -> torch.Tensor:
    """Hard {0, 1} values in the forward pass, the sigmoid's gradient in the backward pass."""
    hard = (probability > threshold).to(probability.dtype)
    return hard + probability - probability.detach()


def exit_positions(blocks_per_stage: int) -> list[int]:
    """Blocks (1-based, within a stage) after which the exits sit: about 1/4 and 3/4 of the stage."""
    positions = sorted({max(1, round(blocks_per_stage / 4)), max(1, round(3 * blocks_per_stage / 4))})
    return [p for p in positions if p < blocks_per_stage] or [blocks_per_stage]


class ExitHead(nn.Module):
    """A branch classifier (Fig. 5b): max pooling on large maps, a 3x3 conv + BN + ReLU, global
    average pooling and a linear classifier."""

    def __init__(self, channels: int, num_classes: int, size: int) -> None:
        super().__init__()
        self.pool = size > 8
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, num_classes)
        area = (size // 2) ** 2 if self.pool else size * size
        self.macs = area * channels * channels * 9 + channels * num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool:
            x = F.max_pool2d(x, 2)
        x = F.relu(self.bn(self.conv(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def layer_energy_pj(in_channels: int, out_channels: int, kernel_area: int, input_area: int, output_area: int,
                    kind: str = "conv") -> float:
    """Eq. (6) energy (pJ) of one conv / linear layer by the devices module's dataflow model and its
    default coefficients (the resource of Eq. (5) when training toward energy)."""
    shape = LayerShape("", kind, in_channels, out_channels, kernel_area, output_area, input_area, 1, None, False)
    return energy_pj(layer_accesses(shape, 1))


class GatedBlock(nn.Module):
    """A basic block with its gates. `size`: the block's input spatial size (for the cost)."""

    layer_proj: nn.Conv2d  # with a layer gate
    channel_conv: nn.Conv2d  # with a channel gate
    channel_fc: nn.Linear

    def __init__(self, in_channels: int, out_channels: int, stride: int, size: int, gating: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.skippable = stride == 1 and in_channels == out_channels
        self.downsample: nn.Sequential | None = None if self.skippable else nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))
        self.layer_gated = self.skippable and gating in ("mgl2s", "layer")
        self.channel_gated = self.skippable and gating in ("mgl2s", "channel")
        if self.layer_gated:
            self.layer_proj = nn.Conv2d(in_channels, HIDDEN, 1)
        if self.channel_gated:
            self.channel_conv = nn.Conv2d(in_channels, in_channels, 3, 2, 1, bias=False)
            self.channel_fc = nn.Linear(in_channels, out_channels)
            nn.init.constant_(self.channel_fc.bias, 2.0)  # start near "execute every channel"
        out_size = size // stride
        self.conv1_macs = out_size * out_size * in_channels * out_channels * 9
        self.conv2_macs = out_size * out_size * out_channels * out_channels * 9
        self.down_macs = 0 if self.skippable else out_size * out_size * in_channels * out_channels
        self.layer_gate_macs = in_channels * HIDDEN + 4 * HIDDEN * 2 * HIDDEN + HIDDEN if self.layer_gated else 0
        gate_size = (size + 1) // 2
        self.channel_gate_macs = (gate_size * gate_size * in_channels * in_channels * 9 + in_channels * out_channels
                                  if self.channel_gated else 0)
        self.out_channels = out_channels
        # the same components in energy (Eq. 6); pooling and element-wise traffic are not counted
        self.in_area, self.out_area = area, out_area = size * size, out_size * out_size
        self.conv1_pj = layer_energy_pj(in_channels, out_channels, 9, area, out_area)
        self.conv2_pj = layer_energy_pj(out_channels, out_channels, 9, out_area, out_area)
        self.down_pj = 0.0 if self.skippable else layer_energy_pj(in_channels, out_channels, 1, area, out_area)
        self.layer_gate_pj = (layer_energy_pj(in_channels, HIDDEN, 1, 1, 1)
                              + layer_energy_pj(2 * HIDDEN, 4 * HIDDEN, 1, 1, 1, "linear")
                              + layer_energy_pj(HIDDEN, 1, 1, 1, 1, "linear")) if self.layer_gated else 0.0
        self.channel_gate_pj = (layer_energy_pj(in_channels, in_channels, 9, area, gate_size * gate_size)
                                + layer_energy_pj(in_channels, out_channels, 1, 1, 1, "linear")
                                if self.channel_gated else 0.0)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.downsample is None else self.downsample(x)

    def downsample_conv(self) -> nn.Conv2d | None:
        return None if self.downsample is None else cast(nn.Conv2d, self.downsample[0])

    def channel_probability(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(self.channel_conv(x), 1).flatten(1)
        return torch.sigmoid(self.channel_fc(pooled))

    def full_macs(self) -> int:
        return self.conv1_macs + self.conv2_macs + self.down_macs

    def full_pj(self) -> float:
        return self.conv1_pj + self.conv2_pj + self.down_pj


@dataclass
class Decisions:
    """What one forward pass decided, per sample: layer gates (blocks x batch), executed fraction of
    channels (blocks x batch), the cost in MACs, and the logits of every exit (last = final)."""

    layer: torch.Tensor
    channel: torch.Tensor
    macs: torch.Tensor
    exits: list[torch.Tensor]
    exit_macs: list[torch.Tensor]
    energy: torch.Tensor  # per sample, pJ by Eq. (6) (final classifier; gates included)

    @property
    def skip_ratio(self) -> torch.Tensor:
        """Per sample: the fraction of gated blocks' work skipped (layer x channel decisions)."""
        executed = self.layer * self.channel
        return 1 - executed.mean(0) if executed.numel() else torch.zeros(self.macs.shape[0])


class DDIResNet(nn.Module):
    """ResNet (6n+2) with MGL2S gates (or layer-only / channel-only / none) and optional exits."""

    def __init__(self, depth: int = 20, widths: Sequence[int] = (16, 32, 64), in_channels: int = 1,
                 num_classes: int = 10, input_size: int = 28, gating: str = "mgl2s", exits: bool = False) -> None:
        super().__init__()
        if gating not in GATINGS:
            raise InputError(f"gating must be one of {GATINGS}, got {gating!r}")
        if (depth - 2) % 6 or depth < 8:
            raise InputError(f"CIFAR ResNet depth must be 6n+2 with n >= 1, got {depth}")
        self.gating, self.num_classes = gating, num_classes
        self.threshold = 0.5
        n = (depth - 2) // 6
        self.stem = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.stem_bn = nn.BatchNorm2d(widths[0])
        self.stem_macs = input_size * input_size * in_channels * widths[0] * 9
        self.stem_pj = layer_energy_pj(in_channels, widths[0], 9, input_size ** 2, input_size ** 2)
        blocks, heads, channels, size = [], {}, widths[0], input_size
        for stage, width in enumerate(widths):
            for index in range(n):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(GatedBlock(channels, width, stride, size, gating))
                channels, size = width, size // stride
                if exits and index + 1 in exit_positions(n):
                    heads[str(len(blocks) - 1)] = ExitHead(width, num_classes, size)
        self.blocks = nn.ModuleList(blocks)
        self.heads = nn.ModuleDict(heads)
        self.lstm: nn.LSTMCell | None = nn.LSTMCell(HIDDEN, HIDDEN) if any(b.layer_gated for b in blocks) else None
        self.layer_out: nn.Linear | None = nn.Linear(HIDDEN, 1) if self.lstm is not None else None
        if self.layer_out is not None:
            nn.init.constant_(self.layer_out.bias, 2.0)  # start near "execute every block"
        self.fc = nn.Linear(channels, num_classes)
        self.fc_macs = channels * num_classes
        self.fc_pj = layer_energy_pj(channels, num_classes, 1, 1, 1, "linear")

    @property
    def gated_blocks(self) -> list[GatedBlock]:
        """The blocks, typed (a ModuleList yields plain modules)."""
        return [cast(GatedBlock, block) for block in self.blocks]

    def head(self, index: int) -> ExitHead | None:
        """The exit after block `index`, if there is one."""
        return cast(ExitHead, self.heads[str(index)]) if str(index) in self.heads else None

    # ---- gates ---------------------------------------------------------------------------------
    def _layer_probability(self, block: GatedBlock, x: torch.Tensor,
                           state: Any) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        if self.lstm is None or self.layer_out is None:
            raise InputError("this network has no layer gates")
        features = block.layer_proj(F.adaptive_avg_pool2d(x, 1)).flatten(1)
        hidden, cell = self.lstm(features, state)
        return torch.sigmoid(self.layer_out(hidden)).squeeze(1), (hidden, cell)

    def _gate(self, probability: torch.Tensor) -> torch.Tensor:
        if self.training:
            return straight_through(probability, self.threshold)
        return (probability > self.threshold).to(probability.dtype)

    # ---- batched forward (training and accuracy) -----------------------------------------------
    def forward_with_decisions(self, x: torch.Tensor) -> Decisions:
        """Every sample's decisions and cost; skipped work is masked out (numerically identical to
        `run_one`, which does not compute it)."""
        batch = x.shape[0]
        x = F.relu(self.stem_bn(self.stem(x)))
        macs = x.new_full((batch,), float(self.stem_macs))
        energy = x.new_full((batch,), float(self.stem_pj))
        state = None
        layer_rows, channel_rows, exits, exit_macs = [], [], [], []
        for index, block in enumerate(self.gated_blocks):
            if not block.skippable:
                x = F.relu(block.residual(x) + block.shortcut(x))
                macs = macs + block.full_macs()
                energy = energy + block.full_pj()
            else:
                g_layer = x.new_ones(batch)
                if block.layer_gated:
                    probability, state = self._layer_probability(block, x, state)
                    g_layer = self._gate(probability)
                    macs = macs + block.layer_gate_macs
                    energy = energy + block.layer_gate_pj
                g_channel = x.new_ones(batch, block.out_channels)
                if block.channel_gated:
                    g_channel = self._gate(block.channel_probability(x))
                mask = g_layer[:, None] * g_channel
                executed = mask.mean(1)  # fraction of output channels computed (0 if the layer is skipped)
                any_channel = (g_channel.detach().sum(1) > 0).to(x.dtype)  # else conv1 is not run either
                macs = (macs + g_layer * (block.channel_gate_macs + any_channel * block.conv1_macs)
                        + executed * block.conv2_macs)
                energy = (energy + g_layer * (block.channel_gate_pj + any_channel * block.conv1_pj)
                          + executed * block.conv2_pj)  # a conv2 computing a fraction of its outputs: that fraction
                out = F.relu(x + block.residual(x))
                m = mask[:, :, None, None]
                x = m * out + (1 - m) * x
                layer_rows.append(g_layer)
                channel_rows.append(g_channel.mean(1))
            head = self.head(index)
            if head is not None:
                exits.append(head(x))
                exit_macs.append(macs + head.macs)
        logits = self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        macs = macs + self.fc_macs
        energy = energy + self.fc_pj
        exits.append(logits)
        exit_macs.append(macs)
        empty = x.new_zeros(0, batch)
        return Decisions(torch.stack(layer_rows) if layer_rows else empty,
                         torch.stack(channel_rows) if channel_rows else empty, macs, exits, exit_macs, energy)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_decisions(x).exits[-1]

    # ---- one sample with real skipping -----------------------------------------------------------
    @torch.no_grad()
    def run_one(self, x: torch.Tensor, budget: float | None = None) -> tuple[torch.Tensor, float, int]:
        """One sample (batch 1, eval mode) computing only what the gates execute. With a budget (MACs)
        and exits: the answer of the last exit whose cumulative cost fits, inference halting as soon as
        no later exit can fit (a sample over budget at its first exit answers there). Returns the
        logits, the MACs spent and which exit answered (0-based; the last is the final classifier)."""
        if x.shape[0] != 1 or self.training:
            raise InputError("run_one executes a single sample (batch 1) in eval mode")
        x = F.relu(self.stem_bn(self.stem(x)))
        macs: float = self.stem_macs
        state = None
        answer: tuple[torch.Tensor, float, int] | None = None
        exit_index = 0
        for index, block in enumerate(self.gated_blocks):
            if budget is not None and answer is not None and macs > budget:
                return answer  # every later exit costs more than the budget
            x, macs, state = self._run_block(block, x, macs, state)
            head = self.head(index)
            if head is not None:
                if budget is not None and (answer is None or macs + head.macs <= budget):
                    answer = (head(x), macs + head.macs, exit_index)
                exit_index += 1
        if budget is not None and answer is not None and macs + self.fc_macs > budget:
            return answer
        logits = self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        return logits, macs + self.fc_macs, exit_index

    def _run_block(self, block: GatedBlock, x: torch.Tensor, macs: float, state: Any) -> tuple[torch.Tensor, float, Any]:
        if not block.skippable:
            return F.relu(block.residual(x) + block.shortcut(x)), macs + block.full_macs(), state
        if block.layer_gated:
            probability, state = self._layer_probability(block, x, state)
            macs += block.layer_gate_macs
            if not bool(probability[0] > self.threshold):
                return x, macs, state  # the block is not computed; its input passes on
        if not block.channel_gated:
            return F.relu(x + block.residual(x)), macs + block.conv1_macs + block.conv2_macs, state
        macs += block.channel_gate_macs
        selected = (block.channel_probability(x)[0] > self.threshold).nonzero().flatten()
        if selected.numel() == 0:
            return x, macs, state  # no output channel computed: neither convolution runs
        inner = F.relu(block.bn1(block.conv1(x)))
        bn = block.bn2
        if bn.running_mean is None or bn.running_var is None:
            raise InputError("channel-gated blocks need BN running statistics")
        partial = F.conv2d(inner, block.conv2.weight[selected], None, 1, 1)
        partial = F.batch_norm(partial, bn.running_mean[selected], bn.running_var[selected],
                               bn.weight[selected], bn.bias[selected], False, 0.0, bn.eps)
        x = x.clone()
        x[:, selected] = F.relu(x[:, selected] + partial)
        return x, macs + block.conv1_macs + block.conv2_macs * selected.numel() / block.out_channels, state

    # ---- costs -------------------------------------------------------------------------------------
    def static_macs(self) -> int:
        """MACs of the backbone with nothing skipped and no gate computed (the plain ResNet)."""
        return self.stem_macs + sum(block.full_macs() for block in self.gated_blocks) + self.fc_macs

    def static_energy_pj(self) -> float:
        """Eq. (6) energy of the plain ResNet (nothing skipped, no gate)."""
        return self.stem_pj + sum(block.full_pj() for block in self.gated_blocks) + self.fc_pj

    def minimal_exit_macs(self) -> int:
        """The cheapest any sample can reach the first exit: every skippable block skipped by its layer
        gate (or, without layer gates, every channel skipped)."""
        if not self.heads:
            raise InputError("this network has no exits")
        first = min(int(key) for key in self.heads)
        macs = self.stem_macs
        for block in self.gated_blocks[:first + 1]:
            if not block.skippable:
                macs += block.full_macs()
            elif block.layer_gated:
                macs += block.layer_gate_macs
            else:
                macs += block.channel_gate_macs + block.conv1_macs
        head = self.head(first)
        return macs + (head.macs if head is not None else 0)


def predict_under_budget(decisions: Decisions, budget: float,
                         floor: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """RADI inference on a batch: per sample, the logits of the last exit whose cumulative cost fits in
    `budget` (MACs). A budget below `floor` (the cheapest possible first exit) is refused; a sample
    whose own first exit costs more than the budget (its gates skipped less) answers from the first
    exit and is counted as over budget. Returns (logits, MACs spent, over-budget flags, exit index)."""
    if budget < floor:
        raise InputError(f"budget {budget:.4g} MACs is below the cheapest first exit ({floor:.4g} MACs): no sample "
                         "can answer within it")
    costs = torch.stack(decisions.exit_macs)  # exits x batch
    fits = costs <= budget
    last_fitting = (fits * torch.arange(1, costs.shape[0] + 1)[:, None]).argmax(0)
    index = torch.where(fits.any(0), last_fitting, torch.zeros_like(last_fitting))
    batch = torch.arange(costs.shape[1])
    return torch.stack(decisions.exits)[index, batch], costs[index, batch], ~fits.any(0), index


RESOURCES = ("macs", "energy")


def resource_loss(decisions: Decisions, net: DDIResNet, resource: str = "macs") -> torch.Tensor:
    """E of Eq. (5): the batch's mean per-sample cost relative to the plain network, in MACs or in
    Eq. (6) energy (gate overhead included; differentiable through the straight-through gates)."""
    if resource == "macs":
        return decisions.macs.mean() / net.static_macs()
    if resource == "energy":
        return decisions.energy.mean() / net.static_energy_pj()
    raise InputError(f"the resource must be one of {RESOURCES}, got {resource!r}")


def signed_alpha(alpha: float, skip_ratio: float, target: float) -> float:
    """The paper's control rule (IV-A): penalize cost (alpha > 0) while the batch skips less than the
    target, reward it (alpha < 0) while it skips more, so the skip ratio settles at the target."""
    return abs(alpha) if skip_ratio < target else -abs(alpha)
