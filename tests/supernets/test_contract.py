"""The supernet contract (`BaseSupernet`), checked for every registered family with a tiny
architecture each. A new family gets this suite by registering and adding its tiny architecture to
TINY (the first test fails until it does)."""

from __future__ import annotations

import pytest
import torch

from subnetsearch.spaces import Mode, ModeError
from subnetsearch.supernets import (
    FAMILIES,
    BaseSupernet,
    Realization,
    build_supernet,
    load_checkpoint,
    register_family,
    save_checkpoint,
)
from subnetsearch.supernets._lasso import full_channels
from tests.conftest import TINY_ARCH
from tests.supernets.test_converter_zoo import hook_macs
from tests.supernets.toy_family import TOY_ARCH

_FULL = full_channels(8, [8, 16, 16])
TINY = {
    "wenet-cifar-resnet": TINY_ARCH,
    "wenet-torchvision": {"family": "wenet-torchvision", "model": "resnet18", "num_classes": 4, "input_size": 32,
                          "group_choices": [1, 2, 4]},
    # group counts and widths in one supernet (a conv-BN body, an MLP head)
    "wenet-module": {"family": "wenet-module", "factory": "tests.supernets.user_models:cnn_with_mlp", "num_classes": 4,
                     "input_size": 12, "in_channels": 1, "group_choices": [1, 2, 4], "width_ratios": [1.0, 0.5, 0.25]},
    "lasso-cifar-resnet": {"family": "lasso-cifar-resnet", "depth": 8, "widths": [8, 16, 16], "in_channels": 1,
                           "num_classes": 4, "input_size": 12,
                           "subnets": [{"name": "three-quarters", "channels": [max(1, c * 3 // 4) for c in _FULL]},
                                       {"name": "half", "channels": [max(1, c // 2) for c in _FULL]}]},
    "ddi-cifar-resnet": {"family": "ddi-cifar-resnet", "depth": 8, "widths": [8, 16, 16], "in_channels": 1,
                         "num_classes": 4, "input_size": 12, "gating": "mgl2s", "exits": False},
    "nested-cifar-resnet": {"family": "nested-cifar-resnet", "depth": 8, "widths": [8, 16, 16], "in_channels": 1,
                            "num_classes": 4, "input_size": 12, "ratios": [1.0, 0.5, 0.25],
                            "group_choices": [1, 2]},  # widths and group counts, in one layer
    "toy-mlp": TOY_ARCH,
}


@pytest.fixture(scope="module", autouse=True)
def _toy_registered(toy_family: str) -> None:
    """The toy fourth family, registered for this module's tests only (see tests/conftest.py)."""


def test_every_registered_family_is_in_the_contract_suite() -> None:
    assert sorted(FAMILIES) == sorted(TINY)


def _randomized(arch: dict) -> BaseSupernet:
    """A tiny supernet with random BN statistics and affine parameters (else BN is nearly the
    identity and equivalences cannot fail), in eval mode."""
    torch.manual_seed(0)
    supernet = build_supernet(arch)
    for module in supernet.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            if module.affine:
                module.weight.data.uniform_(0.5, 1.5)
                module.bias.data.uniform_(-0.2, 0.2)
    return supernet.eval()


@pytest.fixture(params=sorted(TINY), scope="module")
def supernet(request) -> BaseSupernet:
    return _randomized(TINY[request.param])


def _modes(supernet: BaseSupernet) -> list[Mode]:
    generator = torch.Generator().manual_seed(1)
    return [*supernet.named_modes().values(), *(supernet.random_mode(generator) for _ in range(3))]


def test_modes_are_valid_and_named(supernet) -> None:
    assert isinstance(supernet, BaseSupernet) and supernet.arch["family"] in FAMILIES
    for mode in _modes(supernet):
        supernet.space.validate(mode)
    assert supernet.mode_named("full") == supernet.full_mode()
    assert supernet.mode_named("smallest") == supernet.smallest_mode()
    assert supernet.mode_named("no-such-name") is None
    assert supernet.cost(supernet.smallest_mode()).macs <= supernet.cost(supernet.full_mode()).macs


def test_bad_modes_are_refused_and_change_nothing(supernet) -> None:
    supernet.set_mode(supernet.smallest_mode())
    knob = supernet.space.knobs[0]
    bad = Mode({**supernet.full_mode().values, knob.name: "not-a-value"}, supernet.space.id)
    with pytest.raises(ModeError):
        supernet.set_mode(bad)
    foreign = Mode(dict(supernet.full_mode().values), "another-space")
    with pytest.raises(ModeError, match="another supernet|not to this space"):
        supernet.set_mode(foreign)
    assert supernet.mode == supernet.smallest_mode()  # unchanged by both refusals
    with pytest.raises(ModeError):
        supernet.cost(foreign)


def test_materialize_computes_the_mode_and_keeps_the_active_one(supernet) -> None:
    x = torch.randn(4, *supernet.input_shape, generator=torch.Generator().manual_seed(2))
    supernet.set_mode(supernet.full_mode())
    for mode in _modes(supernet):
        static = supernet.materialize(mode)
        assert supernet.mode == supernet.full_mode()  # materialize leaves the active mode
        assert not any(p.data_ptr() == q.data_ptr() for p in static.parameters() for q in supernet.parameters())
        supernet.set_mode(mode)
        with torch.no_grad():
            expected = supernet(x)
            torch.testing.assert_close(static.eval()(x), expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
        supernet.set_mode(supernet.full_mode())


def test_every_realization_computes_the_mode_and_keeps_the_active_one(supernet) -> None:
    """Grouped layers computed by dense equivalents (any subset, the shuffles next to them folded)
    give the plain materialization's outputs; a family without grouped layers has none to change."""
    x = torch.randn(4, *supernet.input_shape, generator=torch.Generator().manual_seed(3))
    generator = torch.Generator().manual_seed(4)
    supernet.set_mode(supernet.full_mode())
    for mode in _modes(supernet):
        grouped = supernet.grouped_layers(mode)
        if not grouped:
            with pytest.raises(ValueError):
                supernet.realize(mode, Realization(("no-such-layer",)))
            continue
        keep = torch.rand(len(grouped), generator=generator) < 0.5
        for realization in (Realization(grouped), Realization(tuple(n for n, k in zip(grouped, keep, strict=True)
                                                                      if k))):
            with torch.no_grad():
                expected = supernet.materialize(mode)(x)
                realized = supernet.realize(mode, realization)
                torch.testing.assert_close(realized(x), expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
            assert supernet.mode == supernet.full_mode()
        def grouped_convs(model: torch.nn.Module) -> list[torch.nn.Conv2d]:  # depthwise ones are not switchable
            return [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and 1 < m.groups < m.in_channels]

        def shuffles(model: torch.nn.Module) -> int:
            return sum(type(m).__name__ == "ChannelShuffle" for m in model.modules())

        dense = supernet.realize(mode, Realization(grouped))
        assert grouped_convs(supernet.materialize(mode)) and not grouped_convs(dense)
        assert shuffles(dense) == 0  # every shuffle sits next to a dense conv now, so it folds away
    assert any(supernet.grouped_layers(m) for m in _modes(supernet)) == (supernet.family == "wenet")


def test_cost_is_pure_and_matches_what_runs(supernet) -> None:
    x = torch.randn(1, *supernet.input_shape)
    for mode in _modes(supernet):
        first = supernet.cost(mode)
        assert supernet.cost(mode) == first  # pure
        if supernet.dynamic_cost:  # the most one sample can cost; evaluated samples cost no more
            supernet.set_mode(mode)
            with supernet.recording_costs() as records, torch.no_grad():
                supernet(x.repeat(3, 1, 1, 1))
            profile = supernet.cost_profile(records)
            assert profile["samples"] == 3 and profile["max_macs"] <= first.macs
        else:
            assert supernet.cost_profile([]) is None
            assert hook_macs(supernet.materialize(mode), x) == first.macs


def test_checkpoint_round_trip(supernet, tmp_path) -> None:
    mode = supernet.smallest_mode()
    digest = save_checkpoint(tmp_path / "net.pt", supernet, {"epochs": 0}, {"name": "synthetic"}, {})
    loaded = load_checkpoint(tmp_path / "net.pt")
    rebuilt = loaded.build()
    assert loaded.hash == digest and type(rebuilt) is type(supernet) and rebuilt.space.id == supernet.space.id
    x = torch.randn(2, *supernet.input_shape)
    supernet.set_mode(mode)
    rebuilt.set_mode(mode)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), supernet(x))
    supernet.set_mode(supernet.full_mode())


def test_register_family_refuses_a_taken_name() -> None:
    with pytest.raises(ValueError, match="registered already"):
        register_family("wenet-cifar-resnet", lambda arch: build_supernet(TINY_ARCH))
    with pytest.raises(ValueError, match="non-empty string"):
        register_family("", lambda arch: build_supernet(TINY_ARCH))
    assert len(FAMILIES) == len(TINY)  # nothing was added


@pytest.mark.slow
def test_a_registered_family_is_searched_and_exported_like_the_others(tmp_path) -> None:
    """The toy family, known only through `register_family`: the CLI's search (Optuna and DSE),
    best-mode query and ONNX export work on it unchanged."""
    import onnxruntime
    from typer.testing import CliRunner

    from subnetsearch.cli import app

    save_checkpoint(tmp_path / "toy.pt", build_supernet(TOY_ARCH), {}, {"name": "synthetic", "split_seed": 0}, {})
    url, runner = f"sqlite:///{tmp_path / 'store.db'}", CliRunner()
    common = ["--checkpoint", str(tmp_path / "toy.pt"), "--device", "quick", "--storage", url]
    assert runner.invoke(app, ["devices", "add", "quick", "--runtime", "eager", "--threads", "1", "--repeats", "1",
                               "--storage", url]).exit_code == 0
    for strategy in (["--strategy", "optuna", "--sampler", "random", "--trials", "3", "--objectives", "accuracy,macs"],
                     ["--strategy", "dse", "--cost", "macs", "--objectives", "accuracy,macs", "--delta", "0"]):
        result = runner.invoke(app, ["search", *strategy, *common])
        assert result.exit_code == 0, result.output
    best = runner.invoke(app, ["best", "--device", "quick", "-o", str(tmp_path / "mode.onnx"), "--storage", url])
    assert best.exit_code == 0, best.output
    session = onnxruntime.InferenceSession(str(tmp_path / "mode.onnx"))
    assert session.run(None, {"input": torch.rand(1, 1, 12, 12).numpy() * 255})[0].shape == (1, 4)
