"""The DDI family: a `DDIResNet` (`_ddi_network`) as a supernet whose runtime knobs are the gate
threshold and the exit budget (input-dependent cost: the mean of per-sample MACs), and its
executor, which runs one sample at a time with real skipping."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from subnetsearch.costs import Cost, LayerShape
from subnetsearch.errors import InputError
from subnetsearch.spaces import Knob, Mode, SearchSpace
from subnetsearch.supernets._base import BaseSupernet
from subnetsearch.supernets._ddi_graph import GatedGraph
from subnetsearch.supernets._ddi_network import (
    DDIResNet,
    predict_under_budget,
)

DEFAULT_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
DEFAULT_BUDGETS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # fractions of the plain network's MACs; 1.0: no early exit


class DDIExecutor(nn.Module):
    """A DDI mode as a module that really skips: every sample of a batch runs alone through
    `run_one` (gates decide per sample; skipped blocks and channels are not computed). Its control
    flow depends on the data, so tracing it would freeze one input's decisions: `control_flow()`
    gives the same mode as a graph with real branches (`torch.cond`), which exports keep."""

    data_dependent = True  # tracing would freeze one input's skipping decisions into the graph

    def __init__(self, network: DDIResNet, budget_macs: float | None) -> None:
        super().__init__()
        self.network, self.budget_macs = network, budget_macs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.network.run_one(x[i:i + 1], self.budget_macs)[0] for i in range(x.shape[0])])

    def control_flow(self) -> tuple[GatedGraph, dict[str, float]]:
        """The mode as a batch-1 graph with `torch.cond` branches (`forward(x, budget)`), and the
        value of its `budget` input for this mode (a fraction of the plain network's MACs; 1: none)."""
        plain = self.network.static_macs()
        return GatedGraph(self.network), {"budget": 1.0 if self.budget_macs is None else self.budget_macs / plain}


class DDISupernet(BaseSupernet):
    """A trained DDI network as a supernet: its runtime knobs are the gate threshold (skip more or
    less without retraining; the paper's is 0.5) and, with exits, the budget as a fraction of the
    plain network's MACs. The skip target it was trained for is a training-time knob (recorded in
    the architecture). The cost of a mode depends on the input: `cost` gives the most a sample can
    cost, and the evaluator records every evaluated sample's MACs (`recording_costs`) and stores
    their mean and distribution.
    """

    family = "ddi"
    mode_kind = "skipping"
    dynamic_cost = True

    def __init__(self, arch: dict) -> None:
        super().__init__()
        self.arch = dict(arch)
        size = int(arch["input_size"])
        self.network = DDIResNet(arch["depth"], arch["widths"], arch["in_channels"], arch["num_classes"], size,
                                 arch["gating"], arch["exits"])
        self.input_shape = (int(arch["in_channels"]), size, size)
        thresholds = tuple(float(t) for t in arch["thresholds"])
        knobs = [Knob("threshold", "ordered", thresholds)]
        self.plain_macs = self.network.static_macs()
        self.floor_macs = self.network.minimal_exit_macs() if arch["exits"] else 0
        if arch["exits"]:
            budgets = tuple(float(b) for b in arch["budgets"])
            floor = self.floor_macs / self.plain_macs
            too_small = [b for b in budgets if b < floor]
            if too_small:
                raise InputError(f"budgets {too_small} are below the cheapest first exit ({floor:.3f} of the plain "
                                 "network's MACs): no sample could answer within them")
            knobs.append(Knob("budget", "ordered", budgets))
        self.space = SearchSpace(knobs, context=self.arch)
        self.budget = 1.0
        self._recording: list[dict[str, torch.Tensor]] | None = None

    # ---- modes ---------------------------------------------------------------------------------
    @property
    def mode(self) -> Mode:
        values: dict[str, float] = {"threshold": self.network.threshold}
        if "budget" in self.space:
            values["budget"] = self.budget
        return Mode(values, self.space.id)

    def _mode(self, threshold: float, budget: float) -> Mode:
        values = {"threshold": threshold}
        if "budget" in self.space:
            values["budget"] = budget
        return self.space.mode(values)

    def full_mode(self) -> Mode:
        """The network as trained: threshold 0.5 (or the closest offered), no budget."""
        thresholds = self.space["threshold"].values
        budgets = self.space["budget"].values if "budget" in self.space else (1.0,)
        return self._mode(min(thresholds, key=lambda t: abs(t - 0.5)), max(budgets))

    def smallest_mode(self) -> Mode:
        budgets = self.space["budget"].values if "budget" in self.space else (1.0,)
        return self._mode(max(self.space["threshold"].values), min(budgets))

    def set_mode(self, mode: Mode) -> None:
        self.space.validate(mode)
        self.network.threshold = float(mode.values["threshold"])
        self.budget = float(mode.values.get("budget", 1.0))

    def describe(self, mode: Mode) -> str:
        budget = mode.values.get("budget", 1.0)
        return (f"{self.arch['gating']} gates > {mode.values['threshold']:g}, "
                + ("no budget" if budget >= 1 else f"budget {budget:.0%} of plain MACs"))

    # ---- inference -----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        decisions = self.network.forward_with_decisions(x)
        if self.budget < 1 and self.network.heads:
            logits, macs, over, index = predict_under_budget(decisions, self.budget * self.plain_macs,
                                                             self.floor_macs)
        else:
            logits, macs = decisions.exits[-1], decisions.macs
            over = torch.zeros_like(macs, dtype=torch.bool)
            index = torch.full_like(macs, len(decisions.exits) - 1, dtype=torch.long)
        if self._recording is not None and not self.training:
            self._recording.append({"macs": macs.detach(), "over": over, "exit": index,
                                    "skip": decisions.skip_ratio.detach()})
        return logits

    def mode_layout(self) -> str:
        return "gates and budget"

    @contextmanager
    def recording_costs(self) -> Iterator[list[dict[str, torch.Tensor]]]:
        """Within the block, every eval-mode forward pass appends its per-sample MACs, exit and skip
        ratio to the yielded list."""
        self._recording = []
        try:
            yield self._recording
        finally:
            self._recording = None

    def cost_profile(self, records: list[dict[str, torch.Tensor]]) -> dict:
        """Mean and distribution of the recorded per-sample costs."""
        if not records:
            raise InputError("no forward pass was recorded")
        macs = torch.cat([r["macs"] for r in records]).double()
        exits = torch.cat([r["exit"] for r in records])
        quantiles = torch.quantile(macs, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)).tolist()
        return {"samples": int(macs.numel()), "mean_macs": float(macs.mean()), "min_macs": float(macs.min()),
                "p10_macs": quantiles[0], "p50_macs": quantiles[1], "p90_macs": quantiles[2],
                "max_macs": float(macs.max()), "plain_macs": self.plain_macs,
                "skip_ratio": float(torch.cat([r["skip"] for r in records]).mean()),
                "over_budget": float(torch.cat([r["over"] for r in records]).float().mean()),
                "exits": torch.bincount(exits, minlength=len(self.network.heads) + 1).tolist()}

    # ---- static views and cost -------------------------------------------------------------------
    def materialize(self, mode: Mode) -> nn.Module:
        previous = self.mode
        self.set_mode(mode)
        try:
            network = copy.deepcopy(self.network).eval()
            budget = self.budget * self.plain_macs if self.budget < 1 and network.heads else None
            return DDIExecutor(network, budget)
        finally:
            self.set_mode(previous)

    def cost(self, mode: Mode) -> Cost:
        """The most one sample can cost in this mode (every gate open; the budget if it is lower) and
        the parameters it can touch. The evaluator stores the measured mean instead."""
        self.space.validate(mode)
        most = self.plain_macs + sum(b.layer_gate_macs + b.channel_gate_macs for b in self.network.gated_blocks)
        budget = float(mode.values.get("budget", 1.0))
        if budget < 1 and self.network.heads:
            most = min(most, int(budget * self.plain_macs))
        return Cost(int(most), sum(p.numel() for p in self.network.parameters()))

    def layers_for(self, mode: Mode) -> tuple[tuple[LayerShape, ...], dict[str, int]]:
        """The plain backbone's convolutions and classifier (what the energy model counts; the
        evaluator scales it by the measured fraction of MACs executed)."""
        shapes = []
        for index, block in enumerate(self.network.gated_blocks):
            convs = [("conv1", block.conv1, block.in_area), ("conv2", block.conv2, block.out_area)]
            down = block.downsample_conv()
            if down is not None:
                convs.append(("downsample", down, block.in_area))
            for name, conv, input_area in convs:
                kernel = conv.kernel_size[0] * conv.kernel_size[1]
                shapes.append(LayerShape(f"blocks.{index}.{name}", "conv", conv.in_channels, conv.out_channels, kernel,
                                         block.out_area, input_area, 1, None, True))
        stem = self.network.stem
        area = self.input_shape[1] * self.input_shape[2]
        shapes.insert(0, LayerShape("stem", "conv", stem.in_channels, stem.out_channels, 9, area, area, 1, None, True))
        fc = self.network.fc
        shapes.append(LayerShape("fc", "linear", fc.in_features, fc.out_features, 1, 1, 1, 1, None, True))
        return tuple(shapes), {}
