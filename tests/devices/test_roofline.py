import pytest

from subnetsearch.devices import Device, LatencyProtocol, Roofline, measure_roofline
from subnetsearch.devices._roofline import _conv_peak
from subnetsearch.devices.runtimes import RuntimeUnavailable, available_runtimes, get_runtime

ROOFLINE = Roofline(50e9, ((2**20, 100e9), (None, 20e9)), 1)


def test_the_roofline_is_measured_per_memory_level() -> None:
    measured = measure_roofline(1, repeats=1, min_time=0.01, memory_mb=16)
    assert measured.peak_macs_per_s > 1e8 and measured.levels[-1][0] is None and measured.threads == 1
    bandwidths = [bandwidth for _, bandwidth in measured.levels]
    assert bandwidths == sorted(bandwidths, reverse=True)  # a smaller level is never slower
    assert Roofline.from_dict(measured.to_dict()) == measured
    assert "GMAC/s" in measured.how and "GB/s" in measured.how


@pytest.mark.parametrize("runtime", available_runtimes())
def test_the_peak_includes_the_runtimes_own_convolutions(runtime) -> None:
    conv = _conv_peak(runtime, 1, repeats=1, min_time=0.01)
    measured = measure_roofline(1, runtime, repeats=1, min_time=0.01, memory_mb=16)
    assert conv > 1e8 and f"{runtime} conv" in measured.how
    assert measured.peak_macs_per_s >= 0.5 * conv  # the best of matmul and convs (timed again: noise allowed)


def test_a_runtime_that_is_not_installed_is_refused_for_the_peak(monkeypatch) -> None:
    monkeypatch.setattr(get_runtime("openvino"), "modules", ("no_such_module_here",))
    with pytest.raises(RuntimeUnavailable, match="subnetsearch\\[openvino\\]"):
        measure_roofline(1, "openvino", repeats=1, min_time=0.01, memory_mb=16)


def test_the_bound_falls_with_groups_and_grows_with_the_batch(tiny_supernet) -> None:
    full = ROOFLINE.bound_ms(*tiny_supernet.layers_for(tiny_supernet.full_mode()))
    grouped = ROOFLINE.bound_ms(*tiny_supernet.layers_for(tiny_supernet.uniform_mode(4)))
    assert 0 < grouped < full
    batched = ROOFLINE.bound_ms(*tiny_supernet.layers_for(tiny_supernet.full_mode()), batch=8)
    assert full < batched <= 8 * full  # weights are read once per batch
    compute_only = Roofline(50e9, ((None, 1e30),), 1).bound_ms(*tiny_supernet.layers_for(tiny_supernet.full_mode()))
    assert compute_only == pytest.approx(tiny_supernet.cost(tiny_supernet.full_mode()).macs / 50e9 * 1e3)


def test_the_working_set_picks_the_memory_level() -> None:
    assert ROOFLINE.bandwidth_for(2**19) == 100e9 and ROOFLINE.bandwidth_for(2**21) == 20e9


@pytest.mark.parametrize("payload, message", [
    ({"peak_macs_per_s": 0, "levels": [[None, 1e9]], "threads": 1}, "peak_macs_per_s must be > 0"),
    ({"peak_macs_per_s": 1e9, "levels": [[1024, 1e9]], "threads": 1}, "end with main memory"),
    ({"peak_macs_per_s": 1e9, "levels": [[None, -1]], "threads": 1}, "bandwidths > 0"),
])
def test_bad_rooflines_are_refused(payload, message) -> None:
    with pytest.raises(ValueError, match=message):
        Roofline.from_dict(payload)
    with pytest.raises(ValueError, match=message):  # also inside a stored device profile
        Device.from_dict({"name": "d", "protocol": {"runtime": "eager"}, "roofline": payload})


def test_a_device_keeps_its_roofline() -> None:
    device = Device("d", protocol=LatencyProtocol(runtime="eager"), roofline=ROOFLINE)
    assert Device.from_dict(device.to_dict()) == device
    assert Device.from_dict({**device.to_dict(), "roofline": None}).roofline is None
