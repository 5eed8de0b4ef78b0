"""`subnetsearch train --model torchvision:NAME | module:callable [--weights FILE]`: a converted model
trains, its checkpoint round-trips and is searched, stored and queried; every way to get the model
wrong is refused before training with what is wrong."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch
import torchvision
from typer.testing import CliRunner

from subnetsearch.cli import app
from subnetsearch.supernets import ArchError, build_model_supernet, load_checkpoint, model_arch
from tests.conftest import randomize_batchnorm

runner = CliRunner()
QUICK = ["--data", "synthetic", "--batch-size", "16", "--epochs", "1", "--max-steps-per-epoch", "2", "--threads", "1",
         "--groups", "1,2,4"]


@pytest.fixture
def user_models_on_path(monkeypatch):
    """The factories of tests/supernets/user_models.py importable by name, as a user's package is."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2]))


@pytest.mark.slow
@pytest.mark.parametrize("model", ["torchvision:resnet18", "tests.supernets.user_models:small_cnn",
                                   "tests.supernets.user_models:fixed_classes"])
def test_a_model_trains_round_trips_and_is_searched_stored_and_queried(tmp_path, model, user_models_on_path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--model", model, *QUICK, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "switchable layers" in result.output and "adapted to 1-channel images" in result.output
    checkpoint = load_checkpoint(out / "supernet.pt")
    assert checkpoint.arch["in_channels"] == 1 and checkpoint.arch["input_size"] == 12
    assert checkpoint.arch.get("model", checkpoint.arch.get("factory")) == model.removeprefix("torchvision:")
    rebuilt = checkpoint.build()  # from the arch alone (no weights file), then the checkpoint's weights
    assert rebuilt(torch.randn(2, 1, 12, 12)).shape == (2, 4)
    if not model.startswith("torchvision:"):
        return  # searching is the same for every model; one search keeps the suite fast
    storage = f"sqlite:///{tmp_path / 'store.db'}"
    search = runner.invoke(app, ["search", "--checkpoint", str(out / "supernet.pt"), "--strategy", "optuna",
                                 "--sampler", "random", "--trials", "3", "--objectives", "accuracy,macs",
                                 "--storage", storage])
    assert search.exit_code == 0, search.output
    best = runner.invoke(app, ["best", "--storage", storage, "--objective", "accuracy"])
    assert best.exit_code == 0 and "accuracy" in best.output, best.output


@pytest.mark.slow
def test_a_vit_and_a_cnn_without_bn_train_as_width_supernets_and_are_searched_and_exported(
        tmp_path, user_models_on_path) -> None:
    """A transformer and a BN-less CNN, refused before width knobs: trained through the CLI, searched,
    the best mode exported and run by ONNX Runtime."""
    import onnxruntime

    for model in ("tests.supernets.user_models:tiny_vit", "tests.supernets.user_models:without_batchnorm"):
        out = tmp_path / model.rsplit(":", 1)[1]
        result = runner.invoke(app, ["train", "--model", model, *QUICK, "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert "switchable layers" in " ".join(result.output.split()), result.output
        supernet = load_checkpoint(out / "supernet.pt").build()
        assert supernet.width_knobs and supernet.mode_kind == "width"
        storage = f"sqlite:///{out / 'store.db'}"
        search = runner.invoke(app, ["search", "--checkpoint", str(out / "supernet.pt"), "--strategy", "optuna",
                                     "--sampler", "random", "--trials", "3", "--objectives", "accuracy,macs",
                                     "--storage", storage])
        assert search.exit_code == 0, search.output
        best = runner.invoke(app, ["best", "--storage", storage, "--objective", "accuracy", "-o",
                                   str(out / "mode.onnx")])
        assert best.exit_code == 0, best.output
        session = onnxruntime.InferenceSession(str(out / "mode.onnx"))
        assert session.run(None, {"input": torch.rand(1, 1, 12, 12).numpy() * 255})[0].shape == (1, 4)


def test_pretrained_weights_carry_over_exactly_and_a_classifier_of_another_size_starts_fresh(tmp_path) -> None:
    torch.manual_seed(0)
    pretrained = torchvision.models.resnet18(num_classes=1000)
    randomize_batchnorm(pretrained)
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": pretrained.state_dict()}, path)
    notes: list[str] = []
    arch = model_arch("torchvision:resnet18", num_classes=10, input_size=32, in_channels=3)
    supernet = build_model_supernet(arch, path, notes).eval()
    assert any("fc.bias, fc.weight start fresh" in note for note in notes), notes
    reference = copy.deepcopy(pretrained).eval()
    reference.fc = torch.nn.Identity()
    supernet.network.fc = torch.nn.Identity()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        supernet.set_mode(supernet.full_mode())
        torch.testing.assert_close(supernet(x), reference(x), rtol=1e-4, atol=1e-4)  # the features, exactly


def test_train_from_a_weights_file_records_it_in_the_recipe(tmp_path) -> None:
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(num_classes=1000).state_dict(), path)
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--model", "torchvision:resnet18", "--weights", str(path), *QUICK,
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "start fresh" in result.output and "normalizing with ImageNet's channel statistics" in result.output
    checkpoint = load_checkpoint(out / "supernet.pt")
    assert checkpoint.recipe["init"].startswith("resnet18.pth sha256:")
    assert checkpoint.data["normalize"] == "imagenet"  # what the weights were trained with (averaged on grayscale)


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "torchvision:resnet1"], "torchvision has no classification model 'resnet1'"),
    (["--model", "resnet18"], "--model must be torchvision:NAME"),
    (["--model", "no_such_package.models:make"], "cannot import module 'no_such_package.models'"),
    (["--model", "tests.supernets.user_models:missing"], "has no callable 'missing'"),
    (["--model", "tests.supernets.user_models:not_a_module"], "returned a str, not a torch nn.Module"),
    (["--model", "tests.supernets.user_models:broken"], "the factory failed: RuntimeError: weights server unreachable"),
    (["--model", "tests.supernets.user_models:without_batchnorm", "--width-ratios", "1"],
     "no layer can be made switchable .*0: no private BN: its output feeds ReLU"),
    (["--model", "tests.supernets.user_models:nothing_sliceable"],
     "no layer can be made switchable .*0: no private BN: its output feeds ReLU 1, not a BatchNorm2d; no width knob: "
     "its output feeds AdaptiveAvgPool2d 2, not only a dense convolution"),
    (["--model", "tests.supernets.user_models:tiny_vit", "--width-ratios", ".5,.25"], "--width-ratios must be"),
    (["--model", "torchvision:resnet18", "--depth", "8"], "--depth and --widths describe the built-in CIFAR ResNet"),
    (["--weights", "w.pth"], "--weights needs --model"),
    (["--workers", "2"], "--workers applies to --backend ray"),
    (["--backend", "spark"], "--backend must be local or ray"),
    (["--precision", "fp8"], "precision must be one of fp32, bf16, fp16"),
])
def test_bad_model_options_are_refused_before_training(tmp_path, args, message, user_models_on_path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", *QUICK, *args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert re.search(message, " ".join(result.output.split())), result.output
    assert not (out / "supernet.pt").exists() and not (out / "last.pt").exists()


def test_a_weights_file_of_another_model_names_the_keys_that_do_not_fit(tmp_path) -> None:
    path = tmp_path / "mobilenet.pth"
    torch.save(torchvision.models.mobilenet_v2(num_classes=10).state_dict(), path)
    result = runner.invoke(app, ["train", "--model", "torchvision:resnet18", "--weights", str(path), *QUICK,
                                 "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "does not fit resnet18" in text and "missing (e.g. ['bn1.bias'" in text, text
    damaged = tmp_path / "damaged.pth"
    damaged.write_bytes(b"not a torch file")
    result = runner.invoke(app, ["train", "--model", "torchvision:resnet18", "--weights", str(damaged), *QUICK,
                                 "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "cannot read weights file" in result.output, result.output


def test_a_lasso_or_ddi_run_refuses_model_options(tmp_path) -> None:
    result = runner.invoke(app, ["train", "--family", "lasso", *QUICK[:-2], "--model", "torchvision:resnet18",
                                 "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "is an option of --family wenet" in result.output, result.output


def test_an_unbuildable_model_arch_is_an_arch_error() -> None:
    with pytest.raises(ArchError, match="cannot build wenet-module"):
        from subnetsearch.supernets import build_supernet

        build_supernet({"family": "wenet-module", "factory": "tests.supernets.user_models:missing"})
