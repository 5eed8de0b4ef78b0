import pytest

from subnetsearch.devices import LatencyProtocol
from subnetsearch.search import EvaluationSettings, evaluate_mode


def test_evaluate_mode_reports_cost_accuracy_and_latency(tiny_supernet, tiny_data) -> None:
    mode = tiny_supernet.uniform_mode(2)
    protocol = LatencyProtocol(threads=1, warmup=1, repeats=2, min_run_time=0.02)
    metrics = evaluate_mode(tiny_supernet, mode, tiny_data, EvaluationSettings(calibration_batches=2,
                            calibration_batch_size=16), protocol, with_stored_bn=True)
    assert metrics.mode == mode
    assert (metrics.macs, metrics.params) == (tiny_supernet.cost(mode).macs, tiny_supernet.cost(mode).params)
    assert 0.0 <= metrics.accuracy <= 1.0 and metrics.accuracy_stored_bn is not None
    assert metrics.latency.ms > 0 and metrics.latency.protocol == protocol


def test_selection_split_is_validation_unless_asked() -> None:
    assert EvaluationSettings().split == "val"
    with pytest.raises(ValueError, match="selection uses 'val'"):
        EvaluationSettings(split="train")
