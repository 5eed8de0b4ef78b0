"""The one training loop: its schedule, and, over every registered family trainer (the toy fourth
family's too), that an interrupted run resumes from its checkpoints to the same weights as a
straight run, the log has one line per epoch, and a run with another recipe is refused."""

from __future__ import annotations

import json
import math

import pytest
import torch

from subnetsearch.data import DataSpec
from subnetsearch.supernets import load_checkpoint
from subnetsearch.trainers import TRAINERS, Schedule, TrainEvents, TrainJob, get_trainer

# one line per family: the options that make its training quick on the synthetic set
QUICK = {"wenet": {"groups": "1,2,4"}, "lasso": {}, "ddi": {"joint_epochs": 1, "exit_epochs": 1},
         "nested": {"ratios": "1,0.5,0.25"}, "toy": {}}
FAMILIES = [*TRAINERS, "toy"]  # the built-in trainers, and the toy one the fixture registers


@pytest.fixture(scope="module", autouse=True)
def _toy_registered(toy_family: str) -> None:
    """The toy family and its trainer, registered for this module's tests only."""


def test_every_registered_trainer_has_a_quick_job() -> None:
    assert set(QUICK) == set(FAMILIES)


def _job(family: str, out, epochs: int = 2) -> TrainJob:
    trainer = get_trainer(family)
    return TrainJob(DataSpec(name="synthetic"), out, epochs, batch_size=32, max_steps_per_epoch=3,
                    depth=8 if trainer.uses_resnet else None, widths=(8, 16, 16) if trainer.uses_resnet else None,
                    options=QUICK[family])


@pytest.mark.parametrize("family", FAMILIES)
def test_an_interrupted_training_resumes_to_the_same_weights(tmp_path, family) -> None:
    """Through the trainer contract: a straight run, a run interrupted two thirds of the way in (a
    later phase, for DDI) and resumed from its checkpoints, and the same weights at the end; the
    log has one line per epoch; a rerun with another recipe in the same folder is refused."""
    trainer = get_trainer(family)
    steps: list[dict] = []
    straight = trainer.train(_job(family, tmp_path / "a"), TrainEvents(progress=steps.append))
    assert straight.checkpoint == tmp_path / "a" / "supernet.pt"
    assert straight.history and all(any(key.startswith("train_") for key in record) for record in straight.history)
    if family != "ddi":  # DDI logs per phase, under phases/
        log = [json.loads(line) for line in (tmp_path / "a" / "train_log.jsonl").read_text().splitlines()]
        assert [record["epoch"] for record in log] == [1, 2]
        assert 0 <= straight.accuracy <= 1

    crash_at = len(steps) * 2 // 3
    calls = 0

    def crash(state: dict) -> None:
        nonlocal calls
        calls += 1
        if calls == crash_at:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        trainer.train(_job(family, tmp_path / "b"), TrainEvents(progress=crash))
    assert not (tmp_path / "b" / "supernet.pt").exists()
    resumed = trainer.train(_job(family, tmp_path / "b"))
    assert len(resumed.history) == len(straight.history)
    reference = load_checkpoint(straight.checkpoint).state_dict
    for name, tensor in load_checkpoint(resumed.checkpoint).state_dict.items():
        torch.testing.assert_close(tensor, reference[name], rtol=1e-5, atol=1e-6, msg=name)
    with pytest.raises(ValueError, match="another recipe"):
        trainer.train(_job(family, tmp_path / "b", epochs=3))


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
