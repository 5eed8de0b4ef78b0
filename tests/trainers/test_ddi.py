"""DDI training phases: gates-only with a frozen backbone, joint training toward a skip target, and
exits trained with the summed losses."""

from __future__ import annotations

import pytest
import torch

from subnetsearch.supernets import DDIResNet
from subnetsearch.trainers import DDIPhase, copy_backbone, train_phase
from subnetsearch.trainers._ddi import evaluate_skipping, gate_parameters, head_parameters


def _net(gating: str = "mgl2s", exits: bool = False) -> DDIResNet:
    return DDIResNet(depth=14, widths=(8, 16, 16), input_size=12, num_classes=4, gating=gating, exits=exits)


def test_two_step_iadi_then_radi(tiny_data) -> None:
    plain = _net("none")
    train_phase(plain, tiny_data, DDIPhase(epochs=1, batch_size=32, augment=False))
    gated = _net("mgl2s", exits=True)
    copy_backbone(plain, gated)
    torch.testing.assert_close(gated.stem.weight, plain.stem.weight)
    backbone = {name: value.clone() for name, value in gated.state_dict().items()
                if not any(part in name for part in ("layer_proj", "channel", "lstm", "layer_out", "heads"))}
    gates_before = [p.clone() for p in gate_parameters(gated)]
    # step 1: gates only, toward zero skipping; the backbone (weights and BN statistics) does not move
    history = train_phase(gated, tiny_data, DDIPhase(epochs=2, batch_size=32, train="gates", target=0.0,
                                                     augment=False))
    after = gated.state_dict()
    assert all(torch.equal(after[name], value) for name, value in backbone.items())
    assert any(not torch.equal(a, b) for a, b in zip(gates_before, gate_parameters(gated), strict=True))
    assert history[-1]["train_skip_ratio"] < 0.1
    # step 2: jointly toward a 50 % skip target: the skip ratio moves up from zero
    history = train_phase(gated, tiny_data, DDIPhase(epochs=4, batch_size=32, target=0.5, alpha=5.0, augment=False))
    assert history[-1]["train_skip_ratio"] > 0.2
    # RADI: exits trained with the summed losses
    heads_before = [p.clone() for p in head_parameters(gated)]
    train_phase(gated, tiny_data, DDIPhase(epochs=1, batch_size=32, target=0.5, exits=True, augment=False))
    assert all(not torch.equal(a, b) for a, b in zip(heads_before, head_parameters(gated), strict=True))
    assert all(p.requires_grad for p in gated.parameters())  # nothing left frozen


@pytest.mark.parametrize("fields, message", [
    ({"train": "backbone"}, "train must be all or gates"),
    ({"target": 1.0}, r"target must be in \[0, 1\)"),
    ({"epochs": 0}, "epochs must be >= 1"),
])
def test_bad_phases_are_refused(fields, message) -> None:
    with pytest.raises(ValueError, match=message):
        DDIPhase(**fields)


def test_phases_that_cannot_apply_are_refused(tiny_data) -> None:
    with pytest.raises(ValueError, match="has no gates to train"):
        train_phase(_net("none"), tiny_data, DDIPhase(train="gates"))
    with pytest.raises(ValueError, match="no exits to train"):
        train_phase(_net("layer"), tiny_data, DDIPhase(exits=True))


@pytest.mark.parametrize("gating", ["layer", "mgl2s"])
def test_the_exits_phase_keeps_the_skipping_of_the_joint_phase(tiny_data, gating) -> None:
    """At evaluation (hard gates), not only in training: with alpha weighed against one of Eq. (4)'s
    summed losses, the layer-gated network skipped 0.02 of its blocks after the exits phase (0.25 now)."""
    plain = _net("none")
    train_phase(plain, tiny_data, DDIPhase(epochs=1, batch_size=32, augment=False))
    gated = _net(gating, exits=True)
    copy_backbone(plain, gated)
    train_phase(gated, tiny_data, DDIPhase(epochs=2, batch_size=32, train="gates", target=0.0, augment=False))
    train_phase(gated, tiny_data, DDIPhase(epochs=4, batch_size=32, target=0.5, alpha=5.0, augment=False))
    assert evaluate_skipping(gated, tiny_data, tiny_data.val)["skip_ratio"] > 0.4
    train_phase(gated, tiny_data, DDIPhase(epochs=2, batch_size=32, target=0.5, exits=True, augment=False))
    assert evaluate_skipping(gated, tiny_data, tiny_data.val)["skip_ratio"] > 0.15


def test_evaluation_skipping_is_what_the_hard_gates_decide(tiny_data) -> None:
    gated = _net("layer")
    opened = evaluate_skipping(gated, tiny_data, tiny_data.val)
    layer_out = [m for name, m in gated.named_modules() if name.split(".")[-1] == "layer_out"]
    assert layer_out, "the layer gates' output layer"
    with torch.no_grad():
        for module in layer_out:  # every layer gate says skip, whatever the input
            module.weight.zero_()
            module.bias.fill_(-10.0)
    closed = evaluate_skipping(gated, tiny_data, tiny_data.val)
    assert closed["skip_ratio"] == 1.0 and closed["relative_macs"] < opened["relative_macs"]
    assert gated.training  # restored
