"""Skip-target trials of `subnetsearch ddi search` as Ray Tune trials on the test session's two-node
cluster: each trial trains its gates where Tune places it, and its checkpoint is written on the
machine that runs the search."""

from __future__ import annotations

import optuna
import pytest
from typer.testing import CliRunner

from subnetsearch.cli import app
from subnetsearch.supernets import load_checkpoint

pytestmark = pytest.mark.ray  # the full tier (pytest --full); see pyproject.toml

runner = CliRunner()


def test_ddi_search_runs_skip_target_trials_on_ray_tune(ray_cluster, tmp_path, trained) -> None:
    cluster, _ = ray_cluster
    url = f"sqlite:///{tmp_path / 'ddi.db'}"
    searched = runner.invoke(app, ["ddi", "search", "--base", str(trained("ddi") / "backbone.pt"), "--backend", "ray",
                                   "--trials", "2", "--max-steps-per-epoch", "3", "--threads", "1", "--storage", url,
                                   "--name", "on-ray", "--out", str(tmp_path / "search")])
    assert searched.exit_code == 0, searched.output
    assert "Ray Tune trials on the Ray instance this process is attached to: 2 at a time" in searched.output
    study = optuna.load_study(study_name="on-ray", storage=url)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == len(study.trials) == 2
    assert {t.user_attrs["node"] for t in complete} <= {node.node_id for node in cluster.list_all_nodes()}
    for trial in complete:
        assert trial.user_attrs["ray_trial_id"]
        path = trial.user_attrs["checkpoint"]
        assert path.startswith(str(tmp_path / "search"))
        state = load_checkpoint(path)  # whole and verified: written by the driver-side sink
        assert state.arch["skip_target"] == round(trial.params["skip_target"], 4)
        assert trial.values == [state.metrics["val_acc"], state.metrics["cost_profile"]["mean_macs"]]


def test_input_dependent_modes_are_timed_on_the_device_node_over_real_images(ray_cluster, tmp_path) -> None:
    from subnetsearch.search import Constraints
    from subnetsearch.storage import Store
    from subnetsearch.supernets._checkpoint import save_checkpoint
    from tests.distributed.conftest import EDGE
    from tests.distributed.test_ray import _session
    from tests.search.test_ddi_search import _supernet

    _, edge_node = ray_cluster
    url, path = f"sqlite:///{tmp_path / 'ddi.db'}", tmp_path / "ddi.pt"
    save_checkpoint(path, _supernet(), {}, {"name": "synthetic", "split_seed": 0}, {})
    Store(url).add_device(EDGE)
    session = _session(url, path)
    try:
        results, _ = session.optuna("random", 2, ["accuracy", "latency"], Constraints())
    finally:
        session.backend.close()
    assert len(results) == 2
    validation = len(session.evaluator.splits.val)
    for stored in session.store.list_evaluations("edge"):
        assert stored.latency["node"] == edge_node and stored.latency["measured"]
        assert stored.latency["samples"] == min(32, validation)  # one timing per real image, not a random batch
        assert stored.cost_profile["samples"] == validation
