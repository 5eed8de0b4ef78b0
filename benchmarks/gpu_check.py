"""Issue 18: the accelerator path end to end on a machine with a CUDA GPU (run `gpu_check.sh`).

For each precision (fp32, bf16 where the GPU has it, fp16 with its gradient scaler) and with
channels-last: Algorithm 1 steps of the shipped ResNet-20 supernet's architecture and of a converted
torchvision ResNet-18 on the GPU (samples per second, final loss finite, weights still fp32), then
the checkpoint written from the GPU run loaded on the CPU and its full and smallest modes evaluated
(BN-calibrated accuracy on the GPU and on the CPU: they must agree); and the data transforms run on
the GPU (equal to the host's, and how many samples per second each side crops); and a search
session evaluating modes with BN calibration and accuracy on the GPU (agreeing with the CPU). Writes
results/gpu_check.json. On a machine without CUDA it writes nothing and exits 2 with the reason.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import write_result

from subnetsearch.data import ArraySplit, DataSpec, load_data, synthetic
from subnetsearch.search import EvaluationSettings
from subnetsearch.search._evaluator import mode_accuracy
from subnetsearch.supernets import build_model_supernet, build_supernet, load_checkpoint, model_arch
from subnetsearch.trainers import Accelerator, WeNetRecipe, WeNetStep, cuda_status, sgd, train_wenet

STEPS = 30


def steps_per_second(supernet, splits, accelerator: Accelerator, batch: int) -> dict:
    accelerator.prepare(supernet)
    step = WeNetStep(supernet, sgd(supernet, 0.01, 0.9, 5e-4), accelerator=accelerator)
    batches = splits.batches(splits.train, batch, shuffle=True, generator=torch.Generator().manual_seed(0))
    images, labels = next(batches)
    step(images, labels)  # warm-up (cuDNN autotuning, allocator)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(STEPS):
        metrics = step(images, labels)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    supernet.to("cpu")
    return {"samples_per_s": round(STEPS * batch / seconds, 1), "loss_full": metrics["loss_full"],
            "finite": bool(torch.isfinite(torch.tensor(metrics["loss_full"]))),
            "weights_fp32": {p.dtype for p in supernet.parameters()} == {torch.float32}}


def transforms_on_the_gpu() -> dict:
    """Every augmentation's batch transformed on the GPU equals the host's (the random draws are the
    CPU generator's), and batches per second of resized crops to 224 from 256x256 images there and
    on the host: what `Splits.batches(device="cuda")` saves the training loop."""
    images = torch.randint(0, 256, (512, 3, 256, 256), dtype=torch.uint8)
    base = synthetic(num_classes=4, per_class=4, channels=3, size=256)
    splits = dataclasses.replace(base, train=ArraySplit(images, torch.zeros(512, dtype=torch.int64)), crop=224,
                                 augment="resized-crop")
    result: dict = {"equal_to_host": {}}
    for augment in ("resized-crop", "pad-crop", "none"):
        data = dataclasses.replace(splits, augment=augment)
        host = next(data.batches(data.train, 64, augment=True, generator=torch.Generator().manual_seed(0)))[0]
        gpu = next(data.batches(data.train, 64, augment=True, device="cuda",
                                generator=torch.Generator().manual_seed(0)))[0]
        result["equal_to_host"][augment] = bool(torch.allclose(host, gpu.cpu(), atol=1e-3))
    for where in ("cpu", "cuda"):
        started = time.perf_counter()
        for batch, _ in splits.batches(splits.train, 128, shuffle=True, augment=True, device=where,
                                       generator=torch.Generator().manual_seed(0)):
            batch.sum().item()
        result[f"resized_crop_224_samples_per_s_{where}"] = round(512 / (time.perf_counter() - started), 1)
    return result


def search_on_the_gpu(folder: Path) -> dict:
    """The shipped supernet's full and smallest modes evaluated by a search session on the GPU and
    on the CPU (BN calibration and accuracy there; latency on the host's runtime either way)."""
    from subnetsearch.devices import Device, LatencyProtocol
    from subnetsearch.search import SearchSession
    from subnetsearch.storage import Store
    from subnetsearch.supernets import DEFAULT_CHECKPOINT

    out: dict = {}
    settings = EvaluationSettings(calibration_batches=4, max_eval_batches=4)
    for where in ("cuda", "cpu"):
        url = f"sqlite:///{folder / f'search-{where}.db'}"
        store = Store(url)
        device = store.add_device(Device("host", protocol=LatencyProtocol(runtime="eager", repeats=2)))
        session = SearchSession(store, url, device, DEFAULT_CHECKPOINT, settings, accelerator=where)
        started = time.perf_counter()
        results = {name: session.evaluate(mode) for name, mode in
                   (("full", session.supernet.full_mode()), ("smallest", session.supernet.smallest_mode()))}
        out[where] = {"seconds": round(time.perf_counter() - started, 2),
                      **{name: {"accuracy": r.accuracy, "latency_ms": r.latency_ms} for name, r in results.items()}}
    out["accuracy_agrees"] = all(abs(out["cuda"][n]["accuracy"] - out["cpu"][n]["accuracy"]) < 0.01
                                 for n in ("full", "smallest"))
    return out


def main() -> int:
    if not torch.cuda.is_available():
        print(f"gpu_check: {cuda_status()}; nothing to check on this machine", file=sys.stderr)
        return 2
    precisions = ["fp32", "fp16"] + (["bf16"] if torch.cuda.is_bf16_supported() else [])
    fmnist = load_data(DataSpec())
    rgb = synthetic(num_classes=10, per_class=256, channels=3, size=64)
    results: dict = {"gpu": torch.cuda.get_device_name(0), "steps": STEPS, "runs": []}
    results["transforms"] = transforms_on_the_gpu()
    print(results["transforms"], flush=True)
    for precision in precisions:
        for channels_last in (False, True):
            accelerator = Accelerator.resolve("cuda", precision, channels_last)
            resnet20 = build_supernet({"family": "wenet-cifar-resnet"})
            resnet18 = build_model_supernet(model_arch("torchvision:resnet18", num_classes=10, input_size=64))
            results["runs"].append({"precision": precision, "channels_last": channels_last,
                                    "resnet20_fmnist_b128": steps_per_second(resnet20, fmnist, accelerator, 128),
                                    "resnet18_64px_b64": steps_per_second(resnet18, rgb, accelerator, 64)})
            print(results["runs"][-1], flush=True)
    with tempfile.TemporaryDirectory() as folder:
        recipe = WeNetRecipe(epochs=1, batch_size=128, max_steps_per_epoch=50, precision="fp16", channels_last=True)
        supernet = build_supernet({"family": "wenet-cifar-resnet"})
        train_wenet(supernet, fmnist, recipe, folder, DataSpec().to_dict(),
                    accelerator=Accelerator.resolve("cuda", "fp16", True))
        state = load_checkpoint(Path(folder) / "supernet.pt")
        settings = EvaluationSettings(calibration_batches=4, max_eval_batches=4)
        agreement = {}
        for name in ("full", "smallest"):
            cpu_net = state.build()
            mode = cpu_net.named_modes()[name]
            on_cpu = mode_accuracy(cpu_net, mode, fmnist, settings)
            gpu_net = state.build().to("cuda")
            on_gpu = mode_accuracy(gpu_net, mode, fmnist, settings)
            agreement[name] = {"cpu": on_cpu, "gpu": on_gpu}
        results["gpu_checkpoint_on_cpu"] = agreement
        results["search_on_the_gpu"] = search_on_the_gpu(Path(folder))
    write_result("gpu_check", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
