"""The contract every search strategy keeps, over DSE and every Optuna sampler (a strategy added
later joins by a line in STRATEGIES): the search is recorded by name and finished; every complete
trial of its study is one stored evaluation of its mode and no mode is evaluated twice; the stored
front of the device is the non-dominated set of those evaluations; rerunning it by name resumes
without evaluating anything again."""

from __future__ import annotations

import optuna
import pytest

from subnetsearch.devices import Device
from subnetsearch.pareto import nondominated
from subnetsearch.search import PREDICTOR_INITS, SAMPLERS, Constraints, EvaluationSettings, SearchSession
from subnetsearch.storage import Store
from subnetsearch.supernets import save_checkpoint

QUICK = EvaluationSettings(calibration_batches=1, calibration_batch_size=16, max_eval_batches=1)
OBJECTIVES = ["accuracy", "macs"]
STRATEGIES = ["dse", *(f"optuna:{sampler}" for sampler in SAMPLERS), *(f"predictor:{init}" for init in PREDICTOR_INITS)]


def _run(session: SearchSession, strategy: str, name: str) -> optuna.Study:
    if strategy == "dse":
        _, study = session.dse(0.0, "macs", OBJECTIVES, max_iterations=2, name=name)
    elif strategy.startswith("predictor:"):
        _, study = session.predictor(8, OBJECTIVES, seed=3, init=strategy.split(":")[1], init_size=4, batch=2,
                                     name=name)
    else:
        _, study = session.optuna(strategy.split(":")[1], 5, OBJECTIVES, Constraints(), seed=3, name=name)
    return study


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_records_stores_and_resumes(tmp_path, tiny_supernet, strategy: str) -> None:
    checkpoint = tmp_path / "tiny.pt"
    save_checkpoint(checkpoint, tiny_supernet, {}, {"name": "synthetic", "split_seed": 0}, {})
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = Store(url)
    store.add_device(Device("board", location="imported"))  # no latency: accuracy and MACs

    def session() -> SearchSession:
        return SearchSession(store, url, store.get_device("board"), checkpoint, QUICK)

    first = session()
    study = _run(first, strategy, "contract")
    record = store.get_search("contract")
    assert record is not None and record.status == "finished" and record.study_name == study.study_name
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    modes = [t.user_attrs["mode_id"] for t in complete]
    stored = {e.mode_id: e for e in store.list_evaluations("board")}
    assert modes and len(modes) == len(set(modes)) and set(modes) == set(stored)
    if strategy.startswith("predictor:"):
        assert len(modes) == 8  # its budget of distinct modes, exactly (the DSE design cut at its size)
    assert first.evaluator.misses == len(stored)  # each mode evaluated once
    for trial in complete:
        assert trial.values == [stored[trial.user_attrs["mode_id"]].accuracy,
                                float(stored[trial.user_attrs["mode_id"]].macs)]
    evaluations = list(stored.values())
    mask = nondominated([[e.accuracy, float(e.macs)] for e in evaluations], OBJECTIVES)
    expected = {e.mode_id for e, keep in zip(evaluations, mask, strict=True) if keep}
    assert {e.mode_id for e in store.get_front("board", "accuracy,macs", noise_aware=False)} == expected
    assert {e.mode_id for e in store.get_front("board", "accuracy,macs")} <= expected  # within noise: fewer
    again = session()
    resumed = _run(again, strategy, "contract")
    assert again.evaluator.misses == 0  # nothing evaluated twice
    assert store.get_search("contract").status == "finished"
    assert [t.user_attrs["mode_id"] for t in resumed.get_trials(states=(optuna.trial.TrialState.COMPLETE,))] == modes
    store.dispose()
