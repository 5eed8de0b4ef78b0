"""Data sources: Fashion-MNIST (IDX files of Debian's dataset-fashion-mnist), CIFAR-10 from a local
folder, any ImageFolder, and a synthetic set for fast tests. Nothing is ever downloaded."""

from __future__ import annotations

import gzip
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from subnetsearch.data._arrays import ArraySplit, DataError, Splits, split_train_val

FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
_FASHION_MNIST_HINT = "install it with: apt-get install -y dataset-fashion-mnist"
# Channel statistics of the Fashion-MNIST training images.
_FASHION_MNIST_MEAN, _FASHION_MNIST_STD = (0.2860,), (0.3530,)
_CIFAR10_MEAN, _CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


@dataclass(frozen=True)
class DataSpec:
    """What data a run used: saved with every checkpoint so the split can be rebuilt exactly."""

    name: str = "fashion-mnist"
    root: str | None = None
    val_size: int = 5000
    split_seed: int = 0
    image_size: int | None = None  # ImageFolder only: images are resized to this square size

    def to_dict(self) -> dict:
        return asdict(self)


def read_idx(path: Path) -> np.ndarray:
    """Read one (optionally gzipped) IDX file: magic (0, 0, dtype 0x08, ndim), then big-endian dims."""
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as error:
        raise DataError(f"cannot read IDX file {path}: {error}") from error
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file (bad magic {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise DataError(f"{path} is truncated: header says {dims} ({expected} bytes), file has {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_fashion_mnist(spec: DataSpec) -> Splits:
    root = Path(spec.root) if spec.root else FASHION_MNIST_ROOT
    if not root.is_dir():
        raise DataError(f"Fashion-MNIST folder not found: {root} ({_FASHION_MNIST_HINT})")

    def pair(prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
        images = read_idx(root / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(root / f"{prefix}-labels-idx1-ubyte.gz")
        if images.shape[0] != labels.shape[0]:
            raise DataError(f"{root}: {images.shape[0]} {prefix} images but {labels.shape[0]} labels")
        return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))

    train_images, train_labels = pair("train")
    test_images, test_labels = pair("t10k")
    train, val = split_train_val(train_images, train_labels, spec.val_size, spec.split_seed)
    return Splits("fashion-mnist", train, val, ArraySplit(test_images, test_labels), 10,
                  _FASHION_MNIST_MEAN, _FASHION_MNIST_STD, spec.split_seed)


def load_cifar10(spec: DataSpec) -> Splits:
    """CIFAR-10 from a local folder holding `cifar-10-batches-py` (torchvision layout)."""
    if not spec.root:
        raise DataError("cifar10 needs a root folder holding cifar-10-batches-py (nothing is downloaded)")
    from torchvision.datasets import CIFAR10

    def load(train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            data = CIFAR10(spec.root, train=train, download=False)
        except RuntimeError as error:
            raise DataError(f"CIFAR-10 not found under {spec.root}: {error}") from error
        images = torch.from_numpy(np.ascontiguousarray(data.data.transpose(0, 3, 1, 2)))
        return images, torch.tensor(data.targets, dtype=torch.int64)

    train, val = split_train_val(*load(True), spec.val_size, spec.split_seed)
    test = ArraySplit(*load(False))
    return Splits("cifar10", train, val, test, 10, _CIFAR10_MEAN, _CIFAR10_STD, spec.split_seed)


def load_image_folder(spec: DataSpec) -> Splits:
    """Any `root/{train,test}/<class>/<image>` tree, resized to `image_size` and held in memory."""
    if not spec.root:
        raise DataError("imagefolder needs a root folder with train/ and test/ subfolders")
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    size = spec.image_size or 32
    to_tensor = transforms.Compose([transforms.Resize((size, size)), transforms.PILToTensor()])

    def load(part: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        folder = Path(spec.root) / part
        if not folder.is_dir():
            raise DataError(f"image folder not found: {folder}")
        try:
            data = ImageFolder(str(folder), transform=to_tensor)
        except (FileNotFoundError, RuntimeError) as error:
            raise DataError(f"cannot read image folder {folder}: {error}") from error
        images = torch.stack([data[i][0] for i in range(len(data))])
        return images, torch.tensor(data.targets, dtype=torch.int64), data.classes

    train_images, train_labels, classes = load("train")
    test_images, test_labels, test_classes = load("test")
    if classes != test_classes:
        raise DataError(f"train classes {classes} differ from test classes {test_classes}")
    train, val = split_train_val(train_images, train_labels, spec.val_size, spec.split_seed)
    channels = train_images.shape[1]
    return Splits(Path(spec.root).name, train, val, ArraySplit(test_images, test_labels), len(classes),
                  (0.5,) * channels, (0.25,) * channels, spec.split_seed)


def synthetic(num_classes: int = 4, per_class: int = 64, channels: int = 1, size: int = 12, seed: int = 0) -> Splits:
    """A tiny learnable data set for unit tests only: each class is a noisy fixed template."""
    generator = torch.Generator().manual_seed(seed)
    templates = torch.rand(num_classes, channels, size, size, generator=generator)

    def make(count: int) -> ArraySplit:
        labels = torch.arange(num_classes).repeat_interleave(count)
        noise = 0.35 * torch.rand(labels.shape[0], channels, size, size, generator=generator)
        images = (0.65 * templates[labels] + noise).mul(255).clamp(0, 255).to(torch.uint8)
        order = torch.randperm(labels.shape[0], generator=generator)
        return ArraySplit(images[order], labels[order])

    return Splits("synthetic", make(per_class), make(per_class // 4), make(per_class // 4), num_classes,
                  (0.5,) * channels, (0.25,) * channels, seed)


_LOADERS = {"fashion-mnist": load_fashion_mnist, "cifar10": load_cifar10, "imagefolder": load_image_folder}


def load_data(spec: DataSpec) -> Splits:
    """Build the splits a spec names (the spec is what a checkpoint records)."""
    if spec.name == "synthetic":
        return synthetic(seed=spec.split_seed)
    try:
        loader = _LOADERS[spec.name]
    except KeyError:
        raise DataError(f"unknown data set {spec.name!r}; choose one of {sorted(_LOADERS) + ['synthetic']}") from None
    return loader(spec)
