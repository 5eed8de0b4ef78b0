"""Dual dynamic inference network: gates, exact skipping, real skipping at batch 1 against the batched
masked path, per-sample cost, the alpha sign rule, and exits under a budget."""

from __future__ import annotations

import pytest
import torch

from subnetsearch.supernets import DDIResNet, resource_loss, signed_alpha
from subnetsearch.supernets._ddi_network import exit_positions, predict_under_budget
from tests.conftest import randomize_batchnorm


def _net(gating: str = "mgl2s", exits: bool = False, depth: int = 14) -> DDIResNet:
    # depth 14: two blocks per stage; layer1.0, layer1.1, layer2.1 and layer3.1 are skippable
    net = DDIResNet(depth=depth, widths=(8, 16, 16), input_size=12, num_classes=4, gating=gating, exits=exits)
    randomize_batchnorm(net)
    return net.eval()


def _open_gates_at_random(net: DDIResNet, seed: int = 0) -> None:
    """Gate biases around zero, so that some samples skip and others do not."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if net.layer_out is not None:
            net.layer_out.bias.fill_(0.0)
            net.layer_out.weight.copy_(torch.randn(net.layer_out.weight.shape, generator=generator) * 30)
        for block in net.blocks:
            if block.channel_gated:
                block.channel_fc.bias.fill_(0.0)


def test_gate_shapes_and_which_blocks_are_gated() -> None:
    net = _net()
    assert [b.skippable for b in net.blocks] == [True, True, False, True, False, True]
    assert all(b.layer_gated and b.channel_gated for b in net.blocks if b.skippable)
    x = torch.randn(5, 8, 12, 12)
    block = net.blocks[0]
    assert block.channel_probability(x).shape == (5, 8)
    probability, (hidden, cell) = net._layer_probability(block, x, None)
    assert probability.shape == (5,) and hidden.shape == cell.shape == (5, 10)
    decisions = net.forward_with_decisions(torch.randn(5, 1, 12, 12))
    assert decisions.layer.shape == decisions.channel.shape == (4, 5)  # gated blocks x samples
    with pytest.raises(ValueError, match="gating must be one of"):
        DDIResNet(gating="random")


def test_no_channel_gate_when_the_layer_is_skipped_and_a_skipped_block_passes_its_input() -> None:
    net = _net()
    with torch.no_grad():
        net.layer_out.bias.fill_(-20.0)  # every layer gate says skip
    calls = []
    for block in net.blocks:
        if block.channel_gated:
            block.channel_conv.register_forward_hook(lambda *args: calls.append(1))
    x = torch.randn(1, 1, 12, 12)
    logits, macs, _ = net.run_one(x)
    assert calls == []  # G^C is never computed for a skipped layer
    # exact skipping: with every skippable block skipped, the network is the stem + the two stage-entry blocks
    with torch.no_grad():
        h = torch.relu(net.stem_bn(net.stem(x)))
        for block in net.blocks:
            if not block.skippable:
                h = torch.relu(block.residual(h) + block.downsample(h))
        expected = net.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(h, 1), 1))
    torch.testing.assert_close(logits, expected)
    gated = [b for b in net.blocks if b.skippable]
    assert macs == net.stem_macs + sum(b.full_macs() for b in net.blocks if not b.skippable) + sum(
        b.layer_gate_macs for b in gated) + net.fc_macs


@pytest.mark.parametrize("gating", ["mgl2s", "layer", "channel", "none"])
def test_real_skipping_at_batch_one_matches_the_masked_batch(gating) -> None:
    net = _net(gating)
    _open_gates_at_random(net)
    # inputs that differ in scale and offset, so that their pooled features (what G^L sees) differ
    x = torch.randn(12, 1, 12, 12) * torch.linspace(0.2, 4, 12)[:, None, None, None] + torch.linspace(-2, 2, 12)[
        :, None, None, None]
    with torch.no_grad():
        decisions = net.forward_with_decisions(x)
    for index in range(x.shape[0]):
        logits, macs, answered = net.run_one(x[index:index + 1])
        torch.testing.assert_close(logits[0], decisions.exits[-1][index], rtol=1e-4, atol=1e-5)
        assert macs == pytest.approx(float(decisions.macs[index]), abs=1.0) and answered == 0
    if gating != "none":
        assert decisions.macs.unique().numel() > 1  # the cost really depends on the input


def test_per_sample_cost_by_hand() -> None:
    net = _net("layer", depth=8)  # one skippable block (layer1.0), 8 channels on 12x12
    block = net.blocks[0]
    assert block.conv1_macs == block.conv2_macs == 12 * 12 * 8 * 8 * 9
    assert block.layer_gate_macs == 8 * 10 + 4 * 10 * 20 + 10  # 1x1 conv, LSTM cell, output
    stem, fc = 12 * 12 * 1 * 8 * 9, 16 * 4
    stage2 = 6 * 6 * 8 * 16 * 9 + 6 * 6 * 16 * 16 * 9 + 6 * 6 * 8 * 16
    stage3 = 3 * 3 * 16 * 16 * 9 * 2 + 3 * 3 * 16 * 16
    with torch.no_grad():
        net.layer_out.bias.fill_(-20.0)
    _, skipped, _ = net.run_one(torch.randn(1, 1, 12, 12))
    assert skipped == stem + block.layer_gate_macs + stage2 + stage3 + fc
    with torch.no_grad():
        net.layer_out.bias.fill_(20.0)
    _, executed, _ = net.run_one(torch.randn(1, 1, 12, 12))
    assert executed == skipped + 2 * 12 * 12 * 8 * 8 * 9
    assert net.static_macs() == executed - block.layer_gate_macs


def test_per_sample_energy_by_hand() -> None:
    """Eq. (6) with the devices module's dataflow model and default coefficients (pJ): conv1 of the
    8->8 3x3 block on 12x12 reads its 576 weights and 1152 inputs and writes 1152 outputs once from
    DRAM and once through the cache (one register tile of 16 output channels), each of its 82944 MACs
    touching registers 3 times."""
    net = _net("layer", depth=8)
    block = net.blocks[0]
    by_hand = (576 + 1152 + 1152) * 640 + (576 + 1152 + 1152) * 50 + 3 * 82944 * 5 + 82944 * 4.6
    assert block.conv1_pj == pytest.approx(by_hand) and block.conv2_pj == pytest.approx(by_hand)
    x = torch.randn(3, 1, 12, 12)
    with torch.no_grad():
        net.layer_out.bias.fill_(-20.0)
        skipped = net.forward_with_decisions(x)
        net.layer_out.bias.fill_(20.0)
        executed = net.forward_with_decisions(x)
    assert torch.allclose(executed.energy - skipped.energy, torch.full((3,), 2 * by_hand, dtype=x.dtype))
    assert float(executed.energy[0]) == pytest.approx(net.static_energy_pj() + block.layer_gate_pj, rel=1e-6)
    assert float(resource_loss(skipped, net, "energy")) == pytest.approx(
        float(skipped.energy.mean()) / net.static_energy_pj(), rel=1e-6)
    assert float(resource_loss(skipped, net, "energy")) < float(resource_loss(executed, net, "energy"))
    with pytest.raises(ValueError, match="resource must be one of"):
        resource_loss(skipped, net, "latency")


def test_channel_skipping_computes_only_the_selected_output_channels() -> None:
    net = _net("channel", depth=8)
    block = net.blocks[0]
    with torch.no_grad():
        block.channel_fc.weight.zero_()
        block.channel_fc.bias.copy_(torch.tensor([5.0, -5, -5, 5, -5, -5, -5, 5]))  # keep channels 0, 3, 7
    x = torch.randn(1, 1, 12, 12)
    _, macs, _ = net.run_one(x)
    decisions = net.forward_with_decisions(x)
    assert decisions.channel[0, 0].item() == pytest.approx(3 / 8)
    assert macs == net.static_macs() + block.channel_gate_macs - block.conv2_macs * 5 / 8


@pytest.mark.parametrize("resource", ["macs", "energy"])
def test_the_alpha_sign_rule_drives_the_skip_ratio_to_the_target(tiny_data, resource) -> None:
    torch.manual_seed(0)
    net = DDIResNet(depth=14, widths=(8, 16, 16), input_size=12, num_classes=4, gating="layer").train()
    gates = [p for name, p in net.named_parameters() if "layer" in name and ("proj" in name or "out" in name)]
    gates += list(net.lstm.parameters())
    optimizer = torch.optim.SGD(gates, lr=0.5)
    target, ratios = 0.5, []
    for _ in range(6):
        for images, labels in tiny_data.batches(tiny_data.train, 32, shuffle=True):
            decisions = net.forward_with_decisions(images)
            ratio = float(decisions.skip_ratio.detach().mean())
            alpha = signed_alpha(5.0, ratio, target)
            loss = torch.nn.functional.cross_entropy(decisions.exits[-1], labels)
            loss = loss + alpha * resource_loss(decisions, net, resource)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            ratios.append(ratio)
    assert ratios[0] < 0.1  # gates start open (zero skipping)
    late = ratios[-8:]
    assert abs(sum(late) / len(late) - target) < 0.2, late
    assert signed_alpha(2e-4, 0.3, 0.5) == 2e-4 and signed_alpha(2e-4, 0.7, 0.5) == -2e-4


def test_exits_sit_at_a_quarter_and_three_quarters_of_each_stage() -> None:
    assert exit_positions(6) == [2, 4]  # round(1.5) = 2, round(4.5) = 4
    assert exit_positions(3) == [1, 2]
    net = DDIResNet(depth=20, widths=(8, 16, 16), input_size=12, num_classes=4, exits=True)
    assert sorted(int(k) for k in net.heads) == [0, 1, 3, 4, 6, 7]


def test_budgets_pick_the_last_exit_that_fits_and_refuse_impossible_ones() -> None:
    net = _net(exits=True)
    _open_gates_at_random(net)
    x = torch.randn(16, 1, 12, 12)
    with torch.no_grad():
        decisions = net.forward_with_decisions(x)
    floor = net.minimal_exit_macs()
    with pytest.raises(ValueError, match="below the cheapest first exit"):
        predict_under_budget(decisions, floor - 1, floor)
    everything = float(torch.stack(decisions.exit_macs).max())
    logits, spent, over, index = predict_under_budget(decisions, everything, floor)
    assert torch.equal(logits, decisions.exits[-1]) and not over.any() and bool((index == 3).all())
    middle = float(decisions.exit_macs[1].median())
    logits_middle, spent_middle, over_middle, index_middle = predict_under_budget(decisions, middle, floor)
    assert bool((spent_middle[~over_middle] <= middle).all())
    assert float(spent_middle.mean()) <= float(spent.mean())
    # one sample at a time with real halting gives the same answers and costs
    for sample in range(x.shape[0]):
        one_logits, one_macs, answered = net.run_one(x[sample:sample + 1], budget=middle)
        assert answered == int(index_middle[sample])
        torch.testing.assert_close(one_logits[0], logits_middle[sample], rtol=1e-4, atol=1e-5)
        assert one_macs == pytest.approx(float(spent_middle[sample]), abs=1.0)
