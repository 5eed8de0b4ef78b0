"""Distributed searches on a real two-node Ray cluster (see conftest): device routing, fan-out,
Ray Tune trials in the shared study, worker deaths mid-search, and the fail-fast paths."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import optuna
import pytest

from subnetsearch.devices import Device
from subnetsearch.distributed import ClusterError, RayBackend
from subnetsearch.search import Constraints, EvaluationSettings, Fidelity, SearchSession
from subnetsearch.spaces import to_optuna
from subnetsearch.storage import Store
from tests.distributed.conftest import EDGE, processes_titled

pytestmark = pytest.mark.ray  # the full tier (pytest --full); see pyproject.toml

QUICK = EvaluationSettings(calibration_batches=2, calibration_batch_size=32)


def _session(url: str, checkpoint, device: Device = EDGE, backend: RayBackend | None = None,
             fidelity: Fidelity | None = None) -> SearchSession:
    store = Store(url)
    return SearchSession(store, url, store.get_device(device.name), checkpoint, QUICK,
                         backend=backend if backend is not None else RayBackend(), fidelity=fidelity)


def _kill_one_when_running(title: str, killed: list[int], stop: threading.Event) -> None:
    """SIGKILL the first process seen running `title` (a Ray call in progress)."""
    while not stop.is_set():
        pids = processes_titled(title)
        if pids:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])
            return
        time.sleep(0.02)


def test_latency_is_measured_only_on_the_device_node_and_dse_fans_out(ray_cluster, cluster_store) -> None:
    cluster, edge_node = ray_cluster
    url, checkpoint = cluster_store
    session = _session(url, checkpoint)
    assert session.evaluator.measure  # the edge node advertises device:edge
    try:
        result, study = session.dse(0.0, "latency", ["accuracy", "latency"], max_iterations=1)
    finally:
        session.backend.close()
    stored = session.store.list_evaluations("edge")
    assert len(stored) == result.evaluations == 1 + 8  # the full network, then one candidate per layer
    assert {evaluation.latency["node"] for evaluation in stored} == {edge_node}
    assert all(evaluation.latency["measured"] and evaluation.latency_ms > 0 for evaluation in stored)
    assert len(study.trials) == len(stored) and session.evaluator.misses == len(stored)


def test_a_device_without_a_node_fails_fast_and_records_nothing(ray_cluster, cluster_store) -> None:
    url, checkpoint = cluster_store
    store = Store(url)
    store.add_device(Device("jetson-nano", "ray-node"))
    session = _session(url, checkpoint, store.get_device("jetson-nano"))
    assert not session.evaluator.measure
    with pytest.raises(ClusterError) as raised:
        session.optuna("random", 3, ["accuracy", "latency"], Constraints())
    message = str(raised.value)
    assert "device:jetson-nano" in message and "ray start --address" in message and "--latency predicted" in message
    assert store.list_searches() == [] and store.count_evaluations() == 0
    # without latency, the same device is searched (accuracy and MACs run anywhere)
    results, _ = session.optuna("random", 3, ["accuracy", "macs"], Constraints())
    assert len(results) == 3 and all(r.latency_ms is None for r in results)


def test_a_worker_killed_mid_evaluation_costs_only_a_retry(ray_cluster, cluster_store, tmp_path) -> None:
    url, checkpoint = cluster_store
    session = _session(url, checkpoint)
    killed, stop = [], threading.Event()
    killer = threading.Thread(target=_kill_one_when_running, args=("ray::EvaluationWorker.evaluate", killed, stop))
    killer.start()
    try:
        result, _ = session.dse(0.0, "macs", ["accuracy", "macs"], max_iterations=2)
    finally:
        stop.set()
        killer.join()
        session.backend.close()
    assert killed, "no evaluation was seen running"
    stored = session.store.list_evaluations("edge")
    ids = [evaluation.mode_id for evaluation in stored]
    assert len(ids) == len(set(ids)) == result.evaluations == 1 + 8 + 8  # complete and unique
    # the same search in one local process (no deaths) walks the same trajectory
    local_url = f"sqlite:///{tmp_path / 'local.db'}"
    Store(local_url).add_device(Device("edge", "host", EDGE.protocol))
    local = SearchSession(Store(local_url), local_url, Device("edge", "host", EDGE.protocol), checkpoint, QUICK)
    expected, _ = local.dse(0.0, "macs", ["accuracy", "macs"], max_iterations=2)
    assert [step.mode.id for step in result.trajectory] == [step.mode.id for step in expected.trajectory]
    assert [step.accuracy for step in result.trajectory] == [step.accuracy for step in expected.trajectory]


@pytest.mark.parametrize("cluster_store", ["postgresql"], indirect=True)
def test_tune_trials_fill_the_shared_study_and_survive_a_killed_trial(ray_cluster, cluster_store, capfd) -> None:
    import tempfile

    from subnetsearch.distributed._tune import SCRATCH_PREFIX

    stale = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}999999999-"))  # left by a killed driver
    cluster, edge_node = ray_cluster
    url, checkpoint = cluster_store
    session = _session(url, checkpoint, backend=RayBackend(max_failures=2))
    killed, stop = [], threading.Event()
    killer = threading.Thread(target=_kill_one_when_running, args=("ray::ImplicitFunc", killed, stop))
    killer.start()
    try:
        results, study = session.optuna("tpe", 6, ["accuracy", "latency"], Constraints(min_accuracy=0.0), name="tuned")
    finally:
        stop.set()
        killer.join()
        session.backend.close()
    assert killed, "no trial process was seen"
    output = capfd.readouterr()
    assert "retrying it (failure 1 of at most 2)" in output.err  # one line per retried attempt ...
    # ... and not Tune's ERROR "Trial task failed" with the attempt's full traceback, for a search that succeeds
    assert "Trial task failed" not in output.out + output.err
    assert not stale.exists() and not list(Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}{os.getpid()}-*"))
    again = optuna.load_study(study_name="tuned", storage=url)  # what the Optuna dashboard reads
    complete = again.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == len(again.trials) == 6
    assert all(t.user_attrs["node"] == edge_node for t in complete)  # measured on the edge node
    assert all(t.constraints == {"min_accuracy": -t.values[0]} for t in complete)  # what constrained samplers use
    modes = {t.user_attrs["mode_id"] for t in complete}
    stored = session.store.list_evaluations("edge")
    assert {e.mode_id for e in stored} == modes and len(stored) == len(modes)  # every trial stored, once
    assert session.store.get_search("tuned").status == "finished"
    assert again.user_attrs["strategy"] == "optuna-tpe" and again.metric_names == ["accuracy", "latency"]


def test_an_interrupted_ray_search_resumes_from_the_stored_state(ray_cluster, cluster_store) -> None:
    url, checkpoint = cluster_store
    first = _session(url, checkpoint)
    try:
        first.optuna("random", 3, ["accuracy", "macs"], Constraints(), name="resumed")
    finally:
        first.backend.close()
    # a run killed after the sampler chose a mode and before the result was told leaves this behind
    study = optuna.load_study(study_name="resumed", storage=url)
    orphan = study.ask(to_optuna(first.supernet.space))
    second = _session(url, checkpoint)
    try:
        _, resumed = second.optuna("random", 5, ["accuracy", "macs"], Constraints(), name="resumed")
    finally:
        second.backend.close()
    states = [t.state for t in resumed.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 5 and optuna.trial.TrialState.RUNNING not in states
    complete = [t for t in resumed.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len({t.user_attrs["mode_id"] for t in complete}) == 5  # 5 trials are 5 distinct modes
    for trial in resumed.trials:  # the seeded sampler re-proposed the first run's modes: skipped, not re-run
        if trial.state == optuna.trial.TrialState.PRUNED:
            original = resumed.trials[trial.user_attrs["duplicate_of"]]
            assert original.user_attrs["mode_id"] == trial.user_attrs["mode_id"] and original.state.is_finished()
    assert resumed.trials[orphan.number].user_attrs["mode_id"]  # the orphan was finished, not dropped
    stored = second.store.list_evaluations("edge")
    assert len(stored) == len({e.mode_id for e in stored}) <= 5  # nothing stored twice
    assert second.evaluator.misses <= 2  # the first run's three evaluations came from the store
    assert second.store.get_search("resumed").status == "finished"


def test_a_predictor_round_fans_out_over_the_evaluation_actors(ray_cluster, cluster_store) -> None:
    _, edge_node = ray_cluster
    url, checkpoint = cluster_store
    session = _session(url, checkpoint)
    calls = []
    fan_out = session.backend.evaluate_batch

    def counted(modes, fidelity="full"):
        calls.append(len(modes))
        return fan_out(modes, fidelity)

    session.backend.evaluate_batch = counted  # the real backend, counted
    try:
        fresh, study = session.predictor(7, ["accuracy", "latency"], init_size=4, batch=3, seed=1)
    finally:
        session.backend.close()
    assert calls == [4, 3]  # the initial design, then one round's batch, each as one batch on the actors
    stored = session.store.list_evaluations("edge")
    assert len(stored) == len(fresh) == 7 == len(study.trials)
    assert {evaluation.latency["node"] for evaluation in stored} == {edge_node}  # measured on the device's node
    [round_one] = session.store.get_search(study.study_name).summary["rounds"]
    assert round_one["trained_on"] == 4 and round_one["evaluated"] == 3


def test_first_looks_and_promoted_modes_fan_out_over_the_evaluation_actors(ray_cluster, cluster_store) -> None:
    """Multi-fidelity on Ray: each batch's first looks go out as one batch (latency timed in short
    windows on the device's node), then the promoted modes' full evaluations as another."""
    _, edge_node = ray_cluster
    url, checkpoint = cluster_store
    session = _session(url, checkpoint, fidelity=Fidelity(calibration_batches=1, eval_batches=1, rounds=3))
    calls = []
    fan_out = session.backend.evaluate_batch

    def counted(modes, fidelity="full"):
        calls.append((fidelity, len(modes)))
        return fan_out(modes, fidelity)

    session.backend.evaluate_batch = counted  # the real backend, counted
    try:
        fresh, study = session.predictor(7, ["accuracy", "latency"], init_size=4, batch=3, seed=1, name="mf")
    finally:
        session.backend.close()
    stored = session.store.list_evaluations("edge")
    looks = [e for e in stored if e.settings.get("fidelity") == "low"]
    full = [e for e in stored if e.settings.get("fidelity", "full") == "full"]
    assert len(looks) == 7 == len(study.trials) and {e.mode_id for e in full} <= {e.mode_id for e in looks}
    kinds = [kind for kind, _ in calls]
    assert kinds.count("low") == 2 and all(kinds[i - 1] == "low" for i, kind in enumerate(kinds) if kind == "full")
    assert sum(n for kind, n in calls if kind == "low") == 7 and sum(n for kind, n in calls if kind == "full") == len(full)
    assert all(e.latency["paired"]["pairing"]["rounds"] == 3 for e in looks)  # the short window
    assert {e.latency["node"] for e in stored} == {edge_node}  # both fidelities timed on the device's node
    assert {e.mode_id for e in session.store.get_front("edge")} <= {e.mode_id for e in full}
