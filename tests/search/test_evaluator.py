import pytest

from subnetsearch.devices import Device, LatencyProtocol
from subnetsearch.search import EvaluationSettings, evaluate_mode

QUICK = EvaluationSettings(calibration_batches=2, calibration_batch_size=16)


def test_evaluate_mode_reports_cost_accuracy_latency_and_energy(tiny_supernet, tiny_data) -> None:
    mode = tiny_supernet.uniform_mode(2)
    device = Device("test-host", protocol=LatencyProtocol(threads=1, warmup=1, repeats=2, min_run_time=0.02))
    metrics = evaluate_mode(tiny_supernet, mode, tiny_data, device, QUICK, with_stored_bn=True)
    assert metrics.mode == mode and metrics.device == "test-host"
    assert (metrics.macs, metrics.params) == (tiny_supernet.cost(mode).macs, tiny_supernet.cost(mode).params)
    assert 0.0 <= metrics.accuracy <= 1.0 and metrics.loss > 0 and metrics.accuracy_stored_bn is not None
    assert metrics.latency.ms > 0 and metrics.latency.protocol == device.protocol
    full = evaluate_mode(tiny_supernet, tiny_supernet.full_mode(), tiny_data, device, QUICK, measure=False)
    assert 0 < metrics.energy_mj < full.energy_mj and metrics.energy_source == "model"
    assert full.latency is None


def test_devices_elsewhere_are_not_measured_here(tiny_supernet, tiny_data) -> None:
    device = Device("far-board", "ray-node")
    metrics = evaluate_mode(tiny_supernet, tiny_supernet.full_mode(), tiny_data, device, QUICK)
    assert metrics.latency is None and metrics.energy_mj > 0


def test_selection_split_is_validation_unless_asked() -> None:
    assert EvaluationSettings().split == "val"
    with pytest.raises(ValueError, match="selection uses 'val'"):
        EvaluationSettings(split="train")
