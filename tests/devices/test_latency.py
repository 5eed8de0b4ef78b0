import threading
import time

import pytest
import torch

from subnetsearch.devices import RUNTIMES, LatencyProtocol, measure_latency, measurement_lock, prepare_runtime


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_latency_is_measured_with_its_protocol(tiny_supernet, runtime: str) -> None:
    static = tiny_supernet.materialize(tiny_supernet.uniform_mode(2))
    protocol = LatencyProtocol(runtime=runtime, threads=1, warmup=2, repeats=3, min_run_time=0.02)
    latency = measure_latency(static, tiny_supernet.input_shape, protocol)
    assert latency.ms > 0 and latency.ms == min(latency.medians_ms) and len(latency.medians_ms) == 3
    record = latency.to_dict()
    assert record["runtime"] == runtime and record["threads"] == 1 and record["measured"] is True
    assert record["input_shape"] == [1, 1, 12, 12]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_runtimes_compute_the_same_outputs(tiny_supernet, runtime: str) -> None:
    static = tiny_supernet.materialize(tiny_supernet.uniform_mode(4))
    x = torch.randn(2, 1, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(prepare_runtime(static, x, runtime)(x), static(x), rtol=1e-4, atol=1e-5)


def test_measurements_never_overlap_across_threads() -> None:
    inside, overlaps = [0], [0]

    def worker() -> None:
        with measurement_lock():
            inside[0] += 1
            overlaps[0] = max(overlaps[0], inside[0])
            time.sleep(0.02)
            inside[0] -= 1

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps[0] == 1


@pytest.mark.parametrize("changes, message", [({"runtime": "tpu"}, "runtime"), ({"threads": 0}, "threads")])
def test_bad_protocols_are_refused(changes, message) -> None:
    with pytest.raises(ValueError, match=message):
        LatencyProtocol(**changes)


class _NotExportable(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.fft2(x).real


def test_onnx_export_failure_is_reported_clearly() -> None:
    from subnetsearch.devices import export_onnx

    with pytest.raises(RuntimeError, match="ONNX export of the materialized mode failed"):
        export_onnx(_NotExportable(), torch.randn(1, 1, 4, 4))
