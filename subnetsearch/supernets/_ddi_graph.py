"""A DDI network as one exportable graph with real control flow: what `DDIResNet.run_one` computes for
one sample, written with `torch.cond` so that `torch.export` keeps the branches (ONNX `If` nodes,
ExecuTorch control flow) and a skipped block costs nothing on the runtime either.

- A layer gate that skips takes the `If`'s empty branch: its block's convolutions are not run.
- A channel gate that selects no channel skips the block the same way; one that selects some runs
  both convolutions in full and keeps the selected channels (a graph has static shapes: computing a
  data-dependent subset of a convolution's outputs would need dynamic shapes, which the runtimes'
  fast kernels do not take), so partial channel gating saves no time when deployed. `run_one`'s
  cost (MACs) still counts only the selected channels, as the paper does.
- The exit budget is an input (`budget`: a fraction of the plain network's MACs; >= 1 means no
  budget), not frozen into the graph: one file serves every budget, and inference halts at the exit
  `run_one` would answer from (every later block takes the empty branch of its `If`; only the layer
  gates' small computations still run).

Outputs: the logits (1 x classes), the cost of the answer as a fraction of the plain network's MACs,
and which exit answered (0-based; the last is the final classifier), each as `run_one` gives them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from subnetsearch.supernets._ddi_network import HIDDEN, DDIResNet, GatedBlock

Carry = tuple[torch.Tensor, ...]


class GatedGraph(nn.Module):
    """`network` (eval mode, its threshold fixed) as a batch-1 graph with control flow:
    `forward(x, budget) -> (logits, cost, exit)`."""

    def __init__(self, network: DDIResNet) -> None:
        super().__init__()
        self.network = network.eval()
        self.threshold = float(network.threshold)
        self.plain = float(network.static_macs())
        self.exits = len(network.heads)

    def _fraction(self, macs: float) -> float:
        return macs / self.plain

    # The graph is flat (one `If` per gated block, none nested in another's branch: tracing nested
    # conds grows with their depth). Halting is a flag: once set, every later block, exit and the
    # classifier take their empty branches. The layer gates' own small work (pooling, a 1x1 conv, the
    # LSTM cell) still runs after a halt, where `run_one` returns at once: the price of a flat graph.
    def forward(self, x: torch.Tensor, budget: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        net = self.network
        x = F.relu(net.stem_bn(net.stem(x)))
        cost = torch.full((1,), self._fraction(net.stem_macs), dtype=x.dtype)
        h, c = x.new_zeros(1, HIDDEN), x.new_zeros(1, HIDDEN)
        answer = x.new_zeros(1, net.num_classes)
        answer_cost, answer_exit = x.new_zeros(1), x.new_zeros(1)
        has_answer = torch.zeros(1, dtype=torch.bool)
        halted = torch.zeros(1, dtype=torch.bool)
        limit = budget.reshape(1).to(x.dtype)
        limited = limit < 1
        exit_index = 0
        for index, block in enumerate(net.gated_blocks):
            if exit_index:  # run_one halts before a block once an answer exists and the cost exceeds the budget
                halted = halted | (has_answer & limited & (cost > limit))
            x, cost, h, c = self._block(block, x, cost, h, c, halted if exit_index else None)
            head = net.head(index)
            if head is None:
                continue
            with_head = cost + self._fraction(head.macs)
            take = ~halted & limited & (~has_answer | (with_head <= limit))  # run_one answers here

            def ask(x: torch.Tensor, answer: torch.Tensor, head: nn.Module = head) -> torch.Tensor:
                return head(x)

            answer = torch.cond(take.reshape(()), ask, _keep, (x, answer))
            answer_cost = torch.where(take, with_head, answer_cost)
            answer_exit = torch.where(take, torch.full_like(answer_exit, exit_index), answer_exit)
            has_answer = has_answer | take
            exit_index += 1
        final_cost = cost + self._fraction(net.fc_macs)
        if exit_index:
            halted = halted | (has_answer & limited & (final_cost > limit))
        else:
            return net.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)), final_cost, \
                torch.full((1,), self.exits, dtype=torch.int64)

        def classify(x: torch.Tensor, answer: torch.Tensor) -> torch.Tensor:
            return net.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

        logits = torch.cond(halted.reshape(()), _keep, classify, (x, answer))
        cost_out = torch.where(halted, answer_cost, final_cost)
        exit_out = torch.where(halted, answer_exit, torch.full_like(answer_exit, self.exits))
        return logits, cost_out, exit_out.to(torch.int64)

    def _block(self, block: GatedBlock, x: torch.Tensor, cost: torch.Tensor, h: torch.Tensor, c: torch.Tensor,
               halted: torch.Tensor | None) -> Carry:
        """One block: run (the If's compute branch) unless halted or its layer gate skips it."""
        net = self.network
        if not block.skippable:
            full = self._fraction(block.full_macs())

            def run(x: torch.Tensor, cost: torch.Tensor) -> Carry:
                return F.relu(block.residual(x) + block.shortcut(x)), cost + full

            if halted is None:
                x, cost = run(x, cost)
                return x, cost, h, c
            stride = block.conv1.stride[0]
            shape = (1, block.out_channels, (x.shape[2] - 1) // stride + 1, (x.shape[3] - 1) // stride + 1)

            def halted_(x: torch.Tensor, cost: torch.Tensor) -> Carry:  # nothing computed: the answer is kept
                return x.new_zeros(shape), cost.clone()

            x, cost = _cond(~halted, run, halted_, (x, cost))
            return x, cost, h, c
        open_ = None if halted is None else ~halted
        if block.layer_gated:
            if net.lstm is None or net.layer_out is None:
                raise AssertionError("a layer-gated block in a network without its LSTM")
            features = block.layer_proj(F.adaptive_avg_pool2d(x, 1)).flatten(1)
            h, c = net.lstm(features, (h, c))
            gate = torch.sigmoid(net.layer_out(h)).reshape(1) > self.threshold
            cost = cost + self._fraction(block.layer_gate_macs)
            open_ = gate if open_ is None else open_ & gate
        if open_ is None:
            x, cost = self._body(block)(x, cost)
        else:
            x, cost = _cond(open_, self._body(block), _skip, (x, cost))
        return x, cost, h, c

    def _body(self, block: GatedBlock) -> Callable[[torch.Tensor, torch.Tensor], Carry]:
        """The block once its layer gate let it run (with a channel gate: only if a channel is selected)."""
        full = self._fraction(block.conv1_macs + block.conv2_macs)

        def run(x: torch.Tensor, cost: torch.Tensor) -> Carry:
            return F.relu(x + block.residual(x)), cost + full

        if not block.channel_gated:
            return run
        conv1, conv2 = self._fraction(block.conv1_macs), self._fraction(block.conv2_macs)
        gate = self._fraction(block.channel_gate_macs)

        def gated(x: torch.Tensor, cost: torch.Tensor) -> Carry:
            mask = (block.channel_probability(x) > self.threshold).to(x.dtype)  # 1 x C
            selected = mask.sum(1)

            def masked(x: torch.Tensor, cost: torch.Tensor, mask: torch.Tensor, selected: torch.Tensor) -> Carry:
                m = mask[:, :, None, None]
                out = F.relu(x + block.residual(x))
                return m * out + (1 - m) * x, cost + conv1 + conv2 * selected / block.out_channels

            def none(x: torch.Tensor, cost: torch.Tensor, mask: torch.Tensor, selected: torch.Tensor) -> Carry:
                return x.clone(), cost.clone()

            return _cond(selected > 0, masked, none, (x, cost + gate, mask, selected))

        return gated


def _keep(x: torch.Tensor, answer: torch.Tensor) -> torch.Tensor:
    return answer.clone()


def _skip(x: torch.Tensor, cost: torch.Tensor) -> Carry:
    return x.clone(), cost.clone()


def _cond(predicate: torch.Tensor, true_fn: Callable[..., Carry], false_fn: Callable[..., Carry],
          operands: Carry) -> Carry:
    """`torch.cond` on a one-element boolean, returning a tuple."""
    return tuple(torch.cond(predicate.reshape(()), true_fn, false_fn, operands))
