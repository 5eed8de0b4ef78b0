"""The predictor strategy: its model recovers a known additive truth, its loop finds the exact front
of a small synthetic space with fewer evaluations than the space has, it never proposes a mode its
own prediction puts over a budget, and a killed predictor search resumes with nothing lost or
evaluated twice and the same batches as an uninterrupted one. (The strategy contract of every
strategy, predictor included, is tests/search/test_strategies.py; Ray fan-out, tests/distributed.)"""

from __future__ import annotations

import itertools

import numpy as np
import optuna
import pytest

from subnetsearch.devices import Device
from subnetsearch.pareto import nondominated
from subnetsearch.search import EvaluationSettings, PredictorSettings, SearchSession, fit_model, kendall_tau, plan_round
from subnetsearch.search._predictor import Limits, initial_design, predictor_rounds_loop
from subnetsearch.spaces import Knob, Mode, SearchSpace
from subnetsearch.storage import Store, distinct_trials
from subnetsearch.supernets import save_checkpoint

SPACE = SearchSpace([Knob(f"layer{i}", "ordered", (1, 2, 4)) for i in range(4)])  # 81 modes
EFFECT = {f"layer{i}": {1: 0.0, 2: 0.01 * (i + 1), 4: 0.035 * (i + 1)} for i in range(4)}  # accuracy lost
COST = {f"layer{i}": 10.0 * (4 - i) for i in range(4)}


def truth(mode: Mode) -> dict[str, float]:
    accuracy = 0.95 - sum(EFFECT[k][v] for k, v in mode.values.items())
    accuracy -= 0.02 * (mode.values["layer0"] == 4 and mode.values["layer1"] == 4)  # one interaction
    return {"accuracy": accuracy, "macs": sum(COST[k] / v for k, v in mode.values.items())}


def every_mode() -> list[Mode]:
    names = [k.name for k in SPACE.knobs]
    grid = itertools.product(*(k.values for k in SPACE.knobs))
    return [SPACE.mode(dict(zip(names, values, strict=True))) for values in grid]


def test_the_model_recovers_an_additive_truth_and_ranks_held_out_modes() -> None:
    additive = {**EFFECT}
    train = initial_design(SPACE, 30, seed=1)
    accuracy = [0.9 - sum(additive[k][v] for k, v in m.values.items()) for m in train]
    model = fit_model(SPACE, train, accuracy)
    held_out = [m for m in every_mode() if m.id not in {t.id for t in train}]
    real = np.asarray([0.9 - sum(additive[k][v] for k, v in m.values.items()) for m in held_out])
    assert np.max(np.abs(model.predict(held_out) - real)) < 2e-3
    assert kendall_tau(model.predict(held_out), real) > 0.97
    assert model.loo_rmse < 2e-3


def test_kendall_tau() -> None:
    assert kendall_tau([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert kendall_tau([1], [1]) is None and kendall_tau([1, 1], [2, 3]) is None


def _loop(settings: PredictorSettings, limits: Limits = Limits(), exact=None) -> list[tuple[int, Mode, dict]]:
    exact = {"macs": lambda m: truth(m)["macs"]} if exact is None else exact
    history: list[tuple[int, Mode, dict]] = [(0, m, truth(m)) for m in initial_design(SPACE, settings.init_size,
                                                                                    settings.seed)]

    def run(modes, round_number, predicted, info) -> None:
        for mode, guess in zip(modes, predicted, strict=True):
            assert mode.id not in {m.id for _, m, _ in history}  # never a mode twice
            assert not any(v > 0 for v in limits.violations(guess).values())  # never over a limit by prediction
            history.append((round_number, mode, truth(mode)))

    predictor_rounds_loop(SPACE, ["accuracy", "macs"], settings, exact, limits, lambda: history, run)
    return history


def test_the_strategy_reaches_the_exact_front_of_a_small_space() -> None:
    everything = every_mode()
    points = [[truth(m)["accuracy"], truth(m)["macs"]] for m in everything]
    front = {m.id for m, keep in zip(everything, nondominated(points, ["accuracy", "macs"]), strict=True) if keep}
    history = _loop(PredictorSettings(budget=45, init_size=12, batch=6, population=16, generations=10, seed=2))
    assert len(history) == 45 < len(everything)
    assert front <= {m.id for _, m, _ in history}


def test_a_constrained_search_never_proposes_a_mode_over_its_budget_by_its_prediction() -> None:
    def latency(mode: Mode) -> float:  # known before evaluation, as from a device's lookup table
        return truth(mode)["macs"] / 100

    objectives, budget = ["accuracy", "latency"], 0.4
    history = [(m, {"accuracy": truth(m)["accuracy"], "latency": latency(m)}) for m in initial_design(SPACE, 10, 0)]
    settings = PredictorSettings(budget=30, init_size=10, batch=5, population=16, generations=8)
    for round_number in (1, 2, 3):
        plan = plan_round(SPACE, objectives, history, {"latency": latency}, settings, round_number, 5,
                          Limits(max_latency_ms=budget))
        assert plan.modes and all(latency(m) <= budget for m in plan.modes)
        history += [(m, {"accuracy": truth(m)["accuracy"], "latency": latency(m)}) for m in plan.modes]
    learned = _loop(PredictorSettings(budget=30, init_size=10, batch=5, population=16, generations=8),
                    Limits(min_accuracy=0.85))
    assert len(learned) > 10  # rounds ran; each proposal was predicted feasible (asserted in the loop)


def test_the_same_history_and_seed_plan_the_same_batch() -> None:
    prior = [(m, truth(m)) for m in initial_design(SPACE, 12, 0)]
    settings = PredictorSettings(budget=30, init_size=12, batch=5, population=16, generations=8, seed=4)
    exact = {"macs": lambda m: truth(m)["macs"]}
    first = plan_round(SPACE, ["accuracy", "macs"], prior, exact, settings, 1, 5)
    again = plan_round(SPACE, ["accuracy", "macs"], prior, exact, settings, 1, 5)
    assert [m.id for m in first.modes] == [m.id for m in again.modes] and len(first.modes) == 5
    assert first.info["models"]["accuracy"]["features"].startswith("additive")


def test_hints_inform_the_learned_objectives_without_becoming_objectives() -> None:
    """Accuracy and measured latency learned, MACs known exactly but not searched (the main job's
    case): with MACs as a hint, latency that follows MACs is learned from the hint's log-cost
    features and predicted closer than by per-layer effects alone."""
    def measured(mode: Mode) -> dict[str, float]:
        return {"accuracy": truth(mode)["accuracy"], "latency": 0.05 + 0.002 * truth(mode)["macs"] ** 1.3}

    objectives = ["accuracy", "latency"]
    prior = [(m, measured(m)) for m in initial_design(SPACE, 12, 3)]
    settings = PredictorSettings(budget=30, init_size=12, batch=5, population=16, generations=8)
    hinted = plan_round(SPACE, objectives, prior, {}, settings, 1, 5, hints={"macs": lambda m: truth(m)["macs"]})
    plain = plan_round(SPACE, objectives, prior, {}, settings, 1, 5)
    assert "log-costs" in hinted.info["models"]["latency"]["features"]
    assert "log-costs" not in plain.info["models"]["latency"]["features"]
    assert hinted.info["models"]["latency"]["loo_rmse"] < 0.5 * plain.info["models"]["latency"]["loo_rmse"]
    assert set(hinted.predicted[0]) == set(objectives)  # the hint is no objective
    for mode, guess in zip(hinted.modes, hinted.predicted, strict=True):
        assert guess["latency"] == pytest.approx(measured(mode)["latency"], rel=0.05)


@pytest.mark.parametrize("values, message", [
    ({"init": "grid"}, "init must be one of"), ({"batch": 0}, "batch must be >= 1"),
    ({"budget": 5, "init_size": 6}, "must not exceed the budget"), ({"population": 2}, "population must be >= 4"),
])
def test_bad_predictor_settings_are_refused(values, message) -> None:
    with pytest.raises(ValueError, match=message):
        PredictorSettings(**values)


QUICK = EvaluationSettings(calibration_batches=1, calibration_batch_size=16, max_eval_batches=1)


@pytest.mark.slow
def test_a_killed_predictor_search_resumes_with_the_same_batches(tmp_path, tiny_supernet) -> None:
    checkpoint = tmp_path / "tiny.pt"
    save_checkpoint(checkpoint, tiny_supernet, {}, {"name": "synthetic", "split_seed": 0}, {})

    def session(store_name: str) -> SearchSession:
        url = f"sqlite:///{tmp_path / store_name}"
        store = Store(url)
        if not store.list_devices():
            store.add_device(Device("board", location="imported"))
        return SearchSession(store, url, store.get_device("board"), checkpoint, QUICK)

    def search(s: SearchSession) -> optuna.Study:
        return s.predictor(12, ["accuracy", "macs"], seed=5, init_size=4, batch=3, name="p")[1]

    whole = session("whole.db")
    expected = [(t.user_attrs["round"], t.user_attrs["mode_id"]) for t in distinct_trials(search(whole))]
    assert len(expected) == 12 and max(r for r, _ in expected) == 3

    dying = session("killed.db")
    original, calls = dying.timed_batch, []

    def killed_in_round_two(modes):
        calls.append(len(modes))
        if len(calls) == 3:  # round 2: one of its modes evaluated (and stored), then the process dies
            dying.evaluator.evaluate(modes[0])
            raise KeyboardInterrupt
        return original(modes)

    dying.timed_batch = killed_in_round_two  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        search(dying)
    assert dying.store.get_search("p").status == "interrupted"
    resumed = session("killed.db")
    study = search(resumed)
    assert [(t.user_attrs["round"], t.user_attrs["mode_id"]) for t in distinct_trials(study)] == expected
    assert dying.evaluator.misses + resumed.evaluator.misses == whole.evaluator.misses  # nothing lost or repeated
    record = resumed.store.get_search("p")
    assert record.status == "finished" and [r["round"] for r in record.summary["rounds"]] == [1, 2, 3]
    assert [r["evaluated"] for r in record.summary["rounds"]] == [3, 3, 2]  # the last round fills the budget
    assert all("accuracy" in r["kendall_tau"] and r["trained_on"] >= 4 for r in record.summary["rounds"])
