from subnetsearch.devices import Device, LatencyProtocol
from subnetsearch.search import CachedEvaluator, EvaluationSettings
from subnetsearch.storage import Store
from subnetsearch.supernets import load_checkpoint, save_checkpoint

QUICK = EvaluationSettings(calibration_batches=2, calibration_batch_size=16)
DEVICE = Device("test-host", protocol=LatencyProtocol(threads=1, warmup=1, repeats=1, min_run_time=0.01))


def test_a_mode_is_never_evaluated_twice_even_across_processes(tmp_path, tiny_supernet, tiny_data) -> None:
    path = tmp_path / "net.pt"
    save_checkpoint(path, tiny_supernet, {}, {"name": "synthetic"}, {})
    checkpoint = load_checkpoint(path)
    store = Store(f"sqlite:///{tmp_path / 'cache.db'}")
    store.register_supernet(checkpoint, path)
    store.add_device(DEVICE)
    evaluator = CachedEvaluator(checkpoint.build(), checkpoint.hash, tiny_data, DEVICE, store, QUICK)
    mode = tiny_supernet.uniform_mode(2)
    first = evaluator.evaluate(mode)
    assert evaluator.evaluate(mode) == first and (evaluator.hits, evaluator.misses) == (1, 1)
    assert first.latency_ms > 0 and first.latency["measured"] is True and first.energy_source == "model"
    # A new evaluator (as another process would) reads the stored result instead of measuring again.
    again = CachedEvaluator(checkpoint.build(), checkpoint.hash, tiny_data, DEVICE, Store(store.engine.url), QUICK)
    assert again.evaluate(mode) == first and (again.hits, again.misses) == (1, 0)
    # Other settings are another key: evaluated anew.
    other = CachedEvaluator(checkpoint.build(), checkpoint.hash, tiny_data, DEVICE, store,
                            EvaluationSettings(calibration_batches=0), measure=False)
    assert other.evaluate(mode).latency_ms is None and other.misses == 1
    assert store.count_evaluations() == 2


def test_without_a_store_results_are_cached_in_memory(tiny_supernet, tiny_data) -> None:
    evaluator = CachedEvaluator(tiny_supernet, "hash", tiny_data, DEVICE, None, QUICK, measure=False)
    mode = tiny_supernet.smallest_mode()
    assert evaluator.evaluate(mode) is evaluator.evaluate(mode)
    assert (evaluator.hits, evaluator.misses) == (1, 1)
