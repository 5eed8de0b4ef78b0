"""Subnet-generation trials (penalized fine-tunes) of `subnetsearch lasso search` as Ray Tune trials
on the test session's two-node cluster, their study in the shared storage."""

from __future__ import annotations

import json

import optuna
import pytest
from typer.testing import CliRunner

from subnetsearch.cli import app

pytestmark = pytest.mark.ray  # the full tier (pytest --full); see pyproject.toml

runner = CliRunner()


def test_lasso_search_runs_generation_trials_on_ray_tune(ray_cluster, tmp_path, trained) -> None:
    base = trained("lasso")
    url = f"sqlite:///{tmp_path / 'lasso.db'}"
    searched = runner.invoke(app, ["lasso", "search", "--base", str(base / "supernet.pt"), "--backend", "ray",
                                   "--trials", "2", "--pick", "2", "--lambda-range", "1,3", "--epochs", "4",
                                   "--lr", "0.1", "--threads", "1", "--storage", url, "--name", "on-ray",
                                   "--out", str(tmp_path / "picked.json")])
    assert searched.exit_code == 0, searched.output
    assert "Ray Tune trials on the Ray instance this process is attached to: 2 at a time" in searched.output
    study = optuna.load_study(study_name="on-ray", storage=url)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == len(study.trials) == 2
    assert all(t.user_attrs["ray_trial_id"] and len(t.user_attrs["channels"]) == 7 for t in complete)
    assert all(t.values[1] == t.user_attrs["macs"] for t in complete)
    assert json.loads((tmp_path / "picked.json").read_text())["subnets"]
