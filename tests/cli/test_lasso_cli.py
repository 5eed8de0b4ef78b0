"""`subnetsearch lasso base | generate | search | fuse` on synthetic data, then the fused supernet
searched, stored and queried with the same commands as a WeNet supernet."""

from __future__ import annotations

import json

import optuna
import pytest
from typer.testing import CliRunner

from subnetsearch.cli import app
from subnetsearch.storage import Store
from subnetsearch.supernets import load_checkpoint, scaled_channels
from subnetsearch.supernets._lasso import uniform_channels

runner = CliRunner()
SMALL = ["--max-steps-per-epoch", "3", "--threads", "1"]


@pytest.mark.slow
def test_generate_search_fuse_then_search_store_and_query(tmp_path, trained) -> None:
    checkpoint = trained("lasso") / "supernet.pt"  # what `lasso base` writes (tested in tests/cli/test_train_cli.py)
    # one subnet with a strong penalty: fewer channels than the full network
    generated = runner.invoke(app, ["lasso", "generate", "--base", str(checkpoint), "--lambda", "2", "--a", "1",
                                    "--lr", "0.1", "--epochs", "4", "--out", str(tmp_path / "one.json"),
                                    "--threads", "1"])
    assert generated.exit_code == 0, generated.output
    one = json.loads((tmp_path / "one.json").read_text())["subnets"][0]
    assert sum(one["channels"]) < 8 * 3 + 16 * 4 and one["penalty"] == "clipped"
    # a (lambda, a) search whose study lands in the storage URL
    url = f"sqlite:///{tmp_path / 'lasso.db'}"
    search = ["lasso", "search", "--base", str(checkpoint), "--pick", "2", "--lr", "0.1", "--storage", url,
              "--out", str(tmp_path / "picked.json"), "--threads", "1"]
    weak = runner.invoke(app, [*search, "--name", "lasso-weak", "--trials", "1", "--lambda-range", "0.001,0.002",
                               "--max-steps-per-epoch", "1"])
    assert weak.exit_code == 1 and "none of the study's 1 trials pruned a channel" in weak.output, weak.output
    assert not (tmp_path / "picked.json").exists()
    strong = [*search, "--name", "lasso-test", "--lambda-range", "1,3", "--epochs", "4"]
    for trials in ("1", "2"):  # the second run resumes the search by name
        searched = runner.invoke(app, [*strong, "--trials", trials])
        assert searched.exit_code == 0, searched.output
    study = optuna.load_study(study_name="lasso-test", storage=url)
    assert len(study.trials) == 3 and all("channels" in t.user_attrs for t in study.trials)  # resumed: 1 + 2
    assert {tuple(t.params) for t in study.trials} == {("lam", "a")}
    # a training-time search is a search like the others: listed, with its knobs, status and no device
    listed = {s["name"]: s for s in json.loads(runner.invoke(app, ["searches", "--json", "--storage", url]).output)}
    assert listed["lasso-test"]["status"] == "finished" and listed["lasso-test"]["device"] is None
    assert listed["lasso-test"]["strategy"] == "lasso-clipped" and listed["lasso-test"]["summary"]["trials"] == 3
    assert [k["name"] for k in listed["lasso-test"]["space"]["knobs"]] == ["lam", "a"]
    assert listed["lasso-weak"]["status"] == "finished"
    other = runner.invoke(app, [*strong[:-4], "--lambda-range", "0.5,1", "--epochs", "4", "--trials", "1"])
    assert other.exit_code == 2 and "exists already with other settings" in other.output, other.output
    picked = json.loads((tmp_path / "picked.json").read_text())["subnets"]
    assert 1 <= len(picked) <= 2
    # fused training of the generated subnets, and the uniform-width baseline matched in MACs
    fused = runner.invoke(app, ["lasso", "fuse", "--base", str(checkpoint), "--subnets", str(tmp_path / "one.json"),
                                "--epochs", "1", "--out", str(tmp_path / "fused"), *SMALL])
    assert fused.exit_code == 0, fused.output
    state = load_checkpoint(tmp_path / "fused" / "supernet.pt")
    assert state.arch["method"] == "clipped-lasso" and state.arch["subnets"][0]["channels"] == one["channels"]
    scaled = runner.invoke(app, ["lasso", "fuse", "--base", str(checkpoint), "--subnets", str(tmp_path / "one.json"),
                                 "--scales", "1.2,100", "--epochs", "1", "--out", str(tmp_path / "scaled"), *SMALL])
    assert scaled.exit_code == 0, scaled.output  # x100 reaches the full widths everywhere: dropped as a duplicate
    subnets = load_checkpoint(tmp_path / "scaled" / "supernet.pt").arch["subnets"]
    assert [s["channels"] for s in subnets] == [scaled_channels(one["channels"], [8, 8, 8, 16, 16, 16, 16], 1.2),
                                                one["channels"]]
    uniform = runner.invoke(app, ["lasso", "fuse", "--base", str(checkpoint), "--subnets", str(tmp_path / "one.json"),
                                  "--uniform", "--epochs", "1", "--out", str(tmp_path / "uniform"), *SMALL])
    assert uniform.exit_code == 0, uniform.output
    widths = load_checkpoint(tmp_path / "uniform" / "supernet.pt").arch["subnets"][0]["channels"]
    assert any(uniform_channels([8, 8, 8, 16, 16, 16, 16], k / 100) == widths for k in range(1, 101))  # one ratio
    # the fused supernet goes through the same search, store and query as any other
    runner.invoke(app, ["devices", "add", "quick", "--runtime", "eager", "--threads", "1", "--repeats", "1",
                        "--storage", url])
    search = runner.invoke(app, ["search", "--checkpoint", str(tmp_path / "fused" / "supernet.pt"), "--device", "quick",
                                 "--strategy", "optuna", "--trials", "3", "--objectives", "accuracy,latency",
                                 "--storage", url])
    assert search.exit_code == 0, search.output
    store = Store(url)
    try:
        stored = store.list_evaluations("quick", state.hash)
        assert {json.loads(e.mode_json)["values"]["width"] for e in stored} <= {0, 1}
        assert all(e.latency_ms > 0 and e.macs > 0 for e in stored)
    finally:
        store.dispose()
    best = runner.invoke(app, ["best", "--device", "quick", "--max-latency-ms", "1000", "--storage", url])
    assert best.exit_code == 0, best.output


def test_lasso_bad_inputs(tmp_path, trained) -> None:
    missing = runner.invoke(app, ["lasso", "generate", "--base", str(tmp_path / "none.pt")])
    assert missing.exit_code == 2 and "checkpoint not found" in missing.output
    checkpoint = str(trained("lasso") / "supernet.pt")
    for args, message in [
        (["generate", "--penalty", "l1"], "--penalty must be clipped or group"),
        (["generate", "--lambda", "0"], "lambda must be > 0"),
        (["generate", "--threshold", "0"], "--threshold must be > 0"),
        (["search", "--trials", "0"], "--trials and --pick must be >= 1"),
        (["search", "--lambda-range", "1"], "--lambda-range must be two numbers"),
        (["fuse", "--subnets", str(tmp_path / "nothing.json")], "subnets file not found"),
        (["fuse", "--scales", "0.5"], "--scales must be ratios > 1"),
    ]:
        result = runner.invoke(app, ["lasso", *args, "--base", checkpoint])
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    (tmp_path / "bad.json").write_text('{"subnets": [{"channels": [1]}]}')
    bad = runner.invoke(app, ["lasso", "fuse", "--base", checkpoint, "--subnets", str(tmp_path / "bad.json")])
    assert bad.exit_code == 2 and "is not a subnets file" in bad.output
    assert not (tmp_path / "runs").exists()
