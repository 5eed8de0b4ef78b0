"""The contract every registered search strategy keeps (every Optuna sampler and predictor design
as variants; the toy fourth strategy of toy_strategy.py joins by being registered): the search is
recorded by name and finished; every complete trial of its study is one stored evaluation of its
mode and no mode is evaluated twice; the stored front of the device is the non-dominated set of
those evaluations; rerunning it by name resumes without evaluating anything again."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import optuna
import pytest

from subnetsearch.devices import Device
from subnetsearch.pareto import nondominated
from subnetsearch.search import PREDICTOR_INITS, SAMPLERS, STRATEGIES, EvaluationSettings, SearchSession, get_strategy
from subnetsearch.storage import Store
from subnetsearch.supernets import save_checkpoint

QUICK = EvaluationSettings(calibration_batches=1, calibration_batch_size=16, max_eval_batches=1)
OBJECTIVES = ["accuracy", "macs"]
# small budgets for any strategy whose options have these names; variants where a strategy has a choice
QUICK_OPTIONS = {"objectives": tuple(OBJECTIVES), "trials": 8, "max_iterations": 2, "delta": 0.0, "cost": "macs",
                 "init_size": 4, "batch": 2, "seed": 3}
VARIANTS = {"sampler": SAMPLERS, "init": PREDICTOR_INITS}
TOY = "random-modes"


def _cases() -> list[tuple[str, dict]]:
    from tests.search.toy_strategy import RandomModes

    cases = []
    for name, strategy in [*STRATEGIES.items(), (TOY, RandomModes())]:
        fields = {f.name for f in dataclasses.fields(strategy.Options)}
        base = {key: value for key, value in QUICK_OPTIONS.items() if key in fields}
        varied = [(key, choices) for key, choices in VARIANTS.items() if key in fields]
        if not varied:
            cases.append((name, base))
        for key, choices in varied:
            cases.extend((name, {**base, key: choice}) for choice in choices)
    return cases


CASES = _cases()


def test_every_registered_strategy_is_in_the_suite() -> None:
    assert {name for name, _ in CASES} == set(STRATEGIES) | {TOY}


def board_store(tmp_path, supernet) -> tuple[Path, str, Store]:
    """The supernet's checkpoint (synthetic data), a SQLite store's URL and the store, holding the
    imported device "board" (no latency here: accuracy and MACs)."""
    checkpoint = tmp_path / "tiny.pt"
    save_checkpoint(checkpoint, supernet, {}, {"name": "synthetic", "split_seed": 0}, {})
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = Store(url)
    store.add_device(Device("board", location="imported"))
    return checkpoint, url, store


def _run(session: SearchSession, strategy: str, options: dict, name: str) -> optuna.Study:
    chosen = get_strategy(strategy)
    return chosen.run(session, chosen.options(options), say=lambda line: None, name=name).study


@pytest.mark.parametrize(("strategy", "options"), CASES, ids=[f"{n}-{'-'.join(map(str, o.values()))}" for n, o in CASES])
def test_every_strategy_records_stores_and_resumes(tmp_path, tiny_supernet, toy_strategy, strategy: str,
                                                   options: dict) -> None:
    checkpoint, url, store = board_store(tmp_path, tiny_supernet)

    def session() -> SearchSession:
        return SearchSession(store, url, store.get_device("board"), checkpoint, QUICK)

    first = session()
    study = _run(first, strategy, options, "contract")
    record = store.get_search("contract")
    assert record is not None and record.status == "finished" and record.study_name == study.study_name
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    modes = [t.user_attrs["mode_id"] for t in complete]
    stored = {e.mode_id: e for e in store.list_evaluations("board")}
    assert modes and len(modes) == len(set(modes)) and set(modes) == set(stored)
    if strategy == "predictor":
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
    resumed = _run(again, strategy, options, "contract")
    assert again.evaluator.misses == 0  # nothing evaluated twice
    assert store.get_search("contract").status == "finished"
    assert [t.user_attrs["mode_id"] for t in resumed.get_trials(states=(optuna.trial.TrialState.COMPLETE,))] == modes
    store.dispose()


def test_a_registered_strategy_is_searched_from_the_cli(tmp_path, tiny_supernet, toy_strategy) -> None:
    """The toy strategy, known only through `register_strategy`: `search --strategy` runs it with its
    options by name (`--set`), refuses an option it does not take, and the search is listed."""
    from typer.testing import CliRunner

    from subnetsearch.cli import app

    checkpoint = tmp_path / "tiny.pt"
    save_checkpoint(checkpoint, tiny_supernet, {}, {"name": "synthetic", "split_seed": 0}, {})
    url, runner = f"sqlite:///{tmp_path / 'store.db'}", CliRunner()
    store = Store(url)
    store.add_device(Device("board", location="imported"))
    store.dispose()
    common = ["search", "--strategy", toy_strategy, "--checkpoint", str(checkpoint), "--device", "board",
              "--storage", url, "--objectives", "accuracy,macs", "--calibration-batches", "1"]
    done = runner.invoke(app, [*common, "--set", "trials=3", "--set", "seed=2"])
    assert done.exit_code == 0, done.output
    assert "evaluated 3 random modes" in done.output and "Pareto front (accuracy, macs)" in done.output
    refused = runner.invoke(app, [*common, "--delta", "0.5"])
    assert refused.exit_code == 2 and "takes no option 'delta'" in refused.output and "trials" in refused.output
    bad = runner.invoke(app, [*common, "--set", "trials=many"])
    assert bad.exit_code == 2 and "trials: 'many' is not an integer" in bad.output
    listed = runner.invoke(app, ["searches", "--storage", url])
    assert listed.exit_code == 0 and toy_strategy in listed.output
    unknown = runner.invoke(app, [*common[:2], "nope", *common[3:]])
    assert unknown.exit_code == 2 and "unknown strategy 'nope'" in unknown.output and toy_strategy in unknown.output
