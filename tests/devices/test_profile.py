import pytest

from subnetsearch.devices import Device, DeviceError, EnergyCoefficients, LatencyProtocol, default_host_device


def test_profile_round_trips_through_a_dict() -> None:
    device = Device("jetson-nano", "ray-node", LatencyProtocol(runtime="eager", threads=4, batch_size=8),
                    EnergyCoefficients(dram_pj=320.0, source="measured"), "a board")
    assert Device.from_dict(device.to_dict()) == device
    assert device.ray_resource == "device:jetson-nano"


@pytest.mark.parametrize("name", ["", "Jetson", "a b", "x/y", "-lead", "a" * 64, "café"])
def test_names_with_characters_that_do_not_belong_are_refused(name: str) -> None:
    with pytest.raises(DeviceError, match="is not allowed"):
        Device(name)


def test_bad_profiles_are_clear_errors() -> None:
    with pytest.raises(DeviceError, match="location"):
        Device("x", "cloud")
    with pytest.raises(DeviceError, match="not a device profile"):
        Device.from_dict({"location": "host"})
    with pytest.raises(ValueError, match="runtime"):
        Device.from_dict({"name": "x", "protocol": {"runtime": "tensorrt"}})


def test_default_host_device_describes_this_machine() -> None:
    device = default_host_device()
    assert device.location == "host" and device.protocol.batch_size == 1
    assert "logical CPUs" in device.description
