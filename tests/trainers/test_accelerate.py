"""Where training runs: device selection, autocast precisions (bf16 and fp16 run on the CPU too, so
the scaler path is exercised here), checkpoints that move between devices. GPU cases skip with the
reason on a machine without CUDA (`benchmarks/gpu_check.sh` runs the accelerator path on one)."""

from __future__ import annotations

import pytest
import torch

from subnetsearch.supernets import build_supernet, load_checkpoint
from subnetsearch.trainers import Accelerator, AcceleratorError, WeNetRecipe, WeNetStep, sgd, train_wenet
from tests.conftest import TINY_ARCH

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.gpu  # skipped without CUDA (tests/conftest.py), saying why


def test_auto_picks_cuda_only_when_there_is_one() -> None:
    assert Accelerator.resolve("auto").device.type == ("cuda" if CUDA else "cpu")
    assert Accelerator.resolve("cpu").device == torch.device("cpu")


@pytest.mark.skipif(CUDA, reason="this machine has a GPU: cuda is not an error here")
def test_cuda_asked_for_without_one_is_a_clear_error() -> None:
    with pytest.raises(AcceleratorError, match="--accelerator cuda: no CUDA device is visible"):
        Accelerator.resolve("cuda")


@pytest.mark.parametrize(("name", "precision", "message"), [
    ("tpu", "fp32", "accelerator must be one of"), ("cpu:1", "fp32", "accelerator must be one of"),
    ("cpu", "fp8", "precision must be one of"),
])
def test_bad_accelerators_and_precisions_are_refused(name: str, precision: str, message: str) -> None:
    with pytest.raises(AcceleratorError, match=message):
        Accelerator.resolve(name, precision)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_every_precision_trains_and_keeps_fp32_weights(precision: str, tiny_data) -> None:
    supernet = build_supernet(TINY_ARCH).train()
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    accelerator = Accelerator.resolve("cpu", precision)
    step = WeNetStep(supernet, sgd(supernet, 0.1, 0.9, 5e-4), accelerator=accelerator)
    assert step.scaler.is_enabled() == (precision == "fp16")
    images, labels = next(tiny_data.batches(tiny_data.train, 16, shuffle=True))
    metrics = [step(images, labels) for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(m["loss_full"])) for m in metrics)
    changed = [k for k, v in supernet.state_dict().items() if v.dtype.is_floating_point and not torch.equal(v, before[k])]
    assert changed, "no weight moved"
    assert {p.dtype for p in supernet.parameters()} == {torch.float32}


def test_the_recipe_records_the_precision_and_refuses_another_accelerator_precision(tiny_data, tmp_path) -> None:
    recipe = WeNetRecipe(epochs=1, batch_size=32, max_steps_per_epoch=2, precision="bf16")
    supernet = build_supernet(TINY_ARCH)
    with pytest.raises(ValueError, match="disagrees with the recipe"):
        train_wenet(supernet, tiny_data, recipe, tmp_path / "a", {"name": "synthetic"},
                    accelerator=Accelerator.resolve("cpu", "fp32"))
    train_wenet(supernet, tiny_data, recipe, tmp_path / "b", {"name": "synthetic"})
    assert load_checkpoint(tmp_path / "b" / "supernet.pt").recipe["precision"] == "bf16"
    with pytest.raises(ValueError, match="precision must be one of"):
        WeNetRecipe(precision="fp64")


@needs_cuda
def test_a_checkpoint_trained_on_the_gpu_loads_on_the_cpu_and_trains_on(tiny_data, tmp_path) -> None:
    recipe = WeNetRecipe(epochs=1, batch_size=32, max_steps_per_epoch=2, precision="fp16", channels_last=True)
    supernet = build_supernet(TINY_ARCH)
    train_wenet(supernet, tiny_data, recipe, tmp_path, {"name": "synthetic"},
                accelerator=Accelerator.resolve("cuda", "fp16", True))
    state = load_checkpoint(tmp_path / "supernet.pt")
    assert {t.device.type for t in state.state_dict.values()} == {"cpu"}
    on_cpu = state.build()
    assert on_cpu(torch.randn(2, 1, 12, 12)).shape == (2, 4)


def _session(folder, accelerator: str):
    """A search session over a tiny checkpoint on a quick host device, in a store of its own."""
    from subnetsearch.devices import Device, LatencyProtocol
    from subnetsearch.search import EvaluationSettings, SearchSession
    from subnetsearch.storage import Store
    from subnetsearch.supernets import save_checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny.pt"
    save_checkpoint(path, build_supernet(TINY_ARCH), {}, {"name": "synthetic", "split_seed": 0}, {})
    url = f"sqlite:///{folder / 'store.db'}"
    store = Store(url)
    store.add_device(Device("quick", protocol=LatencyProtocol(runtime="eager", threads=1, repeats=1, warmup=1,
                                                              min_run_time=0.01)))
    return SearchSession(store, url, store.get_device("quick"), path,
                         EvaluationSettings(calibration_batches=2, calibration_batch_size=32), accelerator=accelerator)


@pytest.mark.skipif(CUDA, reason="this machine has a GPU: cuda is not an error here")
def test_a_search_asked_to_run_on_cuda_without_one_is_refused_before_any_work(tmp_path) -> None:
    with pytest.raises(AcceleratorError, match="--accelerator cuda: no CUDA device is visible"):
        _session(tmp_path, "cuda")
    session = _session(tmp_path / "cpu", "auto")  # auto falls back to the CPU
    assert next(session.supernet.parameters()).device.type == "cpu"


@needs_cuda
def test_a_search_calibrates_and_scores_on_the_gpu_and_measures_latency_on_the_host(tmp_path) -> None:
    on_gpu, on_cpu = _session(tmp_path / "gpu", "cuda"), _session(tmp_path / "cpu", "cpu")
    assert next(on_gpu.supernet.parameters()).device.type == "cuda"
    for mode in (on_cpu.supernet.full_mode(), on_cpu.supernet.smallest_mode()):
        gpu, cpu = on_gpu.evaluate(mode), on_cpu.evaluate(mode)
        assert gpu.accuracy == pytest.approx(cpu.accuracy, abs=1 / 16) and gpu.latency_ms is not None
