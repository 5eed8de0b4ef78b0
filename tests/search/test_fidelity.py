"""Multi-fidelity evaluation (`search._fidelity`): the promotion rule on constructed points, and
every registered strategy through a multi-fidelity session: first looks stored under their own key,
fronts of full-fidelity figures only, every dismissed mode beaten beyond noise by another look, and
a resumed search that evaluates nothing again at either fidelity."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from subnetsearch.errors import InputError
from subnetsearch.search import EvaluationSettings, Fidelity, SearchSession, get_strategy, look_figures
from subnetsearch.storage import Figures, could_join, surely_no_worse
from tests.search.test_strategies import CASES, board_store

NAMES = ("accuracy", "latency")


def point(accuracy: float, low: float, high: float, latency: float, spread: float = 0.0,
          correct: np.ndarray | None = None) -> Figures:
    return Figures({"accuracy": accuracy, "latency": latency}, {"accuracy": low, "latency": latency - spread},
                   {"accuracy": high, "latency": latency + spread}, correct)


def test_a_candidate_beaten_beyond_its_intervals_is_not_promoted() -> None:
    front = point(0.92, 0.91, 0.93, 1.0, 0.05)
    slower_and_worse = point(0.85, 0.84, 0.86, 1.5, 0.05)
    assert not could_join(slower_and_worse, [front], NAMES)
    assert could_join(front, [slower_and_worse], NAMES)


def test_a_candidate_that_may_join_within_noise_is_promoted() -> None:
    front = point(0.92, 0.91, 0.93, 1.0, 0.05)
    overlapping_accuracy = point(0.91, 0.90, 0.92, 1.5, 0.05)  # worse by its point figures, not beyond noise
    overlapping_latency = point(0.85, 0.84, 0.86, 1.08, 0.05)
    faster = point(0.80, 0.79, 0.81, 0.5, 0.05)  # trades: on the front whatever the noise
    for candidate in (overlapping_accuracy, overlapping_latency, faster):
        assert could_join(candidate, [front], NAMES)
    assert could_join(front, [], NAMES)  # the first look of a search always goes on


def test_paired_accuracy_on_the_same_images_separates_what_intervals_cannot() -> None:
    rng = np.random.default_rng(0)
    better = rng.random(1000) < 0.9
    worse = better.copy()
    worse[np.flatnonzero(better)[:30]] = False  # the same images, 30 more wrong: 3 points below
    a = point(better.mean(), better.mean() - 0.02, better.mean() + 0.02, 1.0, 0.01, better)
    b = point(worse.mean(), worse.mean() - 0.02, worse.mean() + 0.02, 1.2, 0.01, worse)
    assert a.low["accuracy"] < b.high["accuracy"]  # the intervals overlap ...
    assert surely_no_worse(a, b, "accuracy")  # ... the paired difference (30 discordant images) does not
    assert not could_join(b, [a], NAMES)
    identical = point(b.values["accuracy"], 0, 1, 1.2, 0.01, worse.copy())
    assert could_join(identical, [b], NAMES)  # the same figures: a tie is never a dismissal


def test_fidelity_settings_are_never_more_work_and_are_checked() -> None:
    full = EvaluationSettings(calibration_batches=2, max_eval_batches=1)
    low = Fidelity(calibration_batches=4, eval_batches=3).settings(full)
    assert (low.calibration_batches, low.max_eval_batches, low.fidelity) == (2, 1, "low")
    assert "fidelity" not in EvaluationSettings().to_dict()  # full-fidelity keys as before multi-fidelity
    assert low.to_dict()["fidelity"] == "low"
    for bad in ({"eval_batches": 0}, {"rounds": 1}, {"z": 0.0}, {"calibration_batches": -1}):
        with pytest.raises(InputError):
            Fidelity(**bad)
    with pytest.raises(InputError, match="fidelity"):
        EvaluationSettings(fidelity="medium")


@pytest.mark.parametrize(("strategy", "options"), CASES, ids=[f"{n}-{'-'.join(map(str, o.values()))}" for n, o in CASES])
def test_every_strategy_searches_at_two_fidelities(tmp_path, tiny_supernet, toy_strategy, strategy: str,
                                                   options: dict) -> None:
    checkpoint, url, store = board_store(tmp_path, tiny_supernet)  # imported: accuracy and MACs
    settings = EvaluationSettings(calibration_batches=2, calibration_batch_size=16, max_eval_batches=1)
    fidelity = Fidelity(calibration_batches=1, eval_batches=1)

    def session() -> SearchSession:
        return SearchSession(store, url, store.get_device("board"), checkpoint, settings, fidelity=fidelity)

    def run(searching: SearchSession) -> optuna.Study:
        chosen = get_strategy(strategy)
        return chosen.run(searching, chosen.options(options), say=lambda line: None, name="mf").study

    first = session()
    study = run(first)
    assert first.screening is not None and first.screen is not None
    looks = {e.mode_id: e for e in store.list_evaluations("board") if e.settings.get("fidelity") == "low"}
    full = {e.mode_id: e for e in store.list_evaluations("board") if e.settings.get("fidelity", "full") == "full"}
    assert looks and full and set(full) <= set(looks)  # every full evaluation followed a first look
    assert first.screen.promoted == len(full) and first.screen.dismissed == len(looks) - len(full)
    assert first.screening.misses == len(looks) and first.evaluator.misses == len(full)
    if strategy == "random-modes":  # seeded: this one dismisses 4 of its 8 (the others may dismiss none)
        assert first.screen.dismissed > 0
    for trial in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        mode_id = trial.user_attrs["mode_id"]
        expected = full.get(mode_id) or looks[mode_id]
        assert trial.user_attrs.get("fidelity", "full") == expected.settings.get("fidelity", "full")
        assert trial.values[0] == expected.accuracy
    figures = {mode_id: look_figures(e, store.get_correctness(e)) for mode_id, e in looks.items()}
    for mode_id in set(looks) - set(full):  # a dismissed mode: another look beats it beyond noise
        others = [f for other, f in figures.items() if other != mode_id]
        assert not could_join(figures[mode_id], others, ["accuracy", "macs"], fidelity.z)
    for objectives in ("accuracy,macs", "all"):  # fronts of full-fidelity figures only
        assert {e.mode_id for e in store.get_front("board", objectives)} <= set(full)
    assert store.best_mode("board").best.mode_id in full
    again = session()
    resumed = run(again)
    assert again.evaluator.misses == 0 and again.screening is not None and again.screening.misses == 0
    assert len(resumed.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == \
        len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))
    store.dispose()
