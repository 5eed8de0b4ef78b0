"""The shipped supernets: the default loads as described (nested widths 32-64-128 on Fashion-MNIST,
grown from the shipped 24-48-96 supernet), its file is the one trained (its recorded SHA-256), the
recipe stored in it reproduces that training's first steps with today's code, and the previous
defaults still load (the 24-48-96 one is the file the default started from)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from subnetsearch.data import DataSpec, load_data
from subnetsearch.files import file_digest
from subnetsearch.search import EvaluationSettings, mode_accuracy
from subnetsearch.supernets import (
    DEFAULT_CHECKPOINT,
    DEFAULT_EPOCHS,
    DEFAULT_FAMILY,
    DEFAULT_LR,
    DEFAULT_SHA256,
    DEFAULT_TRAIN_COMMAND,
    DEFAULT_WIDTHS,
    NESTED_CHECKPOINT,
    NESTED_SHA256,
    WENET_CHECKPOINT,
    Checkpoint,
    NestedSupernet,
    WeNetSupernet,
    load_checkpoint,
)
from subnetsearch.trainers import TrainEvents, TrainJob, get_trainer, last_accuracy

FIRST_STEPS = DEFAULT_CHECKPOINT.parent / "first_steps.json"
PREVIOUS_ACCURACY = 0.926  # the previous default's full network on the same validation split


class _Enough(Exception):
    pass


def first_steps(checkpoint: Checkpoint, steps: int, out: Path) -> list[dict]:
    """The running training metrics of the first `steps` steps of the recipe stored in `checkpoint`
    (its architecture, data, schedule, seed and the family's options), trained from the start its
    recipe names (the shipped 24-48-96 supernet, grown) or from scratch."""
    trainer = get_trainer(DEFAULT_FAMILY)
    recipe = checkpoint.recipe
    options = {o.name: recipe[o.name] for o in trainer.options if o.name in recipe and recipe[o.name] is not None}
    if recipe.get("init"):
        assert recipe["init"].startswith(f"{NESTED_CHECKPOINT.name} sha256:{NESTED_SHA256[:16]}")
        options["start"] = NESTED_CHECKPOINT
    else:
        options["ratios"] = ",".join(f"{r:g}" for r in checkpoint.arch["ratios"])
    job = TrainJob(DataSpec.from_dict(checkpoint.data), out, epochs=recipe["epochs"], batch_size=recipe["batch_size"],
                   lr=recipe["lr"], seed=recipe["seed"], depth=None if "start" in options else checkpoint.arch["depth"],
                   widths=tuple(checkpoint.arch["widths"]), options=options)
    seen: list[dict] = []

    def progress(state: dict) -> None:
        seen.append({key: round(float(value), 6) for key, value in state.items() if key not in ("epochs", "steps")})
        if len(seen) == steps:
            raise _Enough

    with pytest.raises(_Enough):
        trainer.train(trainer.resolve(job), TrainEvents(progress=progress))
    return seen


def test_the_default_is_the_trained_nested_supernet_it_says() -> None:
    assert DEFAULT_SHA256 and file_digest(DEFAULT_CHECKPOINT) == DEFAULT_SHA256
    checkpoint = load_checkpoint(DEFAULT_CHECKPOINT)
    supernet = checkpoint.build()
    assert isinstance(supernet, NestedSupernet) and tuple(supernet.arch["widths"]) == DEFAULT_WIDTHS
    assert checkpoint.data["name"] == "fashion-mnist" and checkpoint.recipe["epochs"] == DEFAULT_EPOCHS
    assert checkpoint.recipe["lr"] == DEFAULT_LR
    # grown from the shipped 24-48-96 supernet, which is still the file it started from
    assert file_digest(NESTED_CHECKPOINT) == NESTED_SHA256
    assert checkpoint.recipe["init"] == (f"{NESTED_CHECKPOINT.name} sha256:{NESTED_SHA256[:16]} (nesting order kept; "
                                         "grown from widths 24-48-96)")
    previous = load_checkpoint(WENET_CHECKPOINT)  # its stored-BN accuracy is its full network's
    assert last_accuracy(previous.metrics["history"]) == pytest.approx(PREVIOUS_ACCURACY, abs=5e-4)
    readme = (DEFAULT_CHECKPOINT.parent / "README.md").read_text()
    assert DEFAULT_TRAIN_COMMAND in readme and DEFAULT_SHA256 in readme
    log = [json.loads(line) for line in (DEFAULT_CHECKPOINT.parent / "train_log.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in log] == list(range(1, DEFAULT_EPOCHS + 1))


def test_the_previous_defaults_still_load() -> None:
    assert isinstance(load_checkpoint(WENET_CHECKPOINT).build(), WeNetSupernet)
    nested = load_checkpoint(NESTED_CHECKPOINT).build()
    assert isinstance(nested, NestedSupernet) and nested.arch["widths"] == [24, 48, 96]


@pytest.mark.slow
def test_the_defaults_full_network_scores_what_its_readme_states() -> None:
    """Scored as every evaluation scores a mode: BN statistics recalibrated for it (the nested
    supernet's stored ones are a mix of the widths trained, one BN per convolution sliced with it).
    The issue's target: at least the WeNet default's 0.926 (this one: 0.9292)."""
    checkpoint = load_checkpoint(DEFAULT_CHECKPOINT)
    previous = load_checkpoint(WENET_CHECKPOINT)
    split = ("name", "val_size", "split_seed")
    assert [checkpoint.data[key] for key in split] == [previous.data[key] for key in split]  # the same images
    stated = re.search(r"Accuracy: the full network (0\.\d+)", (DEFAULT_CHECKPOINT.parent / "README.md").read_text())
    assert stated is not None
    supernet = checkpoint.build().eval()
    splits = load_data(DataSpec.from_dict(checkpoint.data))
    accuracy = mode_accuracy(supernet, supernet.full_mode(), splits, EvaluationSettings())
    assert accuracy == pytest.approx(float(stated[1]), abs=1e-4)
    assert accuracy >= PREVIOUS_ACCURACY


@pytest.mark.slow
def test_the_stored_recipe_reproduces_the_training_runs_first_steps(tmp_path) -> None:
    recorded = json.loads(FIRST_STEPS.read_text())
    again = first_steps(load_checkpoint(DEFAULT_CHECKPOINT), len(recorded["steps"]), tmp_path)
    for mine, theirs in zip(again, recorded["steps"], strict=True):
        assert mine.keys() == theirs.keys()
        for key, value in theirs.items():
            assert math.isclose(mine[key], value, rel_tol=1e-4, abs_tol=1e-5), (key, mine, theirs)
