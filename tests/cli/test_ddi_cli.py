"""`subnetsearch ddi train` on synthetic data: backbone, gates, joint training toward the skip target,
exits; then a second network from the same backbone (`--base`), and bad inputs."""

from __future__ import annotations

import json

import optuna
import pytest
from typer.testing import CliRunner

from subnetsearch.cli import app
from subnetsearch.storage import Store
from subnetsearch.supernets import load_checkpoint

runner = CliRunner()
QUICK = ["--data", "synthetic", "--depth", "14", "--widths", "8,16,16", "--max-steps-per-epoch", "4", "--threads", "1",
         "--backbone-epochs", "1", "--joint-epochs", "1"]


def test_ddi_train_then_another_skip_target_from_the_same_backbone(tmp_path) -> None:
    result = runner.invoke(app, ["ddi", "train", *QUICK, "--out", str(tmp_path / "a"), "--skip-target", "0.3"])
    assert result.exit_code == 0, result.output
    state = load_checkpoint(tmp_path / "a" / "supernet.pt")
    assert state.arch["skip_target"] == 0.3 and state.arch["gating"] == "mgl2s" and state.arch["exits"]
    assert set(state.metrics["history"]) == {"gates", "joint", "exits"}
    skipping = state.metrics["val_skipping"]  # what the hard gates decide on the validation images, reported
    assert 0 <= skipping["skip_ratio"] <= 1 and 0 < skipping["relative_macs"]
    assert f"at evaluation (validation images, hard gates): skip ratio {skipping['skip_ratio']:.3f}" in result.output
    layer = runner.invoke(app, ["ddi", "train", "--base", str(tmp_path / "a" / "backbone.pt"), "--gating", "layer",
                                "--resource", "energy",
                                "--no-exits", "--max-steps-per-epoch", "4", "--threads", "1", "--joint-epochs", "1",
                                "--out", str(tmp_path / "b")])
    assert layer.exit_code == 0, layer.output
    assert "backbone:" not in layer.output  # the plain backbone was reused, not trained again
    other = load_checkpoint(tmp_path / "b" / "supernet.pt").arch
    assert other["gating"] == "layer" and not other["exits"] and other["depth"] == 14
    energy = load_checkpoint(tmp_path / "b" / "supernet.pt")
    assert energy.recipe["resource"] == "energy" and "train_relative_energy" in energy.metrics["history"]["joint"][-1]


@pytest.mark.slow
def test_skip_target_search_trains_one_network_per_trial(tmp_path, trained) -> None:
    backbone = trained("ddi") / "backbone.pt"
    url = f"sqlite:///{tmp_path / 'ddi.db'}"
    added = runner.invoke(app, ["devices", "add", "quick", "--runtime", "eager", "--threads", "1", "--repeats", "1",
                                "--storage", url])
    assert added.exit_code == 0, added.output
    searched = runner.invoke(app, ["ddi", "search", "--base", str(backbone), "--trials", "2",
                                   "--max-steps-per-epoch", "4", "--threads", "1", "--storage", url, "--name", "targets",
                                   "--out", str(tmp_path / "search")])
    assert searched.exit_code == 0, searched.output
    study = optuna.load_study(study_name="targets", storage=url)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 2
    for trial in complete:
        path = trial.user_attrs["checkpoint"]
        assert path.startswith(str(tmp_path / "search")) and path in searched.output  # on the front or not
        state = load_checkpoint(path)
        assert state.arch["skip_target"] == round(trial.params["skip_target"], 4)
        assert trial.values[1] == state.metrics["cost_profile"]["mean_macs"] == trial.user_attrs["mean_macs"]
        assert trial.user_attrs["skip_ratio"] == state.metrics["cost_profile"]["skip_ratio"]
    # the runtime knobs of every trial's network: searched, stored and queried like any supernet
    for trial in complete:
        modes = runner.invoke(app, ["search", "--checkpoint", trial.user_attrs["checkpoint"], "--strategy", "optuna",
                                    "--trials", "3", "--objectives", "accuracy,macs", "--device", "quick",
                                    "--storage", url])
        assert modes.exit_code == 0, modes.output
    store = Store(url)
    try:
        stored = store.list_evaluations("quick")
        assert len({e.supernet_hash for e in stored}) == 2
        least = min(e.macs for e in stored)
        cheapest = {(e.mode_id, e.supernet_hash[:8]) for e in stored if e.macs == least}
    finally:
        store.dispose()
    best = runner.invoke(app, ["best", "--device", "quick", "--objective", "macs", "--storage", url])
    assert best.exit_code == 0, best.output  # the cheapest mode of either skip target's network
    assert any(mode in best.output and supernet in best.output for mode, supernet in cheapest), best.output
    more = runner.invoke(app, ["ddi", "search", "--base", str(backbone), "--trials", "1",
                               "--max-steps-per-epoch", "2", "--threads", "1", "--storage", url, "--name", "targets",
                               "--out", str(tmp_path / "search")])
    assert more.exit_code == 0 and "2 stored trials; 1 more" in more.output, more.output
    listed = {s["name"]: s for s in json.loads(runner.invoke(app, ["searches", "--json", "--storage", url]).output)}
    assert listed["targets"]["status"] == "finished" and listed["targets"]["device"] is None  # a training-time search
    assert listed["targets"]["summary"]["trials"] == 3 and listed["targets"]["strategy"] == "ddi-skip-target-mgl2s"
    bad = runner.invoke(app, ["ddi", "search", "--base", complete[0].user_attrs["checkpoint"], "--storage", url])
    assert bad.exit_code == 2 and "is not a plain DDI backbone" in bad.output
    bad_range = runner.invoke(app, ["ddi", "search", "--base", str(backbone), "--target-range", "0.5"])
    assert bad_range.exit_code == 2 and "--target-range must be" in bad_range.output
    for args, message in [(["--backend", "spark"], "--backend must be local or ray"),
                          (["--address", "auto"], "--address needs --backend ray"),
                          (["--gating", "none"], "gating must be one of"),
                          (["--joint-epochs", "0"], "epochs must be >= 1"),
                          (["--resource", "flops"], "the resource must be one of"),
                          (["--backend", "ray", "--address", "127.0.0.1:1"], "no Ray cluster answers at 127.0.0.1:1")]:
        refused = runner.invoke(app, ["ddi", "search", "--base", str(backbone), "--storage", url,
                                      "--name", "refused", *args])
        assert refused.exit_code == 2 and message in refused.output, (args, refused.output)
    assert "refused" not in optuna.get_all_study_names(url)  # refused before the study was created
    assert Store(url).get_search("refused") is None  # ... and before the search was recorded


def test_ddi_train_bad_inputs(tmp_path) -> None:
    for args, message in [(["--skip-target", "1.5"], "the skip target must be in [0, 1)"),
                          (["--gating", "random"], "gating must be one of"),
                          (["--resource", "latency"], "the resource must be one of"),
                          (["--base", str(tmp_path / "none.pt")], "checkpoint not found"),
                          (["--threads", "0"], "--threads must be >= 1")]:
        result = runner.invoke(app, ["ddi", "train", *QUICK, "--out", str(tmp_path / "x"), *args])
        assert result.exit_code == 2 and message in result.output, (args, result.output)
        assert not (tmp_path / "x").exists()  # refused before anything was trained or written
