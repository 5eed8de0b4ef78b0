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


@pytest.mark.parametrize("runtime", ["eager", "onnxruntime"])
def test_the_fastest_realization_is_kept_recorded_and_exported(tmp_path, tiny_supernet, tiny_data, runtime) -> None:
    """A mode with grouped layers is timed as grouped kernels and as dense equivalents; the faster
    is its latency, the other is recorded beside it, and export builds the network that was timed."""
    import onnx

    from subnetsearch.search import CachedEvaluator, export_mode
    from subnetsearch.storage import Store
    from subnetsearch.supernets import Realization, load_checkpoint, save_checkpoint

    checkpoint = tmp_path / "tiny.pt"
    save_checkpoint(checkpoint, tiny_supernet, {}, {"name": "synthetic", "split_seed": 0}, {})
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    device = Device("host", protocol=LatencyProtocol(runtime=runtime, threads=1, warmup=1, repeats=2,
                                                     min_run_time=0.02))
    store.add_device(device)
    state = load_checkpoint(checkpoint)
    store.register_supernet(state, checkpoint)
    evaluator = CachedEvaluator(tiny_supernet, state.hash, tiny_data, device, store, QUICK)
    mode = tiny_supernet.uniform_mode(4)
    stored = evaluator.evaluate(mode)
    grouped = tiny_supernet.grouped_layers(mode)
    realization = Realization.from_dict(stored.latency["realization"])
    assert realization in (Realization(), Realization(grouped))
    (other, other_ms), = stored.latency["alternatives_ms"].items()
    assert stored.latency_ms <= other_ms and other == ("dense" if not realization.dense else "grouped")
    full = evaluator.evaluate(tiny_supernet.full_mode())  # nothing grouped: one realization, no alternative
    assert full.latency["realization"] == {"dense": []} and "alternatives_ms" not in full.latency
    for forced in (Realization(), Realization(grouped)):  # export builds whichever realization was kept
        latency = {**stored.latency, "realization": forced.to_dict()}
        evaluation = type(stored)(**{**stored.__dict__, "latency": latency})
        path = export_mode(store, evaluation, tmp_path / f"m{len(forced.dense)}.onnx")
        groups = [a.i for n in onnx.load(str(path)).graph.node if n.op_type == "Conv" for a in n.attribute
                  if a.name == "group"]
        assert (max(groups, default=1) > 1) == (not forced.dense), groups
    store.dispose()
