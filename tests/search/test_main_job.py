"""The main job through the Python API (`search.MainJob`): what `subnetsearch run` prints, as data."""

from __future__ import annotations

import pytest

from subnetsearch import InputError
from subnetsearch.devices import Device, LatencyProtocol
from subnetsearch.search import EvaluationSettings, MainJob, MainJobPlan, SearchSession, suggested_budget
from subnetsearch.storage import Store
from subnetsearch.supernets import build_supernet, save_checkpoint

QUICK = EvaluationSettings(calibration_batches=1, calibration_batch_size=16, max_eval_batches=1)


def test_the_main_job_runs_from_python_and_resumes_from_the_store(tmp_path, tiny_supernet) -> None:
    checkpoint = tmp_path / "tiny.pt"
    save_checkpoint(checkpoint, tiny_supernet, {}, {"name": "synthetic", "split_seed": 0}, {})
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = Store(url)
    store.add_device(Device("quick", protocol=LatencyProtocol(runtime="eager", threads=1, repeats=1)))
    plan = MainJobPlan(dse_iterations=1, delta=0.0, trials=2, random_modes=1, front_windows=1)
    lines: list[str] = []
    result = MainJob(SearchSession(store, url, store.get_device("quick"), checkpoint, QUICK), plan).run(lines.append)
    assert [row.name for row in result.modes][:1] == ["full"] and result.modes[-1].name == "random 1"
    assert [name for name, _ in result.outcomes] == ["dse", "optuna"]
    assert any(line.startswith("iteration 1:") for line in lines)
    assert sorted(s.strategy for s in store.list_searches()) == ["dse-latency", "optuna-tpe"]
    assert result.front and {e.mode_id for e in result.front} <= {e.mode_id for e in store.list_evaluations("quick")}
    assert result.budget_ms == suggested_budget(result.front) and result.noise is not None
    again = MainJob(SearchSession(store, url, store.get_device("quick"), checkpoint, QUICK), plan).run()
    assert again.evaluated == 0 and again.reused > 0  # every evaluation came from the store
    store.dispose()


@pytest.mark.parametrize(("values", "message"), [({"strategy": "dse+grid"}, "unknown strategy 'grid'"),
                                                 ({"trials": -1}, "trials must be >= 0"),
                                                 ({"delta": 2.0}, r"delta must be in \[0, 1\], got 2.0")])
def test_a_bad_plan_is_refused_before_any_work(values, message) -> None:
    with pytest.raises(InputError, match=message):
        MainJobPlan(**values)


def test_the_main_job_refuses_a_device_it_cannot_measure(tmp_path, tiny_supernet) -> None:
    checkpoint = tmp_path / "tiny.pt"
    save_checkpoint(checkpoint, tiny_supernet, {}, {"name": "synthetic", "split_seed": 0}, {})
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = Store(url)
    store.add_device(Device("board", location="imported"))
    session = SearchSession(store, url, store.get_device("board"), checkpoint, QUICK)
    with pytest.raises(InputError, match="measures latency on this host"):
        MainJob(session)
    store.dispose()


@pytest.mark.parametrize("family", ["wenet", "nested"])
def test_the_mode_table_scores_stored_bn_only_where_each_mode_has_its_own(tmp_path, tiny_supernet, family) -> None:
    """WeNet's private BN per group count makes the stored statistics each mode's own; the nested
    family's are one sliced BN per convolution, a mix of the widths trained, so its modes are only
    scored recalibrated (no second, meaningless evaluation of each)."""
    supernet = tiny_supernet if family == "wenet" else build_supernet(
        {"family": "nested-cifar-resnet", **{k: tiny_supernet.arch[k] for k in (
            "depth", "widths", "in_channels", "num_classes", "input_size")}})
    assert supernet.stored_bn_per_mode == (family == "wenet")
    checkpoint = tmp_path / "tiny.pt"
    save_checkpoint(checkpoint, supernet, {}, {"name": "synthetic", "split_seed": 0}, {})
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = Store(url)
    store.add_device(Device("quick", protocol=LatencyProtocol(runtime="eager", threads=1, repeats=1)))
    session = SearchSession(store, url, store.get_device("quick"), checkpoint, QUICK)
    rows = MainJob(session, MainJobPlan(trials=0, random_modes=1)).mode_rows()
    assert len(rows) >= 3
    scored = [row.stored_bn_accuracy for row in rows]
    assert all(value is not None for value in scored) if family == "wenet" else all(v is None for v in scored)
    stored_bn_evaluations = [e for e in store.list_evaluations("quick") if e.settings["calibration_batches"] == 0]
    assert len(stored_bn_evaluations) == (len(rows) if family == "wenet" else 0)
    store.dispose()
