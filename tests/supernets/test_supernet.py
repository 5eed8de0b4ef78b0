import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from subnetsearch.spaces import Mode, ModeError
from subnetsearch.supernets import ArchError, build_supernet
from tests.conftest import TINY_ARCH, randomize_batchnorm


def test_space_has_one_ordered_knob_per_switchable_conv(tiny_supernet) -> None:
    names = [knob.name for knob in tiny_supernet.space.knobs]
    # depth 8: 3 blocks x 2 convs + 2 downsample convs; the 1-channel stem has no choice
    assert len(names) == 8
    assert "stem" not in names and "layer2.0.downsample.0" in names
    assert tiny_supernet.space["layer1.0.conv1"].values == (1, 2, 4, 8)


def test_set_mode_switches_without_copying_or_allocating_parameters(tiny_supernet) -> None:
    before = {name: p.data_ptr() for name, p in tiny_supernet.named_parameters()}
    mode = tiny_supernet.smallest_mode()
    tiny_supernet.set_mode(mode)
    assert tiny_supernet.mode == mode
    assert {name: p.data_ptr() for name, p in tiny_supernet.named_parameters()} == before
    assert all(unit.layer.groups == 8 for unit in tiny_supernet.units.values() if unit.name in mode.values)
    assert all(norm.key == 8 for unit in tiny_supernet.units.values() for norm in unit.norms)


@pytest.mark.parametrize("values, message", [
    ({"layer1.0.conv1": 3}, "not one of"),
    ({"no.such.layer": 2}, "unknown knob"),
])
def test_bad_mode_raises_and_leaves_active_mode_unchanged(tiny_supernet, values, message) -> None:
    start = tiny_supernet.uniform_mode(2)
    tiny_supernet.set_mode(start)
    bad = Mode({**start.values, **values}, tiny_supernet.space.id)
    with pytest.raises(ModeError, match=message):
        tiny_supernet.set_mode(bad)
    assert tiny_supernet.mode == start


def test_mode_from_another_supernet_is_refused(tiny_supernet) -> None:
    other = build_supernet({**TINY_ARCH, "widths": [8, 16, 32]})
    with pytest.raises(ModeError, match="another supernet"):
        tiny_supernet.set_mode(other.full_mode())


def test_unknown_family_and_fields_are_clear_errors() -> None:
    with pytest.raises(ArchError, match="unknown supernet family"):
        build_supernet({"family": "nope"})
    with pytest.raises(ArchError, match="unknown architecture field"):
        build_supernet({**TINY_ARCH, "widht": 3})
    with pytest.raises(ArchError, match="6n\\+2"):
        build_supernet({**TINY_ARCH, "depth": 9})


def _random_mode(supernet, seed: int) -> Mode:
    return supernet.random_mode(torch.Generator().manual_seed(seed))


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), shuffle_rule=st.sampled_from(["balanced", "max"]), shuffle=st.booleans())
def test_materialized_mode_equals_supernet_in_eval(seed: int, shuffle_rule: str, shuffle: bool) -> None:
    supernet = build_supernet({**TINY_ARCH, "shuffle_rule": shuffle_rule, "shuffle": shuffle}).eval()
    randomize_batchnorm(supernet, seed)
    mode = _random_mode(supernet, seed)
    supernet.set_mode(mode)
    x = torch.randn(3, 1, 12, 12)
    with torch.no_grad():
        expected = supernet(x)
        static = supernet.materialize(mode)
        actual = static(x)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in static.modules()), "BN must be folded"
    assert all(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) or not list(m.parameters(recurse=False))
               for m in static.modules())


def test_materialize_keeps_the_active_mode_and_weights(tiny_supernet) -> None:
    tiny_supernet.set_mode(tiny_supernet.uniform_mode(2))
    weights = copy.deepcopy(tiny_supernet.state_dict())
    static = tiny_supernet.materialize(tiny_supernet.smallest_mode())
    assert tiny_supernet.mode == tiny_supernet.uniform_mode(2)
    for name, tensor in tiny_supernet.state_dict().items():
        assert torch.equal(tensor, weights[name]), name
    grouped = [m.groups for m in static.modules() if isinstance(m, torch.nn.Conv2d)]
    assert grouped.count(8) == 8  # every switchable conv runs with 8 groups


def test_shuffles_next_to_dense_convs_are_folded_away(tiny_supernet) -> None:
    from subnetsearch.supernets import ChannelShuffle

    full = tiny_supernet.materialize(tiny_supernet.full_mode())
    assert not any(isinstance(m, ChannelShuffle) for m in full.modules())
    smallest = tiny_supernet.materialize(tiny_supernet.smallest_mode())
    assert sum(isinstance(m, ChannelShuffle) for m in smallest.modules()) == 3


def _hook_count(static: torch.nn.Module, input_shape) -> tuple[int, int]:
    macs = 0

    def count(module, inputs, output):
        nonlocal macs
        if isinstance(module, torch.nn.Conv2d):
            kh, kw = module.kernel_size
            macs += output.numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, torch.nn.Linear):
            macs += output.numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in static.modules()]
    with torch.no_grad():
        static(torch.zeros(1, *input_shape))
    for hook in hooks:
        hook.remove()
    return macs, sum(p.numel() for p in static.parameters())


@pytest.mark.parametrize("seed", range(6))
def test_cost_matches_hook_counting_on_the_materialized_network(tiny_supernet, seed: int) -> None:
    mode = _random_mode(tiny_supernet, seed) if seed else tiny_supernet.full_mode()
    cost = tiny_supernet.cost(mode)
    macs, params = _hook_count(tiny_supernet.materialize(mode), tiny_supernet.input_shape)
    assert (cost.macs, cost.params) == (macs, params)


def test_cost_falls_with_groups_as_the_paper_says(tiny_supernet) -> None:
    full, half = tiny_supernet.cost(tiny_supernet.full_mode()), tiny_supernet.cost(tiny_supernet.uniform_mode(2))
    stem_macs = 8 * 9 * 144  # the dense stem: c_out * c_in * k * k * h * w
    fc = 16 * 4
    # Eq. (3): every switchable layer's MACs halve at 2 groups
    assert half.macs - stem_macs - fc == (full.macs - stem_macs - fc) // 2


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), shuffle_rule=st.sampled_from(["balanced", "max"]))
def test_gather_shuffles_compute_what_the_plain_materialization_does(seed: int, shuffle_rule: str) -> None:
    from subnetsearch.supernets import ChannelShuffle, Realization
    from subnetsearch.supernets._materialize import GatherShuffle

    supernet = build_supernet({**TINY_ARCH, "shuffle_rule": shuffle_rule}).eval()
    randomize_batchnorm(supernet, seed)
    mode = _random_mode(supernet, seed)
    plain = supernet.realize(mode, Realization())
    gathered = supernet.realize(mode, Realization((), "gather"))
    assert not any(isinstance(m, ChannelShuffle) for m in gathered.modules())
    assert sum(isinstance(m, GatherShuffle) for m in gathered.modules()) == \
        sum(isinstance(m, ChannelShuffle) and m.enabled and m.max_groups > 1 for m in plain.modules())
    x = torch.randn(3, 1, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(gathered(x), plain(x), rtol=1e-5, atol=1e-5)


def test_gather_shuffles_export_as_one_gather_each_and_run_equal_in_onnx_runtime(tiny_supernet) -> None:
    import onnx

    from subnetsearch.devices import export_onnx, prepare_runtime
    from subnetsearch.supernets import Realization

    mode = tiny_supernet.smallest_mode()
    grouped = tuple(tiny_supernet.grouped_layers(mode))
    x = torch.randn(2, *tiny_supernet.input_shape)
    forms = {form: tiny_supernet.realize(mode, Realization((), form)) for form in ("reshape", "gather")}
    operators = {form: [n.op_type for n in onnx.load_from_string(export_onnx(net, x)).graph.node]
                 for form, net in forms.items()}
    shuffles = 3  # the tiny supernet's shuffles between grouped convs (see the folding test above)
    assert operators["gather"].count("Gather") == shuffles and "Transpose" not in operators["gather"]
    assert operators["reshape"].count("Transpose") == shuffles
    with torch.no_grad():
        expected = forms["reshape"](x)
        for net in forms.values():
            torch.testing.assert_close(prepare_runtime(net, x, "onnxruntime", 1)(x), expected, rtol=1e-5, atol=1e-5)
    assert Realization.from_dict(Realization(grouped, "gather").to_dict()) == Realization(grouped, "gather")
    assert Realization.from_dict({"dense": []}).shuffle == "reshape"
    with pytest.raises(ValueError, match="shuffle must be one of"):
        Realization((), "scatter")
