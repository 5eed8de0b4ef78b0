"""`subnetsearch ddi train` on synthetic data: backbone, gates, joint training toward the skip target,
exits; then a second network from the same backbone (`--base`), and bad inputs."""

from __future__ import annotations

from typer.testing import CliRunner

from subnetsearch.cli import app
from subnetsearch.supernets._checkpoint import load_checkpoint

runner = CliRunner()
QUICK = ["--data", "synthetic", "--depth", "14", "--widths", "8,16,16", "--max-steps-per-epoch", "4", "--threads", "1",
         "--backbone-epochs", "1", "--joint-epochs", "1"]


def test_ddi_train_then_another_skip_target_from_the_same_backbone(tmp_path) -> None:
    result = runner.invoke(app, ["ddi", "train", *QUICK, "--out", str(tmp_path / "a"), "--skip-target", "0.3"])
    assert result.exit_code == 0, result.output
    state = load_checkpoint(tmp_path / "a" / "supernet.pt")
    assert state.arch["skip_target"] == 0.3 and state.arch["gating"] == "mgl2s" and state.arch["exits"]
    assert set(state.metrics["history"]) == {"gates", "joint", "exits"}
    layer = runner.invoke(app, ["ddi", "train", "--base", str(tmp_path / "a" / "backbone.pt"), "--gating", "layer",
                                "--no-exits", "--max-steps-per-epoch", "4", "--threads", "1", "--joint-epochs", "1",
                                "--out", str(tmp_path / "b")])
    assert layer.exit_code == 0, layer.output
    assert "backbone:" not in layer.output  # the plain backbone was reused, not trained again
    other = load_checkpoint(tmp_path / "b" / "supernet.pt").arch
    assert other["gating"] == "layer" and not other["exits"] and other["depth"] == 14


def test_ddi_train_bad_inputs(tmp_path) -> None:
    for args, message in [(["--skip-target", "1.5"], "--skip-target must be in [0, 1)"),
                          (["--gating", "random"], "gating must be one of"),
                          (["--base", str(tmp_path / "none.pt")], "checkpoint not found"),
                          (["--threads", "0"], "--threads must be >= 1")]:
        result = runner.invoke(app, ["ddi", "train", *QUICK, "--out", str(tmp_path / "x"), *args])
        assert result.exit_code == 2 and message in result.output, (args, result.output)
        assert not (tmp_path / "x").exists()  # refused before anything was trained or written
