"""Width knobs in converted models (supernets._width): the layers no private BN follows (transformer
MLPs, BN-less CNNs, ConvNeXt's channels-last MLPs) get nested widths, alone or beside group counts."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from subnetsearch.devices import export_onnx
from subnetsearch.devices._lookup import conv_sites
from subnetsearch.errors import InputError
from subnetsearch.spaces import ModeError
from subnetsearch.supernets import (
    ArchError,
    build_supernet,
    load_checkpoint,
    save_checkpoint,
    supernet_from_model,
)
from subnetsearch.supernets._convert import ConversionError
from subnetsearch.supernets._width import WidthConv2d, WidthLinear
from tests.conftest import randomize_batchnorm
from tests.supernets import user_models
from tests.supernets.test_converter_zoo import _ChannelsLastMLP, hook_macs

RATIOS = [1.0, 0.75, 0.5, 0.25]
# a tiny ViT's attention holds half its MACs: the low-share warning is right, and asserted elsewhere
pytestmark = pytest.mark.filterwarnings("ignore:.*the switchable layers hold only:UserWarning")


def _vgg_like(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1),
                         nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(32, 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, 48), nn.ReLU(),
                         nn.Linear(48, num_classes))


class _Fire(nn.Module):
    """SqueezeNet's fire module: a squeeze conv read by two expand convs."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.squeeze = nn.Conv2d(16, 8, 1)
        self.expand1 = nn.Conv2d(8, 16, 1)
        self.expand3 = nn.Conv2d(8, 16, 3, padding=1)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.squeeze(torch.relu(self.stem(x))))
        x = torch.cat([torch.relu(self.expand1(x)), torch.relu(self.expand3(x))], 1)
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


# Each kind the converter refused before width knobs, built small: (factory, input size, the knobs expected)
MODELS = {
    "vit": (lambda: user_models.tiny_vit(10), 12, {"encoder.layers.encoder_layer_0.mlp.0": "width",
                                                   "encoder.layers.encoder_layer_0.mlp.3": "input width"}),
    "bn-less cnn": (_vgg_like, 8, {"0": "width", "3": "width, input width", "5": "input width",
                                    "9": "width", "12": "width, input width", "14": "input width"}),
    "fire": (_Fire, 8, {"stem": "width", "squeeze": "width, input width", "expand1": "input width",
                        "expand3": "input width"}),
    "channels-last mlp": (_ChannelsLastMLP, 8, {"conv2": "groups", "mlp.0": "width",
                                                "mlp.2": "input width"}),
    "width x groups": (lambda: user_models.cnn_with_mlp(10), 8, {"3": "groups", "6": "groups", "11": "width",
                                                                  "14": "input width"}),
}


def _convert(name: str) -> tuple[nn.Module, object, int]:
    factory, size, _ = MODELS[name]
    torch.manual_seed(0)
    original = factory().eval()
    randomize_batchnorm(original)
    supernet = supernet_from_model(copy.deepcopy(original), name, {"family": "test", "width_ratios": RATIOS},
                                   (3, size, size), group_choices=(1, 2, 4)).eval()
    return original, supernet, size


@pytest.mark.parametrize("name", MODELS)
def test_each_kind_converts_exactly_and_its_modes_materialize_cost_and_export(name: str) -> None:
    original, supernet, size = _convert(name)
    expected_knobs = MODELS[name][2]
    report = supernet.conversion
    for layer, kind in expected_knobs.items():
        assert report.knobs.get(layer) == kind, (layer, report.knobs)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    supernet.set_mode(supernet.full_mode())
    with torch.no_grad():
        torch.testing.assert_close(supernet(x), original(x), rtol=1e-4, atol=1e-5)
    generator = torch.Generator().manual_seed(2)
    widths = [name for name, kind in report.knobs.items() if kind.startswith("width")]
    for mode in [supernet.random_mode(generator) for _ in range(3)] + [supernet.smallest_mode()]:
        static = supernet.materialize(mode)
        assert not any(isinstance(m, (WidthConv2d, WidthLinear)) for m in static.modules())
        supernet.set_mode(mode)
        with torch.no_grad():
            expected = supernet(x)
            torch.testing.assert_close(static(x), expected, rtol=1e-4, atol=1e-5)
        assert supernet.cost(mode).macs == hook_macs(static, x[:1])
        # a width knob really narrows its layer in the static network
        modules = dict(static.named_modules())
        for knob in widths:
            layer = modules.get(knob)
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                assert (layer.weight.shape[0]) == mode.values[knob]
    assert supernet.cost(supernet.smallest_mode()).macs < supernet.cost(supernet.full_mode()).macs
    import onnxruntime

    session = onnxruntime.InferenceSession(export_onnx(static, x[:1]), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": x[:1].numpy()})
    torch.testing.assert_close(torch.from_numpy(np.asarray(logits)), expected[:1], rtol=1e-4, atol=1e-4)


def test_width_and_groups_combine_in_one_mode_and_each_mode_says_its_kind() -> None:
    _, supernet, _ = _convert("width x groups")
    assert supernet.mode_kind == "width+groups"
    assert supernet.kind_of(supernet.full_mode()) == "full"
    assert supernet.kind_of(supernet.uniform_mode(2)) == "groups"
    assert supernet.kind_of(supernet.width_mode(0.5)) == "width"
    assert supernet.kind_of(supernet.smallest_mode()) == "width+groups"
    named = supernet.named_modes()
    assert {"width:0.75", "width:0.5", "width:0.25", "uniform 1/2"} <= set(named)
    assert supernet.mode_named("width:0.5") == supernet.width_mode(0.5)
    assert supernet.describe(supernet.width_mode(0.5)).endswith("| widths .5")
    # the search space holds both kinds of knob: group counts and widths
    kinds = {knob.name: knob.values for knob in supernet.space.knobs}
    assert kinds["11"] == (64, 48, 32, 16) and kinds["3"] == (1, 2, 4)
    layers, groups = supernet.layers_for(supernet.smallest_mode())
    hidden = next(layer for layer in layers if layer.name == "11")
    assert hidden.out_channels == 16 and "11" not in groups


def test_the_channel_order_is_by_filter_norm_and_survives_a_checkpoint(tmp_path) -> None:
    arch = {"family": "wenet-module", "factory": "tests.supernets.user_models:tiny_vit", "num_classes": 4,
            "input_size": 12, "in_channels": 3, "width_ratios": RATIOS}
    supernet = build_supernet(arch)
    producer = supernet.width_layers["encoder.layers.encoder_layer_1.mlp.0"]
    norms = producer.weight.flatten(1).norm(dim=1)
    assert torch.all(norms[:-1] >= norms[1:])  # strongest first: the narrowest mode keeps them
    save_checkpoint(tmp_path / "s.pt", supernet, {"epochs": 0}, {"name": "synthetic"}, {})
    rebuilt = load_checkpoint(tmp_path / "s.pt").build().eval()
    supernet.eval()
    mode = supernet.width_mode(0.25)
    x = torch.randn(2, 3, 12, 12)
    for net in (supernet, rebuilt):
        net.set_mode(mode)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), supernet(x))


def test_bad_widths_and_models_without_knobs_are_refused_with_the_reason() -> None:
    _, supernet, _ = _convert("bn-less cnn")
    with pytest.raises(ModeError):
        supernet.make_mode({**supernet.full_mode().values, "0": 5})  # 5 is no width of that layer
    with pytest.raises(ModeError, match="no width ratio 0.3"):
        supernet.mode_named("width:0.3")
    with pytest.raises(ModeError, match="no layer allows 2 groups"):
        supernet.uniform_mode(2)  # no group knob in a BN-less CNN
    with pytest.raises(ConversionError, match="width_ratios must be shares"):
        supernet_from_model(_vgg_like(), "vgg", {"family": "test"}, (3, 8, 8), width_ratios=[0.5, 0.25])
    with pytest.raises(ConversionError, match="no layer can be made switchable"):
        supernet_from_model(user_models.nothing_sliceable(), "none", {"family": "test"}, (3, 8, 8),
                            width_ratios=RATIOS)
    with pytest.raises(ConversionError, match="no layer can be made switchable"):  # widths off: refused as before
        supernet_from_model(_vgg_like(), "vgg", {"family": "test"}, (3, 8, 8))
    with pytest.raises(InputError, match="width knobs, which no table entry models"):
        conv_sites(supernet)


def test_an_old_arch_without_width_ratios_builds_the_supernet_it_always_did() -> None:
    arch = {"family": "wenet-torchvision", "model": "mobilenet_v3_small", "num_classes": 4, "input_size": 32}
    old = build_supernet(arch)
    assert not old.width_knobs and old.mode_kind == "groups"
    new = build_supernet({**arch, "width_ratios": RATIOS})
    assert new.width_knobs and len(new.space.knobs) > len(old.space.knobs)
    with pytest.raises(ArchError):
        build_supernet({**arch, "width_ratios": [0.5]})


def test_width_ratios_given_to_the_converter_are_recorded_in_the_arch() -> None:
    supernet = supernet_from_model(_vgg_like(), "vgg", {"family": "test"}, (3, 8, 8), width_ratios=RATIOS)
    assert supernet.arch["width_ratios"] == RATIOS  # a rebuild from the arch gets the same knobs
    assert supernet.kind_of(supernet.width_mode(0.5)) == "width"
