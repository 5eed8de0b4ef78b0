import pytest

from subnetsearch.devices import Device, LatencyProtocol, graph_digest
from subnetsearch.search import EvaluationSettings, evaluate_mode
from subnetsearch.spaces import Mode

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

    from subnetsearch.devices import get_runtime
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
    as_grouped = Realization((), get_runtime(runtime).shuffle)  # shuffles in the runtime's cheaper form
    assert realization in (as_grouped, Realization(grouped))
    (other, other_ms), = stored.latency["alternatives_ms"].items()
    assert stored.latency_ms <= other_ms
    assert other == ("dense" if not realization.dense else as_grouped.describe(len(grouped)))
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


def test_a_device_with_a_roofline_gets_the_bound_beside_each_latency(tiny_supernet, tiny_data) -> None:
    from subnetsearch.devices import Roofline

    roofline = Roofline(5e9, ((None, 5e9),), 1)
    device = Device("test-host", protocol=LatencyProtocol(runtime="eager", threads=1, warmup=1, repeats=1,
                                                          min_run_time=0.01, batch_size=2), roofline=roofline)
    mode = tiny_supernet.uniform_mode(2)
    metrics = evaluate_mode(tiny_supernet, mode, tiny_data, device, QUICK)
    assert metrics.latency.bound_ms == pytest.approx(roofline.bound_ms(*tiny_supernet.layers_for(mode), batch=2))
    assert metrics.latency.to_dict()["bound_ms"] == metrics.latency.bound_ms
    plain = evaluate_mode(tiny_supernet, mode, tiny_data, Device("other", protocol=device.protocol), QUICK)
    assert plain.latency.bound_ms is None and "bound_ms" not in plain.latency.to_dict()


@pytest.mark.parametrize("format", ["onnx", "torchscript", "openvino", "executorch"])
def test_every_export_format_runs_the_stored_mode_on_raw_pixels(tmp_path, tiny_supernet, tiny_data, format) -> None:
    """`export -o mode.<suffix>` of a stored mode, run by its runtime from the file, computes what the
    materialized mode computes on normalized pixels."""
    import torch

    from subnetsearch.devices import export_formats
    from subnetsearch.search import CachedEvaluator, export_mode, materialized_model
    from subnetsearch.storage import Store
    from subnetsearch.supernets import load_checkpoint, save_checkpoint

    runtime = export_formats()[format]
    if runtime.missing():
        pytest.skip(runtime.missing())
    checkpoint = tmp_path / "tiny.pt"
    save_checkpoint(checkpoint, tiny_supernet, {}, {"name": "synthetic", "split_seed": 0}, {})
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    device = store.add_device(Device("host", protocol=LatencyProtocol(runtime="eager", threads=1, warmup=1, repeats=1,
                                                                      min_run_time=0.01)))
    state = load_checkpoint(checkpoint)
    store.register_supernet(state, checkpoint, tiny_data.preprocessing())
    stored = CachedEvaluator(tiny_supernet, state.hash, tiny_data, device, store, QUICK).evaluate(
        tiny_supernet.uniform_mode(2))
    path = export_mode(store, stored, tmp_path / f"mode{runtime.suffixes[0]}")
    assert sorted(p.name for p in tmp_path.glob("mode.*")) == sorted(f"mode{s}" for s in (*runtime.suffixes[:1],
                                                                                          *runtime.companions))
    pixels = torch.rand(1, *tiny_supernet.input_shape) * 255
    model, _ = materialized_model(store, stored)
    prep = tiny_data.preprocessing()
    mean, std = torch.tensor(prep["mean"]).view(1, -1, 1, 1), torch.tensor(prep["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        expected = model((pixels / prep["pixel_scale"] - mean) / std)
        torch.testing.assert_close(runtime.load(path)(pixels), expected, rtol=1e-4, atol=1e-4)
    store.dispose()


def _planning_table(supernet, protocol):
    """A table in which dense kernels win on the 12x12 layers and grouped ones everywhere else: its
    per-layer plan is neither all grouped nor all dense."""
    from subnetsearch.devices import LatencyTable, all_layer_configs, conv_sites

    entries = {c.key(): (0.1 if tuple(c.input_size) == (12, 12) else 5.0) if c.groups == 1 else 1.0
               for c in all_layer_configs(conv_sites(supernet), supernet)}
    return LatencyTable(protocol, entries)


def test_the_tables_per_layer_plan_is_timed_beside_all_grouped_and_all_dense(tmp_path, tiny_supernet, tiny_data) -> None:
    from dataclasses import replace

    from subnetsearch.devices import LatencyPredictor, get_runtime
    from subnetsearch.search import SearchSession
    from subnetsearch.storage import Store
    from subnetsearch.supernets import Realization, load_checkpoint, save_checkpoint

    protocol = LatencyProtocol(runtime="eager", threads=1, warmup=1, repeats=1, min_run_time=0.01)
    table = _planning_table(tiny_supernet, protocol)
    planner = LatencyPredictor(tiny_supernet, table)
    mode = tiny_supernet.uniform_mode(2)
    planned, _, _ = planner.realization(mode)
    grouped = tiny_supernet.grouped_layers(mode)
    assert planned not in (Realization(), Realization(grouped)) and planned.dense
    metrics = evaluate_mode(tiny_supernet, mode, tiny_data, Device("h", protocol=protocol), QUICK, planner=planner)
    timed = {*metrics.latency.alternatives_ms, Realization.from_dict(metrics.latency.realization).describe(len(grouped))}
    shuffle = get_runtime(protocol.runtime).shuffle  # the shuffles that stay, in the runtime's cheaper form
    assert timed == {Realization((), shuffle).describe(len(grouped)), "dense",
                     replace(planned, shuffle=shuffle).describe(len(grouped))}
    assert metrics.latency.ms <= min(metrics.latency.alternatives_ms.values())
    # a search session plans with the device's stored table (measured with the device's protocol)
    checkpoint = tmp_path / "tiny.pt"
    save_checkpoint(checkpoint, tiny_supernet, {}, {"name": "synthetic", "split_seed": 0}, {})
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = Store(url)
    device = store.add_device(Device("h", protocol=protocol))
    store.register_supernet(load_checkpoint(checkpoint), checkpoint)
    assert SearchSession(store, url, device, checkpoint, QUICK).evaluator.planner is None  # no table yet
    store.put_latency_table("h", load_checkpoint(checkpoint).hash, table.to_dict(), table.digest, "measured")
    session = SearchSession(store, url, device, checkpoint, QUICK)
    assert session.evaluator.planner is not None and session.evaluator.predictor is None
    assert session.evaluator.planner.realization(mode)[0] == planned
    store.dispose()


def test_refining_the_front_measures_each_front_graph_in_more_windows(tmp_path, tiny_supernet, tiny_data) -> None:
    from subnetsearch.search import CachedEvaluator, refine_front
    from subnetsearch.storage import Store
    from subnetsearch.supernets import Realization, load_checkpoint, save_checkpoint

    checkpoint = tmp_path / "tiny.pt"
    save_checkpoint(checkpoint, tiny_supernet, {}, {"name": "synthetic", "split_seed": 0}, {})
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    device = Device("host", protocol=LatencyProtocol(runtime="eager", threads=1, warmup=1))
    store.add_device(device)
    state = load_checkpoint(checkpoint)
    store.register_supernet(state, checkpoint)
    evaluator = CachedEvaluator(tiny_supernet, state.hash, tiny_data, device, store, QUICK)
    for mode in (tiny_supernet.full_mode(), tiny_supernet.uniform_mode(2), tiny_supernet.smallest_mode()):
        evaluator.evaluate(mode)
    front = store.get_front("host", "accuracy,latency", state.hash, noise_aware=False)
    graphs = set()
    for evaluation in front:
        realization = Realization.from_dict(evaluation.latency["realization"])
        static = tiny_supernet.realize(Mode.from_json(evaluation.mode_json), realization)
        graphs.add(graph_digest(static, tiny_supernet.input_shape, device.protocol))
    graphs.discard(evaluator.reference.digest)  # the reference's figure is 1 by definition: never re-measured
    assert refine_front(evaluator, store, windows=2) == len(graphs)
    for digest in graphs:
        assert evaluator.book.get(digest).windows == 3
    refreshed = store.refresh_latency(front)
    assert all(e.latency["paired"]["windows"] in (0, 3) for e in refreshed)
