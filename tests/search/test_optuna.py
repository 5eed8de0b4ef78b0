import optuna
import pytest

from subnetsearch.devices import Device
from subnetsearch.search import (
    SAMPLERS,
    CachedEvaluator,
    Constraints,
    EvaluationSettings,
    greedy_dse,
    make_sampler,
    open_study,
    optuna_search,
    record_trial,
)
from subnetsearch.spaces import mode_from_params, to_optuna
from subnetsearch.storage import Store

QUICK = EvaluationSettings(calibration_batches=1, calibration_batch_size=16, max_eval_batches=1)


@pytest.fixture
def evaluator(tiny_supernet, tiny_data):
    return CachedEvaluator(tiny_supernet, "tiny", tiny_data, Device("t"), settings=QUICK, measure=False)


def test_space_translates_to_optuna_and_back(tiny_supernet) -> None:
    distributions = to_optuna(tiny_supernet.space)
    assert set(distributions) == {knob.name for knob in tiny_supernet.space.knobs}
    assert distributions["layer1.0.conv1"].choices == (1, 2, 4, 8)
    mode = tiny_supernet.uniform_mode(4)
    assert mode_from_params(tiny_supernet.space, dict(mode.values)) == mode


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_multi_objective_search_records_named_metrics_and_constraints(tmp_path, tiny_supernet, evaluator,
                                                                      sampler: str) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    Store(url)  # the project's tables and Optuna's share one database
    study = open_study(url, "tiny-optuna", ["accuracy", "macs"], make_sampler(sampler, seed=0),
                       {"supernet": "tiny", "device": "t", "strategy": f"optuna-{sampler}"})
    results = optuna_search(study, tiny_supernet.space, evaluator.evaluate, 6, ["accuracy", "macs"],
                            Constraints(min_accuracy=0.0))
    reopened = optuna.load_study(study_name="tiny-optuna", storage=url)
    assert reopened.metric_names == ["accuracy", "macs"] and reopened.user_attrs["device"] == "t"
    trials = reopened.get_trials()
    assert len(trials) == 6 == len(results)
    for trial, result in zip(trials, results, strict=True):
        assert trial.values == [result.accuracy, float(result.macs)]
        assert trial.constraints == {"min_accuracy": pytest.approx(-result.accuracy)}
        assert trial.user_attrs["mode_id"] == result.mode_id
    assert reopened.best_trials  # a Pareto front of feasible trials exists


def test_dse_evaluations_are_recorded_as_trials(tmp_path, tiny_supernet, evaluator) -> None:
    url = f"sqlite:///{tmp_path / 'dse.db'}"
    study = open_study(url, "tiny-dse", ["accuracy", "energy"], make_sampler("random", 0), {"strategy": "dse"})
    space = tiny_supernet.space

    def evaluate_and_record(modes):
        results = [evaluator.evaluate(m) for m in modes]
        for mode, result in zip(modes, results, strict=True):
            record_trial(study, space, mode, result, ["accuracy", "energy"], Constraints(), {"strategy": "dse"})
        return results

    result = greedy_dse(space, tiny_supernet.full_mode(), evaluate_and_record, delta=0.0, cost="energy",
                        max_iterations=2)
    assert len(study.get_trials()) == result.evaluations == 1 + 8 + 8


def test_bad_sampler_and_objective_names() -> None:
    with pytest.raises(ValueError, match="unknown sampler"):
        make_sampler("annealing", 0)
    with pytest.raises(ValueError, match="unknown objective"):
        open_study("sqlite://", "x", ["speed"], make_sampler("random", 0), {})


def test_trials_left_running_by_a_killed_process_are_finished(tmp_path, tiny_supernet, evaluator) -> None:
    from subnetsearch.search import finish_orphans

    url = f"sqlite:///{tmp_path / 'orphans.db'}"
    study = open_study(url, "orphans", ["accuracy", "macs"], make_sampler("random", 0), {})
    distributions = to_optuna(tiny_supernet.space)
    abandoned = [study.ask(distributions) for _ in range(2)]  # asked, never told: what SIGKILL leaves
    assert all(t.number in (0, 1) for t in abandoned)
    half = study.ask()  # killed while the sampler was still setting parameters: no complete mode
    half.suggest_categorical("layer1.0.conv1", [1, 2, 4, 8])
    reopened = optuna.load_study(study_name="orphans", storage=url)
    assert finish_orphans(reopened, tiny_supernet.space, evaluator.evaluate, ["accuracy", "macs"],
                          Constraints(min_accuracy=0.5)) == 2
    trials = reopened.get_trials()
    states = optuna.trial.TrialState
    assert [t.state for t in trials] == [states.COMPLETE, states.COMPLETE, states.FAIL]
    for trial in trials[:2]:
        mode = mode_from_params(tiny_supernet.space, trial.params)
        assert trial.user_attrs["mode_id"] == mode.id and trial.values[1] == tiny_supernet.cost(mode).macs
        assert "min_accuracy" in trial.constraints
    assert finish_orphans(reopened, tiny_supernet.space, evaluator.evaluate, ["accuracy", "macs"]) == 0


def test_ask_and_tell_records_attrs_and_fails_a_trial_whose_run_raises() -> None:
    import optuna

    from subnetsearch.search._optuna import ask_and_tell

    study = optuna.create_study(directions=["maximize", "minimize"])
    distributions = {"x": optuna.distributions.FloatDistribution(0, 1)}
    done = ask_and_tell(study, distributions, 2, lambda p: ([p["x"], 1 - p["x"]], {"half": p["x"] / 2}, p["x"]))
    assert [t.user_attrs["half"] * 2 for t in study.trials] == done

    def broken(params: dict):
        raise RuntimeError("trial crashed")

    with pytest.raises(RuntimeError, match="trial crashed"):
        ask_and_tell(study, distributions, 3, broken)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "FAIL"]


@pytest.fixture
def session_factory(tmp_path, tiny_supernet):
    from subnetsearch.search._session import SearchSession
    from subnetsearch.supernets._checkpoint import save_checkpoint

    checkpoint = tmp_path / "tiny.pt"
    save_checkpoint(checkpoint, tiny_supernet, {}, {"name": "synthetic", "split_seed": 0}, {})
    url = f"sqlite:///{tmp_path / 'resume.db'}"
    store = Store(url)
    store.add_device(Device("board", location="imported"))  # no latency: accuracy and MACs only
    return lambda: SearchSession(store, url, store.get_device("board"), checkpoint, QUICK)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_a_resumed_seeded_search_continues_the_samplers_sequence(session_factory, sampler: str) -> None:
    """`--trials 3` then `--trials 6` under one name evaluates 3 new distinct modes, the same 6 as an
    uninterrupted `--trials 6` with the same seed, in the same order."""
    objectives = ["accuracy", "macs"]
    session_factory().optuna(sampler, 3, objectives, Constraints(), seed=5, name="resumed")
    resumed, study = session_factory().optuna(sampler, 6, objectives, Constraints(), seed=5, name="resumed")
    _, clean = session_factory().optuna(sampler, 6, objectives, Constraints(), seed=5, name="clean")

    def modes(study):
        return [t.user_attrs["mode_id"] for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))]

    assert len(resumed) == 3 and len(set(modes(study))) == len(modes(study)) == 6
    assert modes(study) == modes(clean)


def test_a_proposal_of_a_mode_the_study_has_is_not_evaluated_again(tmp_path, tiny_supernet, evaluator) -> None:
    """Every mode of a tiny space: the loop asks until it has `trials` distinct modes (duplicates told
    PRUNED with the trial that has the mode) and stops when the space is exhausted."""
    from subnetsearch.search._optuna import DUPLICATE_OF
    from subnetsearch.spaces import Knob, SearchSpace

    space = SearchSpace([Knob(tiny_supernet.space.knobs[0].name, "ordered", (1, 2)),
                         Knob(tiny_supernet.space.knobs[1].name, "ordered", (1, 2))], context=tiny_supernet.arch)
    assert space.size == 4
    calls = []
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler("random", 0))

    def evaluate(mode):
        calls.append(mode.id)
        return evaluator.evaluate(tiny_supernet.full_mode().replace(**mode.values))

    results = optuna_search(study, space, evaluate, 10, ["accuracy", "macs"])
    assert len(results) == len(calls) == len(set(calls)) == 4  # the whole space, each mode once
    duplicates = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    complete = {t.number: t.user_attrs["mode_id"] for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}
    assert all(complete[t.user_attrs[DUPLICATE_OF]] == t.user_attrs["mode_id"] for t in duplicates)
