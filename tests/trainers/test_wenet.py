import json

import pytest
import torch
import torch.nn.functional as F

from subnetsearch.supernets import build_supernet, load_checkpoint
from subnetsearch.trainers import WeNetRecipe, evaluate_accuracy, sample_patterns, sgd, timeless, train_step, train_wenet
from tests.conftest import TINY_ARCH


def test_one_step_accumulates_every_sampled_subnetwork_before_stepping(tiny_supernet, tiny_data) -> None:
    images, labels = next(tiny_data.batches(tiny_data.train, 16))
    patterns = [(tiny_supernet.full_mode(), True), (tiny_supernet.smallest_mode(), True)]
    expected = {}
    for mode, _ in patterns:
        tiny_supernet.zero_grad()
        tiny_supernet.set_mode(mode)
        F.cross_entropy(tiny_supernet.train()(images), labels).backward()
        for name, p in tiny_supernet.named_parameters():
            if p.grad is not None:
                expected[name] = expected.get(name, 0) + p.grad.clone()
    optimizer = torch.optim.SGD(tiny_supernet.parameters(), lr=0.0)  # lr 0: keep weights, inspect grads
    train_step(tiny_supernet, optimizer, images, labels, patterns, distill=False)
    for name, p in tiny_supernet.named_parameters():
        if name in expected:
            torch.testing.assert_close(p.grad, expected[name], rtol=1e-4, atol=1e-6)


def test_sampling_follows_algorithm_1(tiny_supernet) -> None:
    generator = torch.Generator().manual_seed(0)
    paper = sample_patterns(tiny_supernet, WeNetRecipe(samples_per_step=5, sampling="independent"), generator)
    assert [m for m, _ in paper[:2]] == [tiny_supernet.full_mode(), tiny_supernet.smallest_mode()]
    assert len(paper) == 5 and all(track for _, track in paper)
    ours = sample_patterns(tiny_supernet, WeNetRecipe(samples_per_step=4), generator)
    assert [track for _, track in ours] == [True, True, True, False]
    assert len(set(ours[2][0].values.values())) == 1  # the third is a uniform pattern


def test_mixed_patterns_do_not_touch_running_stats_under_uniform_stats(tiny_supernet, tiny_data) -> None:
    images, labels = next(tiny_data.batches(tiny_data.train, 16))
    before = {k: v.clone() for k, v in tiny_supernet.state_dict().items() if "running_mean" in k and ".norms." in k}
    mixed = tiny_supernet.make_mode({**tiny_supernet.full_mode().values, "layer1.0.conv1": 2})
    train_step(tiny_supernet.train(), torch.optim.SGD(tiny_supernet.parameters(), lr=0.0), images, labels,
               [(mixed, False)], distill=False)
    after = {k: v for k, v in tiny_supernet.state_dict().items() if "running_mean" in k and ".norms." in k}
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_training_lowers_the_loss_and_writes_checkpoint_and_log(tmp_path, tiny_data) -> None:
    supernet = build_supernet(TINY_ARCH)
    recipe = WeNetRecipe(epochs=4, batch_size=32, lr=0.05, augment=False)
    result = train_wenet(supernet, tiny_data, recipe, tmp_path, {"name": "synthetic"})
    losses = [epoch["train_loss_full"] for epoch in result["history"]]
    assert losses[-1] < losses[0] * 0.8
    assert evaluate_accuracy(supernet, tiny_data, tiny_data.val) > 0.5  # 4 classes: chance is 0.25
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [entry["epoch"] for entry in log] == [1, 2, 3, 4]
    checkpoint = load_checkpoint(tmp_path / "supernet.pt")
    assert checkpoint.recipe["epochs"] == 4 and checkpoint.metrics["history"] == timeless(result["history"])


def test_interrupted_training_resumes_to_the_same_weights(tmp_path, tiny_data) -> None:
    recipe = WeNetRecipe(epochs=2, batch_size=32, augment=True)
    torch.manual_seed(1)
    straight = build_supernet(TINY_ARCH)
    train_wenet(straight, tiny_data, recipe, tmp_path / "a", {})

    def crash_in_epoch_2(state: dict) -> None:
        if state["epoch"] == 2:
            raise KeyboardInterrupt

    torch.manual_seed(1)
    with pytest.raises(KeyboardInterrupt):
        train_wenet(build_supernet(TINY_ARCH), tiny_data, recipe, tmp_path / "b", {}, progress=crash_in_epoch_2)
    assert load_checkpoint(tmp_path / "b" / "last.pt").metrics["epoch"] == 1
    resumed = build_supernet(TINY_ARCH)  # fresh weights: everything must come from last.pt
    train_wenet(resumed, tiny_data, recipe, tmp_path / "b", {})
    for name, tensor in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    with pytest.raises(ValueError, match="another recipe"):
        train_wenet(build_supernet(TINY_ARCH), tiny_data, WeNetRecipe(epochs=3, batch_size=32), tmp_path / "b", {})


def test_fixed_mode_trains_only_that_subnetwork(tmp_path, tiny_data, tiny_supernet) -> None:
    mode = tiny_supernet.uniform_mode(4)
    recipe = WeNetRecipe(epochs=1, batch_size=32, fixed_mode=mode.to_json())
    assert sample_patterns(tiny_supernet, recipe, torch.Generator()) == [(mode, True)]


@pytest.mark.parametrize("changes, message", [
    ({"samples_per_step": 0}, "samples_per_step"), ({"sampling": "all"}, "sampling"),
    ({"epochs": 0}, "epochs"), ({"lr": 0.0}, "lr"),
])
def test_bad_recipes_are_refused(changes, message) -> None:
    with pytest.raises(ValueError, match=message):
        WeNetRecipe(**changes)


def test_optimizer_does_not_decay_bn_and_bias(tiny_supernet) -> None:
    groups = sgd(tiny_supernet, 0.05, 0.9, 5e-4).param_groups
    assert groups[0]["weight_decay"] > 0 and groups[1]["weight_decay"] == 0
    assert all(p.dim() <= 1 for p in groups[1]["params"])
