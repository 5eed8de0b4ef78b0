"""`subnetsearch train --family F` trains every family, writes a checkpoint `search` takes, and
refuses another family's options (resuming is the loop's: tests/trainers/test_loop.py)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from subnetsearch.cli import app
from subnetsearch.supernets import FAMILIES, load_checkpoint
from subnetsearch.trainers import TRAINERS

TRAIN_FAMILIES = tuple(TRAINERS)
FAMILY_OPTIONS = {name: tuple(o.name for o in trainer.options) for name, trainer in TRAINERS.items()}

runner = CliRunner()
QUICK = ["--data", "synthetic", "--depth", "8", "--widths", "8,16,16", "--batch-size", "32", "--epochs", "2",
         "--max-steps-per-epoch", "3", "--threads", "1"]
PER_FAMILY = {"wenet": ["--groups", "1,2,4"], "lasso": [], "ddi": ["--joint-epochs", "1", "--exit-epochs", "1"],
              "nested": ["--ratios", "1,0.5,0.25"]}


def test_every_family_with_a_registered_architecture_is_trainable() -> None:
    assert set(TRAIN_FAMILIES) == {name.split("-")[0] for name in FAMILIES if name.endswith("-cifar-resnet")}


@pytest.mark.parametrize("family", TRAIN_FAMILIES)
def test_train_any_family_then_search_its_checkpoint(tmp_path, family) -> None:
    out = tmp_path / family
    result = runner.invoke(app, ["train", "--family", family, *QUICK, *PER_FAMILY[family], "--out", str(out)])
    assert result.exit_code == 0, result.output
    checkpoint = load_checkpoint(out / "supernet.pt")
    assert checkpoint.family == f"{family}-cifar-resnet" and checkpoint.build().family == family
    if family != "ddi":  # one loop log line per epoch (DDI's phases keep their histories in the checkpoint)
        log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
        assert [record["epoch"] for record in log] == [1, 2]
    else:
        assert set(checkpoint.metrics["history"]) == {"gates", "joint", "exits"} and (out / "backbone.pt").exists()
        assert "train_skip_ratio" in checkpoint.metrics["history"]["joint"][-1]
    search = runner.invoke(app, ["search", "--checkpoint", str(out / "supernet.pt"), "--strategy", "optuna",
                                 "--sampler", "random", "--trials", "2", "--objectives", "accuracy,macs",
                                 "--storage", f"sqlite:///{tmp_path / 'store.db'}"])
    assert search.exit_code == 0, search.output


@pytest.mark.parametrize(("family", "option"), [(f, o) for owner, options in FAMILY_OPTIONS.items()
                                                for o in options[:2] for f in TRAIN_FAMILIES if o not in FAMILY_OPTIONS[f]])
def test_another_familys_option_is_refused_before_any_work(tmp_path, family, option) -> None:
    value = {"groups": "1,2", "shuffle": None, "skip_target": "0.3", "gating": "layer", "ratios": "1,0.5", "start": "x.pt",
             "samples_per_step": "3"}[option]
    flag = [f"--{option.replace('_', '-')}"] + ([value] if value is not None else [])
    result = runner.invoke(app, ["train", "--family", family, *QUICK, *flag, "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "is an option of --family" in result.output, result.output
    assert not (tmp_path / "x").exists()


def test_an_unknown_family_is_refused() -> None:
    result = runner.invoke(app, ["train", "--family", "width", *QUICK])
    assert result.exit_code == 2 and "--family must be one of wenet, lasso, ddi, nested, got 'width'" in result.output


def test_a_family_registered_with_its_trainer_is_trainable_from_the_command_line(tmp_path, toy_family) -> None:
    """The toy family's module and its two registrations (the fixture) are all `train` needs: its
    option appears on the command line, is refused for the other families, and trains."""
    help_text = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    assert "--sandwich" in help_text and "toy: also train the narrowest width" in help_text
    out = tmp_path / "toy"
    result = runner.invoke(app, ["train", "--family", "toy", "--data", "synthetic", "--no-sandwich", "--epochs", "1",
                                 "--batch-size", "32", "--threads", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    checkpoint = load_checkpoint(out / "supernet.pt")
    assert checkpoint.family == toy_family and checkpoint.recipe["sandwich"] is False
    assert "next: subnetsearch search --checkpoint" in result.output
    refused = runner.invoke(app, ["train", "--family", "wenet", *QUICK, "--sandwich", "--out", str(tmp_path / "x")])
    assert refused.exit_code == 2 and "--sandwich is an option of --family toy, not of --family wenet" in refused.output
    resnet_only = runner.invoke(app, ["train", "--family", "toy", "--data", "synthetic", "--depth", "8"])
    assert resnet_only.exit_code == 2 and "the toy family does not use it" in resnet_only.output
