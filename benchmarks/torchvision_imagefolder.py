"""Issue 18: a torchvision CNN from pretrained-style weights, end to end through the CLI, on a
real-size RGB image folder.

The folder: Fashion-MNIST images upscaled to 64x64 and saved as RGB PNGs (train / val / test per
class). "Pretrained" weights cannot be downloaded here, so a plain torchvision ResNet-18 (1000-class
head, as ImageNet weights have) is first trained briefly on the folder and saved as a state dict:
the stand-in for the file a user brings. Then, as a user would:
  subnetsearch train --model torchvision:resnet18 --weights resnet18.pth --data imagefolder ...
  subnetsearch search --strategy optuna ...        (accuracy vs MACs, stored in SQLite)
  subnetsearch best --max-macs ...
and the validation accuracy of the full and smallest modes (BN-calibrated, the evaluator's default
settings) from the store. Writes results/torchvision_imagefolder.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from _common import write_result
from PIL import Image

from subnetsearch.data import DataSpec, load_data
from subnetsearch.storage import Store

PER_CLASS = {"train": 150, "val": 30, "test": 30}
SIZE = 64


def make_folder(root: Path) -> None:
    splits = load_data(DataSpec())
    sources = {"train": splits.train, "val": splits.val, "test": splits.test}
    for part, count in PER_CLASS.items():
        images, labels = sources[part].images, sources[part].labels
        for label in range(10):
            folder = root / part / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            for index in (labels == label).nonzero().flatten()[:count].tolist():
                gray = Image.fromarray(images[index, 0].numpy()).resize((SIZE, SIZE), Image.BILINEAR)
                Image.merge("RGB", (gray, gray, gray)).save(folder / f"{index}.png")


def pretrain(root: Path, path: Path, epochs: int = 2) -> float:
    """A plain torchvision ResNet-18 with a 1000-class head trained on the folder: the stand-in for
    pretrained weights. Returns its validation accuracy (argmax over the first 10 logits)."""
    splits = load_data(DataSpec(name="imagefolder", root=str(root)))
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=1000)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        model.train()
        for images, labels in splits.batches(splits.train, 64, shuffle=True, augment=True, generator=generator):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(images), labels).backward()
            optimizer.step()
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels in splits.batches(splits.val, 100):
            correct += int((model(images)[:, :10].argmax(1) == labels).sum())
            total += len(labels)
    torch.save(model.state_dict(), path)
    return correct / total


def cli(*args: str) -> tuple[str, float]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "subnetsearch", *args], capture_output=True, text=True,
                          env={"COLUMNS": "200", **os.environ})
    if done.returncode != 0:
        raise SystemExit(f"subnetsearch {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout, round(time.perf_counter() - started, 1)


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        make_folder(work / "folder")
        t0 = time.perf_counter()
        pretrained_acc = pretrain(work / "folder", work / "resnet18.pth")
        pretrain_s = round(time.perf_counter() - t0, 1)
        storage = f"sqlite:///{work / 'store.db'}"
        train_out, train_s = cli("train", "--model", "torchvision:resnet18", "--weights", str(work / "resnet18.pth"),
                                 "--data", "imagefolder", "--data-root", str(work / "folder"), "--epochs", "2",
                                 "--batch-size", "64", "--lr", "0.02", "--out", str(work / "run"))
        search_out, search_s = cli("search", "--checkpoint", str(work / "run" / "supernet.pt"), "--strategy", "optuna",
                                   "--sampler", "random", "--trials", "10", "--objectives", "accuracy,macs",
                                   "--storage", storage)
        evaluations = Store(storage).count_evaluations()
        best_out, best_s = cli("best", "--storage", storage, "--objective", "accuracy", "--max-macs", "2e8", "--json")
        from subnetsearch.search import EvaluationSettings
        from subnetsearch.search._evaluator import mode_accuracy
        from subnetsearch.supernets import load_checkpoint

        state = load_checkpoint(work / "run" / "supernet.pt")
        supernet = state.build()
        splits = load_data(DataSpec.from_dict(state.data))
        settings = EvaluationSettings()
        accuracy = {name: round(mode_accuracy(supernet, mode, splits, settings), 4)
                    for name, mode in supernet.named_modes().items() if name in ("full", "smallest")}
        costs = {name: supernet.cost(supernet.named_modes()[name]).macs for name in accuracy}
        write_result("torchvision_imagefolder", {
            "folder": {"images_per_class": PER_CLASS, "size": f"{SIZE}x{SIZE} RGB", "source": "Fashion-MNIST upscaled"},
            "pretrained_stand_in": {"model": "torchvision resnet18, 1000-class head", "epochs": 2,
                                    "val_accuracy_first_10_logits": round(pretrained_acc, 4), "seconds": pretrain_s},
            "train": {"seconds": train_s, "log": [line for line in train_out.splitlines()
                                                  if line.startswith(("note:", "torchvision:", "epoch ", "done:"))]},
            "search": {"seconds": search_s, "trials": 10, "evaluations_stored": evaluations,
                       "tail": search_out.splitlines()[-3:]},
            "best_under_2e8_macs": json.loads(best_out) if best_out.strip().startswith(("{", "[")) else best_out,
            "best_seconds": best_s,
            "modes": {name: {"val_accuracy": accuracy[name], "macs": costs[name]} for name in accuracy},
        })


if __name__ == "__main__":
    main()
