"""Issue 18: does the data pipeline keep an accelerator fed? Image folders at ImageNet size.

An image folder of 1,200 training and 200 test JPEGs at 320x320 RGB (Fashion-MNIST images upscaled
and tinted; made once under ~/.cache) is loaded as the ImageNet recipe has it (resized to 256, the
224 input cut from it), and training batches of 128 with random resized crops and flips are drawn.
Measured in one run, one thing at a time, medians of 3:

- decoding the folder with 1 thread and with the default (one per core): images per second;
- training batches per second from the in-memory images, three ways: this project's
  `Splits.batches` (windows drawn per batch, torchvision's resize kernel on uint8 per window, the
  input-sized batch normalized), torchvision's v2 transforms per image over the
  same tensors in a DataLoader (0 and 2 worker processes), and the standard file pipeline
  (torchvision ImageFolder + PIL RandomResizedCrop per image, 2 worker processes, decoding every
  epoch);
- for scale, a ResNet-18 training step (forward + backward, batch 32, 224x224) on this CPU.

A GPU consumes a ResNet-18 batch far faster than this CPU, so the numbers that matter are the
loaders' samples per second against what a GPU needs; `gpu_check.py` measures the crops on a GPU.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import write_result

from subnetsearch.data import DataSpec, load_data

HOME = Path(os.environ.get("SUBNETSEARCH_BENCH_HOME", Path.home() / ".cache" / "subnetsearch-bench-data"))
FOLDER = HOME / "folder320"
TRAIN_PER_CLASS, TEST_PER_CLASS, SIZE, BATCH, SAMPLES = 120, 20, 320, 128, 1024
SPEC = DataSpec("imagefolder", str(FOLDER), val_size=200, image_size=224, resize=256)
REPEATS = 3


def make_folder() -> None:
    from PIL import Image

    if (FOLDER / ".done").exists():
        return
    fmnist = load_data(DataSpec())
    images, labels = fmnist.train.images, fmnist.train.labels
    tints = np.random.default_rng(0).uniform(0.4, 1.0, (10, 3))
    for part, per_class in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        for label in range(10):
            folder = FOLDER / part / f"c{label}"
            folder.mkdir(parents=True, exist_ok=True)
            chosen = torch.nonzero(labels == label).flatten()
            offset = 0 if part == "train" else TRAIN_PER_CLASS
            for index in chosen[offset : offset + per_class].tolist():
                gray = Image.fromarray(images[index, 0].numpy()).resize((SIZE, SIZE), Image.Resampling.BICUBIC)
                rgb = np.asarray(gray, dtype=np.float32)[..., None] * tints[label]
                Image.fromarray(rgb.astype(np.uint8), "RGB").save(folder / f"{index}.jpg", quality=90)
    (FOLDER / ".done").write_text("")


def decode_seconds(threads: int) -> float:
    """One load of the folder in a fresh process (no warm caches of ours), SUBNETSEARCH_DECODE_THREADS set."""
    code = ("import time, sys; sys.path.insert(0, '.'); from data_pipeline import SPEC; from subnetsearch.data import "
            "load_data; t = time.perf_counter(); load_data(SPEC); print(time.perf_counter() - t)")
    env = {**os.environ, "SUBNETSEARCH_DECODE_THREADS": str(threads)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env,
                         cwd=Path(__file__).parent, timeout=900)
    return float(out.stdout.strip().splitlines()[-1])


def samples_per_second(batches) -> float:
    started, count = time.perf_counter(), 0
    for images, _ in batches:
        count += int(images.shape[0])
        if count >= SAMPLES:
            break
    return count / (time.perf_counter() - started)


class PerImage(torch.utils.data.Dataset):
    """The same in-memory uint8 images through torchvision's v2 transforms, one image at a time."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean, std) -> None:
        from torchvision.transforms import v2

        self.images, self.labels = images, labels
        self.transform = v2.Compose([v2.RandomResizedCrop(224, antialias=True), v2.RandomHorizontalFlip(),
                                     v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.transform(self.images[index]), self.labels[index]


def file_pipeline(mean, std):
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                                    transforms.ToTensor(), transforms.Normalize(list(mean), list(std))])
    return datasets.ImageFolder(str(FOLDER / "train"), transform=transform)


def loader(dataset, workers: int):
    return torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers,
                                       persistent_workers=False, generator=torch.Generator().manual_seed(0))


def resnet18_step_samples_per_second() -> float:
    import torchvision

    model = torchvision.models.resnet18(num_classes=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    images, labels = torch.randn(32, 3, 224, 224), torch.randint(0, 10, (32,))
    times = []
    for _ in range(REPEATS + 1):
        started = time.perf_counter()
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    return 32 / statistics.median(times[1:])


def main() -> None:
    torch.set_num_threads(2)
    make_folder()
    images = (TRAIN_PER_CLASS + TEST_PER_CLASS) * 10
    decode = {f"threads_{n}": [decode_seconds(n) for _ in range(REPEATS)] for n in (1, 2)}
    decoding = {key: {"median_s": round(statistics.median(v), 2),
                      "images_per_s": round(images / statistics.median(v), 1)} for key, v in decode.items()}
    decoding["speedup_2_threads"] = round(statistics.median(decode["threads_1"]) / statistics.median(decode["threads_2"]),
                                          2)
    print(decoding, flush=True)
    splits = load_data(SPEC)
    pipelines = {
        "Splits.batches (this project)": lambda: splits.batches(
            splits.train, BATCH, shuffle=True, augment=True, generator=torch.Generator().manual_seed(0)),
        "torchvision_v2_per_image, 0 workers": lambda: loader(
            PerImage(splits.train.images, splits.train.labels, splits.mean, splits.std), 0),
        "torchvision_v2_per_image, 2 workers": lambda: loader(
            PerImage(splits.train.images, splits.train.labels, splits.mean, splits.std), 2),
        "torchvision_ImageFolder_PIL_files, 2 workers": lambda: loader(file_pipeline(splits.mean, splits.std), 2),
    }
    rates: dict[str, list[float]] = {name: [] for name in pipelines}
    for _ in range(REPEATS):  # interleaved, so drift on the shared machine hits every pipeline alike
        for name, make in pipelines.items():
            rates[name].append(samples_per_second(make()))
    batches = {name: round(statistics.median(v), 1) for name, v in rates.items()}
    ours = batches["Splits.batches (this project)"]
    step = resnet18_step_samples_per_second()
    write_result("data_pipeline", {
        "folder": {"train_images": TRAIN_PER_CLASS * 10, "test_images": TEST_PER_CLASS * 10, "size": SIZE,
                   "format": "JPEG q90 RGB"},
        "spec": SPEC.to_dict() | {"root": "~/.cache/subnetsearch-bench-data/folder320"},
        "decode_folder": decoding,
        "train_batches_samples_per_s": batches,
        "ours_over": {name: round(ours / rate, 2) for name, rate in batches.items() if rate != ours},
        "resnet18_train_step_samples_per_s_this_cpu": round(step, 1),
        "batch_size": BATCH, "samples_per_measurement": SAMPLES, "repeats": REPEATS, "threads": 2,
    })


if __name__ == "__main__":
    main()
