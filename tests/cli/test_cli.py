import subprocess
import sys

import pytest
from typer.testing import CliRunner

from subnetsearch.cli import app
from subnetsearch.supernets._checkpoint import save_checkpoint

runner = CliRunner()


@pytest.fixture
def tiny_checkpoint(tmp_path, tiny_supernet):
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, tiny_supernet, {}, {"name": "synthetic", "split_seed": 0}, {})
    return path


def test_run_prints_a_table_of_modes(tiny_checkpoint) -> None:
    result = runner.invoke(app, ["run", "--checkpoint", str(tiny_checkpoint), "--random-modes", "1", "--threads", "1"])
    assert result.exit_code == 0, result.output
    for text in ("full", "uniform 1/2", "smallest", "random 1", "MMACs", "latency ms", "8-8-8-8-8-8-8-8"):
        assert text in result.output


def test_run_without_checkpoint_fails_clearly(tmp_path) -> None:
    result = runner.invoke(app, ["run", "--checkpoint", str(tmp_path / "none.pt"), "--no-train-if-missing"])
    assert result.exit_code == 2 and "checkpoint not found" in result.output


def test_run_with_a_damaged_checkpoint_fails_clearly(tmp_path) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(b"not a checkpoint")
    result = runner.invoke(app, ["run", "--checkpoint", str(path)])
    assert result.exit_code == 2 and "truncated or not a checkpoint" in result.output


def test_train_smoke_and_bad_inputs(tmp_path) -> None:
    common = ["train", "--data", "synthetic", "--depth", "8", "--widths", "8,16,16", "--groups", "1,2,4",
              "--batch-size", "32", "--epochs", "1"]
    result = runner.invoke(app, [*common, "--out", str(tmp_path / "ok")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ok" / "supernet.pt").exists() and (tmp_path / "ok" / "train_log.jsonl").exists()
    bad_mode = runner.invoke(app, [*common, "--out", str(tmp_path / "x"), "--fixed-mode", "uniform:3"])
    assert bad_mode.exit_code == 2 and "bad mode" in bad_mode.output
    bad_widths = runner.invoke(app, [*common, "--out", str(tmp_path / "y"), "--widths", "8,a"])
    assert bad_widths.exit_code == 2 and "integers" in bad_widths.output
    bad_sampling = runner.invoke(app, [*common, "--out", str(tmp_path / "z"), "--sampling", "every"])
    assert bad_sampling.exit_code == 2 and "sampling" in bad_sampling.output
    assert not (tmp_path / "z").exists()
    bad_depth = runner.invoke(app, [*common, "--out", str(tmp_path / "d"), "--depth", "9"])
    assert bad_depth.exit_code == 2 and "6n+2" in bad_depth.output
    no_data = runner.invoke(app, ["train", "--data-root", str(tmp_path / "nothing"), "--out", str(tmp_path / "e")])
    assert no_data.exit_code == 2 and "nothing" in no_data.output and "apt-get install" in no_data.output
    other_recipe = runner.invoke(app, [*common[:-1], "2", "--out", str(tmp_path / "ok")])
    assert other_recipe.exit_code == 2 and "another recipe" in other_recipe.output


def test_module_entry_point_shows_help() -> None:
    result = subprocess.run([sys.executable, "-m", "subnetsearch", "--help"], capture_output=True, text=True, check=True)
    assert "run" in result.stdout and "train" in result.stdout
