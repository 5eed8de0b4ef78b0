import pytest

from subnetsearch.devices import LatencyProtocol, compare_runtimes
from subnetsearch.supernets import save_checkpoint

QUICK = LatencyProtocol(threads=1, warmup=1, repeats=1, min_run_time=0.01)


@pytest.mark.slow
def test_each_runtime_measures_the_modes_in_a_process_of_its_own(tmp_path, tiny_supernet) -> None:
    checkpoint = tmp_path / "tiny.pt"
    save_checkpoint(checkpoint, tiny_supernet, {}, {"name": "synthetic", "split_seed": 0}, {})
    trials = compare_runtimes(checkpoint, ["full", "uniform:2"], QUICK, ["eager", "onnxruntime"])
    assert [t.runtime for t in trials] == ["eager", "onnxruntime"]
    for trial in trials:
        assert trial.error is None and set(trial.latencies_ms) == {"full", "uniform:2"}
        assert trial.kernels["full"] == "grouped" and trial.kernels["uniform:2"] in ("grouped", "dense")
        assert 0 < trial.score_ms < float("inf")
    failed, = compare_runtimes(checkpoint, ["uniform:3"], QUICK, ["eager"])  # the child's error comes back
    assert "no layer allows 3 groups" in failed.error and failed.score_ms == float("inf")
