import pytest

from subnetsearch.devices import Device
from subnetsearch.search import CachedEvaluator, EvaluationSettings, greedy_dse, next_candidates
from subnetsearch.spaces import Knob, SearchSpace
from subnetsearch.storage import StoredEvaluation


def _synthetic(space: SearchSpace, log: list):
    """Accuracy falls and MACs fall as groups rise, layer 'b' hurting accuracy most."""
    weight = {"a": 0.01, "b": 0.05, "c": 0.02}

    def evaluate_batch(modes):
        log.append(len(modes))
        results = []
        for mode in modes:
            steps = {name: space[name].values.index(value) for name, value in mode.values.items()}
            accuracy = 0.95 - sum(weight[n] * s for n, s in steps.items())
            macs = 1000 // (2 ** steps["a"]) + 4000 // (2 ** steps["b"]) + 2000 // (2 ** steps["c"])
            results.append(StoredEvaluation("h", "d", mode.id, mode.to_json(), "k", {}, accuracy, 0.1, macs, 1,
                                            None, None, float(macs), "model"))
        return results

    return evaluate_batch


def _space() -> SearchSpace:
    return SearchSpace([Knob(name, "ordered", (1, 2, 4)) for name in "abc"])


def test_dse_follows_algorithm_2_exactly() -> None:
    space, log = _space(), []
    full = space.mode({"a": 1, "b": 1, "c": 1})
    result = greedy_dse(space, full, _synthetic(space, log), delta=0.0, cost="macs")
    # the full network, then per iteration one candidate per layer not yet at 4 groups; 6 moves in all
    assert log == [1] + [sum(step.mode[n] < 4 for n in "abc") for step in result.trajectory[:-1]]
    assert len(result.trajectory) == 1 + 6
    for previous, step in zip(result.trajectory, result.trajectory[1:], strict=False):
        changed = [n for n in "abc" if previous.mode[n] != step.mode[n]]
        assert changed == [step.changed_layer] and step.mode[step.changed_layer] == 2 * previous.mode[step.changed_layer]
        candidates = _synthetic(space, [])([m for _, m in next_candidates(space, previous.mode)])
        assert step.loss == min(r.macs / r.accuracy for r in candidates)  # line 8-10: argmin of t / acc
    assert result.trajectory[-1].mode == space.mode({"a": 4, "b": 4, "c": 4})
    assert result.evaluations == sum(log)


def test_dse_stops_at_the_threshold_and_chooses_the_last_mode_above_it() -> None:
    space = _space()
    full = space.mode({"a": 1, "b": 1, "c": 1})
    result = greedy_dse(space, full, _synthetic(space, []), delta=0.90, cost="macs")
    assert result.trajectory[-1].accuracy <= 0.90 < result.trajectory[-2].accuracy  # line 3
    assert result.chosen.accuracy >= 0.90 and result.chosen == min(
        (s for s in result.trajectory if s.accuracy >= 0.90), key=lambda s: s.cost)
    nothing = greedy_dse(space, full, _synthetic(space, []), delta=0.99, cost="macs")
    assert nothing.chosen is None and len(nothing.trajectory) == 1


def test_dse_on_a_real_supernet_with_the_cached_evaluator(tiny_supernet, tiny_data) -> None:
    evaluator = CachedEvaluator(tiny_supernet, "tiny", tiny_data, Device("t"),
                                settings=EvaluationSettings(calibration_batches=2, calibration_batch_size=16),
                                measure=False)
    result = greedy_dse(tiny_supernet.space, tiny_supernet.full_mode(),
                        lambda modes: [evaluator.evaluate(m) for m in modes], delta=0.0, cost="energy",
                        max_iterations=3)
    assert len(result.trajectory) == 4
    costs = [step.cost for step in result.trajectory]
    assert costs == sorted(costs, reverse=True)


@pytest.mark.parametrize("kwargs, message", [({"cost": "speed"}, "unknown cost"), ({"delta": 1.5}, "delta")])
def test_bad_dse_settings(kwargs, message) -> None:
    space = _space()
    arguments = {"delta": 0.5, "cost": "macs", **kwargs}
    with pytest.raises(ValueError, match=message):
        greedy_dse(space, space.mode({"a": 1, "b": 1, "c": 1}), _synthetic(space, []), **arguments)


def test_latency_cost_needs_measured_latency(tiny_supernet, tiny_data) -> None:
    evaluator = CachedEvaluator(tiny_supernet, "tiny", tiny_data, Device("far", "ray-node"),
                                settings=EvaluationSettings(calibration_batches=1, calibration_batch_size=16))
    with pytest.raises(ValueError, match="needs measured latency"):
        greedy_dse(tiny_supernet.space, tiny_supernet.full_mode(), lambda ms: [evaluator.evaluate(m) for m in ms],
                   delta=0.0, cost="latency")


def _paired_batch(space: SearchSpace, figures: dict[str, tuple[float, float, float, float]]):
    """Layer name changed -> (accuracy, ratio, low, high) of the candidate; paired latency."""
    def evaluate_batch(modes):
        results = []
        for mode in modes:
            changed = [n for n, v in mode.values.items() if v != 1]
            accuracy, ratio, low, high = figures[changed[0]] if changed else (0.95, 1.0, 1.0, 1.0)
            latency = {"paired": {"ratio": ratio, "low": low, "high": high, "graph": mode.id, "reference": "r"}}
            results.append(StoredEvaluation("h", "d", mode.id, mode.to_json(), "k", {}, accuracy, 0.1, 100, 1,
                                            ratio * 0.5, latency, 1.0, "model"))
        return results
    return evaluate_batch


def test_dse_treats_latencies_equal_within_their_intervals_as_ties_and_takes_the_more_accurate() -> None:
    space = _space()
    full = space.mode({"a": 1, "b": 1, "c": 1})
    # 'a' has the lowest loss by its point figure, but 'c' is as fast within the intervals and more accurate
    figures = {"a": (0.90, 0.80, 0.70, 0.90), "b": (0.93, 0.95, 0.93, 0.97), "c": (0.94, 0.84, 0.75, 0.95)}
    result = greedy_dse(space, full, _paired_batch(space, figures), delta=0.0, cost="latency", max_iterations=1)
    assert result.trajectory[1].changed_layer == "c"
    # beyond the intervals the argmin of loss stands (Algorithm 2, line 10)
    figures["c"] = (0.94, 0.95, 0.92, 0.98)
    result = greedy_dse(space, full, _paired_batch(space, figures), delta=0.0, cost="latency", max_iterations=1)
    assert result.trajectory[1].changed_layer == "a"
