"""The one training loop: its schedule, and, over every family's trainer (the toy fourth family's
too), that an interrupted run resumes from last.pt to the same weights as a straight run, the log
has one line per epoch, and a run with another recipe is refused."""

from __future__ import annotations

import json
import math

import pytest
import torch

from subnetsearch.supernets import build_supernet, load_checkpoint
from subnetsearch.trainers import LassoRecipe, Schedule, WeNetRecipe, train_lasso, train_wenet
from tests.conftest import TINY_ARCH
from tests.supernets.toy_family import TOY_ARCH, train_toy

LASSO_ARCH = {"family": "lasso-cifar-resnet", "depth": 8, "widths": [8, 16, 16], "input_size": 12, "num_classes": 4,
              "subnets": [{"name": "small", "channels": [2, 2, 3, 4, 5, 6, 7]}]}


def _wenet(supernet, splits, epochs, out, progress=None):
    return train_wenet(supernet, splits, WeNetRecipe(epochs=epochs, batch_size=32), out, {}, progress=progress)


def _lasso(supernet, splits, epochs, out, progress=None):
    return train_lasso(supernet, splits, LassoRecipe(epochs=epochs, batch_size=32), out, {}, progress=progress)


def _toy(supernet, splits, epochs, out, progress=None):
    return train_toy(supernet, splits, Schedule(epochs, 32, 0.05), out, progress=progress)


@pytest.fixture(scope="module", autouse=True)
def _toy_registered(toy_family: str) -> None:
    """The toy family, registered for this module's tests only."""


TRAINERS = {"wenet": (TINY_ARCH, _wenet), "lasso": (LASSO_ARCH, _lasso), "toy": (TOY_ARCH, _toy)}


@pytest.mark.parametrize("family", TRAINERS)
def test_an_interrupted_training_resumes_to_the_same_weights(tmp_path, tiny_data, family) -> None:
    arch, train = TRAINERS[family]
    torch.manual_seed(1)
    straight = build_supernet(arch)
    train(straight, tiny_data, 2, tmp_path / "a")
    log = [json.loads(line) for line in (tmp_path / "a" / "train_log.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in log] == [1, 2]
    assert all(any(key.startswith("train_loss") for key in record) and "seconds" in record for record in log)

    def crash_in_epoch_2(state: dict) -> None:
        if state["epoch"] == 2:
            raise KeyboardInterrupt

    torch.manual_seed(1)
    with pytest.raises(KeyboardInterrupt):
        train(build_supernet(arch), tiny_data, 2, tmp_path / "b", crash_in_epoch_2)
    assert load_checkpoint(tmp_path / "b" / "last.pt").metrics["epoch"] == 1
    resumed = build_supernet(arch)  # fresh weights: everything must come from last.pt
    history = train(resumed, tiny_data, 2, tmp_path / "b")
    history = history["history"] if isinstance(history, dict) else history
    assert [record["epoch"] for record in history] == [1, 2]
    for name, tensor in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    with pytest.raises(ValueError, match="another recipe"):
        train(build_supernet(arch), tiny_data, 3, tmp_path / "b")


def test_the_schedule_warms_up_then_decays_to_zero_and_checks_its_fields() -> None:
    schedule = Schedule(epochs=1, batch_size=8, lr=0.1)
    rates = [schedule.lr_at(step, 100) for step in range(100)]
    assert rates[0] == pytest.approx(0.05) and rates[1] == pytest.approx(0.1)  # 2 warm-up steps of 100
    assert all(a >= b for a, b in zip(rates[1:], rates[2:], strict=False)) and rates[-1] < 1e-3
    no_warmup = Schedule(epochs=1, batch_size=8, lr=0.1, warmup=0.0)
    assert no_warmup.lr_at(0, 10) == pytest.approx(0.1)
    assert no_warmup.lr_at(5, 10) == pytest.approx(0.05 * (1 + math.cos(math.pi / 2)))
    assert Schedule(1, 8, 0.1, max_steps_per_epoch=3).steps_per_epoch(100) == 3
    for fields, message in [({"epochs": 0}, "epochs"), ({"batch_size": 0}, "batch_size"), ({"lr": 0.0}, "lr"),
                            ({"warmup": 1.0}, "warmup"), ({"max_steps_per_epoch": 0}, "max_steps_per_epoch")]:
        with pytest.raises(ValueError, match=message):
            Schedule(**{"epochs": 1, "batch_size": 8, "lr": 0.1, **fields})
