"""A DDI network exported with real control flow (torch.cond -> ONNX If) answers every input as
`run_one` does: the same logits, the same cost and the same exit, for every budget fed to the one
file; a skipped block is an If branch that computes nothing."""

from __future__ import annotations

import onnx
import onnxruntime
import pytest
import torch

from subnetsearch.devices import get_runtime
from subnetsearch.devices.runtimes._onnxruntime import CONTROL_FLOW_OUTPUTS, export_onnx_control_flow
from subnetsearch.errors import ExportError
from subnetsearch.supernets._ddi_graph import GatedGraph
from subnetsearch.supernets._ddi_network import GATINGS, DDIResNet
from tests.conftest import randomize_batchnorm

BUDGETS = (1.0, 0.8, 0.6, 0.45)


def _network(gating: str, exits: bool, seed: int = 0) -> DDIResNet:
    torch.manual_seed(seed)
    net = DDIResNet(14, (8, 16, 16), 1, 4, 12, gating, exits)
    randomize_batchnorm(net, seed)
    with torch.no_grad():  # gates that decide differently for different samples
        if net.layer_out is not None:
            net.layer_out.bias.fill_(0.0)
            net.layer_out.weight.normal_(0, 30)
        for block in net.gated_blocks:
            if block.channel_gated:
                block.channel_fc.bias.normal_(0, 1.5)
    return net.eval()


def _session(net: DDIResNet) -> onnxruntime.InferenceSession:
    onnx_bytes = export_onnx_control_flow(GatedGraph(net), (torch.rand(1, 1, 12, 12), torch.ones(1)),
                                          {"budget": 0.6}, CONTROL_FLOW_OUTPUTS)
    return onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])


def _check_equal(net: DDIResNet, session: onnxruntime.InferenceSession, samples: int = 12) -> dict:
    """Every sample at every budget: the file's answer is run_one's. Returns what was seen."""
    plain = net.static_macs()
    seen: dict = {"exits": set(), "costs": set()}
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(samples):
            x = torch.randn(1, 1, 12, 12, generator=generator)
            for budget in BUDGETS if net.heads else (1.0,):
                logits, macs, exit_ = net.run_one(x, budget * plain if budget < 1 else None)
                out_logits, cost, out_exit = session.run(None, {"input": x.numpy(), "budget": [budget]})
                torch.testing.assert_close(torch.from_numpy(out_logits), logits, rtol=1e-5, atol=1e-5)
                assert cost[0] == pytest.approx(macs / plain, rel=1e-5) and int(out_exit[0]) == exit_
                seen["exits"].add(exit_)
                seen["costs"].add(round(macs / plain, 4))
    return seen


def test_gated_network_exports_with_if_nodes_that_answer_as_run_one() -> None:
    net = _network("mgl2s", exits=True)
    session = _session(net)
    seen = _check_equal(net, session)
    assert len(seen["exits"]) > 1 and len(seen["costs"]) > 2  # the inputs and budgets decided differently
    assert [i.name for i in session.get_inputs()] == ["input", "budget"]  # one file, every budget


@pytest.mark.slow
@pytest.mark.parametrize("gating", GATINGS)
@pytest.mark.parametrize("exits", [False, True])
def test_every_gating_with_and_without_exits(gating: str, exits: bool) -> None:
    net = _network(gating, exits, seed=2)
    session = _session(net)
    _check_equal(net, session, samples=6)


def test_a_skipped_block_is_an_if_branch() -> None:
    net = _network("layer", exits=False)
    onnx_bytes = export_onnx_control_flow(GatedGraph(net), (torch.rand(1, 1, 12, 12), torch.ones(1)), {"budget": 1.0},
                                          CONTROL_FLOW_OUTPUTS)
    graph = onnx.load_from_string(onnx_bytes).graph
    skippable = sum(block.skippable for block in net.gated_blocks)
    assert sum(node.op_type == "If" for node in graph.node) == skippable  # one per gated block, none nested
    for node in graph.node:
        if node.op_type == "If":
            branches = {a.name: {n.op_type for n in a.g.node} for a in node.attribute}
            assert any("Conv" in ops for ops in branches.values())  # the block's work ...
            assert any("Conv" not in ops for ops in branches.values())  # ... only in the branch that runs it


def test_executorch_refuses_the_control_flow_with_the_reason() -> None:
    runtime = get_runtime("executorch")
    with pytest.raises(ExportError, match="ExecuTorch cannot run this network's control flow"):
        runtime.save_control_flow(GatedGraph(_network("mgl2s", True)), (torch.rand(1, 1, 12, 12), torch.ones(1)),
                                  {"budget": 1.0}, {})
