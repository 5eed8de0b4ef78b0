"""The nested-width family beyond the contract suite (tests/supernets/test_contract.py): its knobs,
sorting channels by importance (the full network unchanged, the order then stable), and training a
full network alone, then the nested supernet started from it with its channels sorted; growing a
trained supernet to wider stages (function preserving)."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from subnetsearch.cli import app
from subnetsearch.data import DataSpec, load_data
from subnetsearch.supernets import NestedSupernet, build_supernet, load_checkpoint
from subnetsearch.trainers import TrainJob, get_trainer
from tests.conftest import randomize_batchnorm

ARCH = {"family": "nested-cifar-resnet", "depth": 14, "widths": [8, 16, 16], "in_channels": 1, "num_classes": 4,
        "input_size": 12}
runner = CliRunner()


def test_knobs_are_nested_widths_per_stage_and_block_and_half_width_is_a_quarter_of_the_macs() -> None:
    supernet = build_supernet(ARCH)
    assert isinstance(supernet, NestedSupernet)
    names = [knob.name for knob in supernet.space.knobs]
    assert names == ["stage1", "stage2", "stage3", "layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0",
                     "layer3.1"]
    assert supernet.space.knobs[1].values == (16, 12, 8, 4)
    half = supernet.mode_named("width:0.5")
    assert half is not None and set(half.values.values()) == {4, 8}
    full, narrow = supernet.cost(supernet.full_mode()).macs, supernet.cost(half).macs
    assert 0.2 < narrow / full < 0.3  # MACs go with the square of the width
    assert [m.values["stage1"] for m in supernet.uniform_modes()] == [6, 4]  # between full and smallest
    with pytest.raises(ValueError, match="no width ratio 0.3"):
        supernet.mode_named("width:0.3")


def test_sorting_channels_keeps_the_full_network_and_puts_the_important_channels_first() -> None:
    torch.manual_seed(0)
    supernet = build_supernet(ARCH).eval()
    assert isinstance(supernet, NestedSupernet)
    randomize_batchnorm(supernet)
    images = torch.randn(6, 1, 12, 12)
    with torch.no_grad():
        before = supernet(images)
        orders = supernet.sort_channels()
        after = supernet(images)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    assert any(order != sorted(order) for order in orders.values())  # random weights were not in order
    again = supernet.sort_channels()  # sorted now: every knob's order is the identity
    assert all(order == list(range(len(order))) for order in again.values())


@pytest.mark.parametrize("widths", [(12, 16, 16), (8, 24, 32), (16, 32, 32), (8, 32, 32)])
def test_growing_keeps_the_function_and_makes_the_trained_network_a_mode_of_the_wider_one(widths) -> None:
    torch.manual_seed(0)
    supernet = build_supernet(ARCH).eval()
    assert isinstance(supernet, NestedSupernet)
    randomize_batchnorm(supernet)
    for module in supernet.modules():  # large weights everywhere, so a read of an added channel would show
        if isinstance(module, torch.nn.Conv2d | torch.nn.Linear):
            torch.nn.init.normal_(module.weight, std=0.3)
    images = torch.randn(6, 1, 12, 12)
    trained_widths = {knob.name: knob.values[0] for knob in supernet.space.knobs}
    with torch.no_grad():
        before = supernet(images)
        wider = supernet.grown(widths).eval()
        assert list(wider.arch["widths"]) == list(widths) and wider.full_mode().values["stage3"] == widths[2]
        assert wider.arch["ratios"] == supernet.arch["ratios"]
        for name, tensor in supernet.state_dict().items():  # the trained weights are the prefix
            grown = wider.state_dict()[name]
            torch.testing.assert_close(grown[tuple(slice(0, n) for n in tensor.shape)] if tensor.dim() else grown,
                                       tensor, msg=name)
        # the wider full network computes the trained one's function (the added channels are read by
        # zero weights), and where the trained widths are among the wider one's (16 = 1/2 of 32), the
        # trained network is the wider one's mode at them
        torch.testing.assert_close(wider(images), before, rtol=1e-5, atol=1e-5)
        offered = all(trained_widths[knob.name] in knob.values for knob in wider.space.knobs)
        assert offered == (widths in ((16, 32, 32), (8, 32, 32)))
        if offered:
            wider.set_mode(wider.space.mode(trained_widths))
            torch.testing.assert_close(wider(images), before, rtol=1e-5, atol=1e-5)
            wider.set_mode(wider.full_mode())


def test_growing_to_narrower_or_ill_formed_widths_is_refused() -> None:
    supernet = build_supernet(ARCH)
    assert isinstance(supernet, NestedSupernet)
    for widths in ([8, 8, 16], [8, 16], [4, 16, 16]):
        with pytest.raises(ValueError, match=r"each at least this supernet's \[8, 16, 16\]"):
            supernet.grown(widths)


@pytest.mark.slow
def test_train_the_full_network_then_the_nested_supernet_from_it(tmp_path) -> None:
    quick = ["--family", "nested", "--data", "synthetic", "--batch-size", "32", "--epochs", "1",
             "--max-steps-per-epoch", "3", "--threads", "1"]
    full = runner.invoke(app, ["train", *quick, "--depth", "8", "--widths", "8,16,16", "--fixed-mode", "full",
                               "--out", str(tmp_path / "full")])
    assert full.exit_code == 0, full.output
    nested = runner.invoke(app, ["train", *quick, "--start", str(tmp_path / "full" / "supernet.pt"),
                                 "--out", str(tmp_path / "nested")])
    assert nested.exit_code == 0, nested.output
    assert "channels sorted by importance" in nested.output
    state = load_checkpoint(tmp_path / "nested" / "supernet.pt")
    assert "(channels sorted)" in state.recipe["init"] and state.arch["widths"] == [8, 16, 16]
    # a nested supernet trains on (a fine-tuning schedule) in the nesting order it already has
    again = runner.invoke(app, ["train", *quick, "--start", str(tmp_path / "nested" / "supernet.pt"),
                                "--out", str(tmp_path / "again")])
    assert again.exit_code == 0, again.output
    assert "training on in its nesting order" in again.output
    assert "(nesting order kept)" in load_checkpoint(tmp_path / "again" / "supernet.pt").recipe["init"]
    job = TrainJob(DataSpec(name="synthetic"), tmp_path / "unused", 1, 32,
                   options={"start": tmp_path / "nested" / "supernet.pt"})
    started = get_trainer("nested").build(job, load_data(DataSpec(name="synthetic")))
    for name, tensor in state.state_dict.items():  # the weights it starts from: no channel moved
        torch.testing.assert_close(started.state_dict()[name], tensor, msg=name)
    refused = runner.invoke(app, ["train", *quick, "--start", str(tmp_path / "full" / "supernet.pt"), "--depth", "8",
                                  "--out", str(tmp_path / "x")])
    assert refused.exit_code == 2 and "--start brings its own architecture" in refused.output
    # --widths wider than the start's grows it first (the shipped default was made so)
    grown = runner.invoke(app, ["train", *quick, "--start", str(tmp_path / "nested" / "supernet.pt"),
                                "--widths", "16,32,32", "--out", str(tmp_path / "grown")])
    assert grown.exit_code == 0, grown.output
    assert "grown from widths 8-16-16 to 16-32-32" in grown.output
    wide = load_checkpoint(tmp_path / "grown" / "supernet.pt")
    assert wide.arch["widths"] == [16, 32, 32] and "grown from widths 8-16-16" in wide.recipe["init"]
    narrower = runner.invoke(app, ["train", *quick, "--start", str(tmp_path / "nested" / "supernet.pt"),
                                   "--widths", "4,16,16", "--out", str(tmp_path / "narrower")])
    assert narrower.exit_code == 2 and "each at least this supernet's [8, 16, 16]" in narrower.output
    assert not (tmp_path / "narrower" / "supernet.pt").exists()


GROUPED = {"family": "nested-cifar-resnet", "depth": 8, "widths": [16, 32, 64], "in_channels": 1, "num_classes": 4,
           "input_size": 12, "ratios": [1.0, 0.5, 0.25], "group_choices": [1, 2, 4]}


def test_width_and_groups_combine_in_one_layer_exactly_on_random_modes() -> None:
    from subnetsearch.devices import export_onnx
    from tests.supernets.test_converter_zoo import hook_macs

    supernet = build_supernet(GROUPED).eval()
    randomize_batchnorm(supernet)
    assert supernet.group_knobs == ("layer1.0.groups1", "layer1.0.groups2", "layer2.0.groups1", "layer2.0.groups2",
                                    "layer3.0.groups1", "layer3.0.groups2")
    generator, x = torch.Generator().manual_seed(0), torch.randn(2, 1, 12, 12)
    modes = [supernet.random_mode(generator) for _ in range(6)] + [supernet.smallest_mode()]
    assert any(supernet.kind_of(m) == "width+groups" for m in modes)
    for mode in modes:
        supernet.set_mode(mode)
        static = supernet.materialize(mode)
        with torch.no_grad():
            torch.testing.assert_close(static(x), supernet(x), rtol=1e-4, atol=1e-5)
        assert supernet.cost(mode).macs == hook_macs(static, x[:1])
        grouped = {m.groups for m in static.modules() if isinstance(m, torch.nn.Conv2d)}
        assert grouped == {1} | {int(mode.values[k]) for k in supernet.group_knobs}  # real grouped kernels
    import onnxruntime

    session = onnxruntime.InferenceSession(export_onnx(static, x[:1]), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = static(x[:1])
    torch.testing.assert_close(torch.from_numpy(session.run(None, {"input": x[:1].numpy()})[0]), expected,
                               rtol=1e-4, atol=1e-4)
    # one layer narrower and grouped: a quarter of the channels in 4 groups costs 1/64 of the full conv
    full, small = supernet.full_mode(), supernet.smallest_mode()
    conv = {layer.name: layer for layer in supernet.layers_for(small)[0]}["blocks.0.conv1"]
    assert (conv.out_channels, conv.fixed_groups) == (4, 4)
    assert supernet.kind_of(supernet.groups_mode(2)) == "groups" and supernet.kind_of(full) == "full"
    assert supernet.describe(supernet.groups_mode(4)) == "all 1; groups 4/4 | 4/4 | 4/4"
    assert {"groups:2", "groups:4", "width:0.5"} <= set(supernet.named_modes())


def test_a_group_count_that_does_not_divide_a_width_is_refused_when_built() -> None:
    from subnetsearch.supernets import ArchError

    with pytest.raises(ArchError, match=r"group count 4 does not divide width 2 of stage1"):
        build_supernet({**GROUPED, "widths": [8, 16, 32]})
    with pytest.raises(ArchError, match="1 among them"):
        build_supernet({**GROUPED, "group_choices": [2, 4]})
    old = build_supernet({k: v for k, v in GROUPED.items() if k != "group_choices"})
    assert not old.group_knobs and "group_choices" not in old.arch  # what older checkpoints build, unchanged


@pytest.mark.slow
def test_train_a_width_and_groups_supernet_then_search_and_export_it(tmp_path) -> None:
    import onnxruntime

    out = tmp_path / "wg"
    quick = ["--family", "nested", "--data", "synthetic", "--batch-size", "32", "--epochs", "1",
             "--max-steps-per-epoch", "3", "--threads", "1", "--depth", "8", "--widths", "16,32,32",
             "--ratios", "1,0.5,0.25"]
    bad = runner.invoke(app, ["train", *quick, "--groups", "1,3", "--out", str(out)])
    assert bad.exit_code == 2 and "group count 3 does not divide" in " ".join(bad.output.split()), bad.output
    assert not (out / "supernet.pt").exists()
    trained = runner.invoke(app, ["train", *quick, "--groups", "1,2,4", "--out", str(out)])
    assert trained.exit_code == 0, trained.output
    supernet = load_checkpoint(out / "supernet.pt").build()
    assert supernet.group_knobs and supernet.arch["group_choices"] == [1, 2, 4]
    storage = f"sqlite:///{tmp_path / 'store.db'}"
    search = runner.invoke(app, ["search", "--checkpoint", str(out / "supernet.pt"), "--strategy", "optuna",
                                 "--sampler", "random", "--trials", "4", "--objectives", "accuracy,macs",
                                 "--storage", storage])
    assert search.exit_code == 0, search.output
    best = runner.invoke(app, ["best", "--storage", storage, "--objective", "macs", "-o", str(tmp_path / "m.onnx")])
    assert best.exit_code == 0, best.output
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"))
    assert session.run(None, {"input": torch.rand(1, 1, 12, 12).numpy() * 255})[0].shape == (1, 4)
