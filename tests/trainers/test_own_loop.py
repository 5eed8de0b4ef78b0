"""The docs' own-training-loop example (the own-model tutorial) runs as written and leaves a searchable
checkpoint."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from subnetsearch.supernets import WeNetSupernet, load_checkpoint

TUTORIAL = Path(__file__).resolve().parents[2] / "docs" / "tutorial" / "own-model.md"


def _example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", TUTORIAL.read_text(), flags=re.S)
    found = [block for block in blocks if "WeNetStep(" in block]
    assert len(found) == 1, "the tutorial has one own-loop example"
    return found[0]


def test_the_readme_own_loop_example_trains_and_writes_a_checkpoint(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_example(), "docs/tutorial/own-model.md (own loop)", "exec"), namespace)  # noqa: S102 - our own docs
    metrics = namespace["metrics"]
    assert set(metrics) == {"loss_full", "loss_mean", "acc_full"} and metrics["loss_full"] > 0
    state = load_checkpoint(tmp_path / "supernet.pt")
    supernet = state.build()
    assert isinstance(supernet, WeNetSupernet) and state.arch["model"] == "resnet18"
    with torch.no_grad():
        for mode in (supernet.full_mode(), supernet.smallest_mode()):
            supernet.set_mode(mode)
            assert supernet(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_the_step_refuses_what_is_not_a_supernet() -> None:
    from subnetsearch.trainers import WeNetStep

    with pytest.raises(TypeError, match="WeNetStep trains a supernet"):
        WeNetStep(torch.nn.Linear(2, 2), torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1))  # type: ignore[arg-type]
