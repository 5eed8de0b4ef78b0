"""Data sources: Fashion-MNIST (IDX files of Debian's dataset-fashion-mnist), CIFAR-10 from a local
folder, any ImageFolder, and a synthetic set for fast tests. Nothing is ever downloaded."""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from subnetsearch.data._arrays import AUGMENTS, ArraySplit, DataError, Splits, split_train_val

T = TypeVar("T")
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
    image_size: int | None = None  # ImageFolder only: the network's square input (default: the images' own size)
    channels: int | None = None  # ImageFolder only: 1 (grayscale) or 3 (RGB); default: what the images are
    hflip: bool = True  # random horizontal flips while training (off for digits, text, oriented images)
    # ImageFolder only: images are resized to this square size and the input is cut from it (random
    # crops in training, the centre in evaluation); default: resized to the input size itself
    resize: int | None = None
    augment: str | None = None  # AUGMENTS; default resized-crop for image folders, else pad-crop
    min_crop_scale: float = 0.08  # resized-crop: the smallest share of the image's area a crop keeps
    normalize: str = "data"  # "data" (the training images' channel statistics), "imagenet", or "M,M,M/S,S,S"

    def __post_init__(self) -> None:
        if self.image_size is not None and self.image_size < 1:
            raise DataError(f"the image size (--image-size) must be >= 1, got {self.image_size}")
        if self.channels not in (None, 1, 3):
            raise DataError(f"channels (--channels) must be 1 (grayscale) or 3 (RGB), got {self.channels}")
        folder_only = {"--image-size": self.image_size, "--channels": self.channels, "--resize": self.resize}
        given = [option for option, value in folder_only.items() if value is not None]
        if self.name != "imagefolder" and given:
            verb = "applies" if len(given) == 1 else "apply"
            raise DataError(f"{', '.join(given)} {verb} to image folders (--data imagefolder), not to {self.name}")
        if self.resize is not None and (self.image_size is None or self.resize < self.image_size):
            raise DataError(f"--resize ({self.resize}) is the size the input is cut from: give --image-size "
                            "(the input) too, at most --resize")
        if self.augment is None:
            object.__setattr__(self, "augment", "resized-crop" if self.name == "imagefolder" else "pad-crop")
        if self.augment not in AUGMENTS:
            raise DataError(f"unknown augmentation (--augment) {self.augment!r}; choose one of {', '.join(AUGMENTS)}")
        if not 0 < self.min_crop_scale <= 1:
            raise DataError(f"--min-crop-scale must be in (0, 1], got {self.min_crop_scale}")
        statistics(self.normalize)  # malformed text is refused here, before any data is read

    def statistics(self, data: tuple[tuple[float, ...], tuple[float, ...]],
                   channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The (mean, std) to normalize images of `channels` channels with, given the data set's own:
        ImageNet's on grayscale images is its channel average (a converted stem sums RGB)."""
        mean, std = statistics(self.normalize) or data
        if self.normalize == "imagenet" and channels == 1:
            return (sum(mean) / 3,), (sum(std) / 3,)
        return mean, std

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: object) -> DataSpec:
        """The spec a checkpoint or a caller holds, checked: a mapping of known fields of the right
        types (a DataError names the field otherwise)."""
        if not isinstance(payload, dict):
            raise DataError(f"a data spec must be a mapping, got {type(payload).__name__}")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(payload) - set(known))
        if unknown:
            raise DataError(f"unknown data field(s) {unknown}; known: {sorted(known)}")
        for key, value in payload.items():
            allowed = _FIELD_TYPES[key]
            if isinstance(value, bool) != (bool in allowed) or not isinstance(value, allowed):
                raise DataError(f"data field {key!r} must be {' or '.join(t.__name__ for t in allowed)}, "
                                f"got {value!r}")
        if "name" in payload and payload["name"] not in (*_LOADERS, "synthetic"):
            raise DataError(f"unknown data set {payload['name']!r}; choose one of {sorted(_LOADERS) + ['synthetic']}")
        if payload.get("name") == "imagefolder" and "channels" not in payload and payload.get("image_size") is None:
            # recorded before image folders kept their own size: they were resized to 32 then
            payload = {**payload, "image_size": LEGACY_IMAGE_FOLDER_SIZE}
        if "augment" not in payload:  # recorded before augmentations were chosen: the CIFAR recipe then
            payload = {**payload, "augment": "pad-crop"}
        return cls(**payload)


_FIELD_TYPES: dict[str, tuple[type, ...]] = {"name": (str,), "root": (str, type(None)), "val_size": (int,),
                                             "split_seed": (int,), "image_size": (int, type(None)),
                                             "channels": (int, type(None)), "hflip": (bool,),
                                             "resize": (int, type(None)), "augment": (str, type(None)),
                                             "min_crop_scale": (float, int), "normalize": (str,)}
IMAGENET_STATISTICS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # what torchvision's weights expect


def statistics(text: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """`--normalize`: None for "data", torchvision's ImageNet statistics for "imagenet", else
    "M,M,M/S,S,S" (one mean and one positive std per channel) parsed."""
    if text == "data":
        return None
    if text == "imagenet":
        return IMAGENET_STATISTICS
    try:
        means, stds = (tuple(float(v) for v in part.split(",")) for part in text.split("/"))
    except ValueError:
        raise DataError(f"--normalize must be data, imagenet or MEAN,.../STD,... (one per channel), got {text!r}") \
            from None
    if len(means) != len(stds) or not all(v > 0 for v in stds):
        raise DataError(f"--normalize {text!r}: give as many means as stds, every std > 0")
    return means, stds
LEGACY_IMAGE_FOLDER_SIZE = 32  # what an image-folder spec without a size meant before `channels` was recorded
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


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
                  _FASHION_MNIST_MEAN, _FASHION_MNIST_STD, spec.split_seed, FASHION_MNIST_CLASSES, spec.hflip)


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
    return Splits("cifar10", train, val, test, 10, _CIFAR10_MEAN, _CIFAR10_STD, spec.split_seed, CIFAR10_CLASSES,
                  spec.hflip)


def load_image_folder(spec: DataSpec) -> Splits:
    """Any `root/train/<class>/<image>` tree with `root/test/`, `root/val/` or both (torchvision's
    `ImageFolder` layout), held in memory as uint8. Selection (validation) and reporting (test) never
    share images: with val/ and test/, val/ is the validation split and test/ the test split; with
    only one of them, it is the test split (val/ is ImageNet's held-out set) and the validation split
    is carved from train/ (`val_size` images, `split_seed`). `Splits.roles` says which. Images keep
    their own size unless `image_size` is set (they must then all have one size; with `resize`, they
    are resized to that and the input is cut from it) and their own channels (grayscale stays 1
    channel) unless `channels` is set. Decoding and resizing run on a thread per core (Pillow
    releases the GIL in both). Normalized with the training images' channel mean and std unless the
    spec says."""
    if not spec.root:
        raise DataError("imagefolder needs a root folder with train/ and val/ or test/ subfolders")
    root = Path(spec.root)
    if not (root / "train").is_dir():
        raise DataError(f"image folder not found: {root / 'train'} (the layout is root/train/<class>/<image>, "
                        "with root/val/, root/test/ or both beside it)")
    held_out = [part for part in ("val", "test") if (root / part).is_dir()]
    if not held_out:
        raise DataError(f"{root} has train/ but neither val/ nor test/: give the held-out images in one of them "
                        "(root/val/<class>/<image> or root/test/<class>/<image>)")
    test_part = "test" if "test" in held_out else "val"
    val_part = "val" if held_out == ["val", "test"] else None
    parts = {part: _list_image_folder(root / part) for part in ("train", *held_out)}
    classes = parts["train"][2]
    for part, (_, _, names) in parts.items():
        if names != classes:
            raise DataError(f"{root / part} has classes {names}, but {root / 'train'} has {classes}")
    headers = {part: _headers(paths) for part, (paths, _, _) in parts.items()}  # (mode, size) without decoding
    everything = [header for part in headers.values() for header in part]
    channels = spec.channels or (1 if all(mode in ("1", "L", "I", "I;16", "F") for mode, _ in everything) else 3)
    sizes = {size for _, size in everything}
    if spec.image_size is None and len(sizes) > 1:
        raise DataError(f"the images under {root} have {len(sizes)} sizes (e.g. {sorted(sizes)[:3]}); "
                        "give one with --image-size")
    side = spec.resize or spec.image_size
    size = (side, side) if side else sizes.pop()

    def tensors(part: str) -> tuple[torch.Tensor, torch.Tensor]:
        paths, labels, _ = parts[part]
        arrays = _decode_all(paths, "L" if channels == 1 else "RGB", size)
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous(), torch.tensor(labels)

    train_images, train_labels = tensors("train")
    if val_part is not None:
        train, val = ArraySplit(train_images, train_labels), ArraySplit(*tensors(val_part))
        roles = "validation: val/; test: test/"
    else:
        train, val = split_train_val(train_images, train_labels, spec.val_size, spec.split_seed)
        roles = (f"validation: {len(val)} images carved from train/ (split seed {spec.split_seed}); test: "
                 f"{test_part}/" + (" (ImageNet's layout: its held-out set reports, it never selects)"
                                    if test_part == "val" else ""))
    scaled = train.images.float().div_(255)
    mean = tuple(float(v) for v in scaled.mean(dim=(0, 2, 3)))
    std = tuple(max(float(v), 1e-3) for v in scaled.std(dim=(0, 2, 3)))
    return Splits(root.name, train, val, ArraySplit(*tensors(test_part)), len(classes), mean, std, spec.split_seed,
                  tuple(classes), spec.hflip, crop=spec.image_size if spec.resize else None, roles=roles)


def _list_image_folder(folder: Path) -> tuple[list[str], list[int], list[str]]:
    """The image files of `folder/<class>/`, their labels and the class names (torchvision's order)."""
    from torchvision.datasets import ImageFolder

    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}")
    try:
        listing = ImageFolder(str(folder), loader=lambda path: path)
    except (FileNotFoundError, RuntimeError) as error:
        raise DataError(f"cannot read image folder {folder}: {error}") from error
    return [path for path, _ in listing.samples], [label for _, label in listing.samples], listing.classes


def _threads() -> int:
    """Decoding threads: one per usable core, at most 8 (SUBNETSEARCH_DECODE_THREADS overrides)."""
    if os.environ.get("SUBNETSEARCH_DECODE_THREADS"):
        return max(1, int(os.environ["SUBNETSEARCH_DECODE_THREADS"]))
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def _each_image(paths: list[str], read: Callable[[Any], T]) -> list[T]:
    """`read(image)` of every file opened with Pillow, on a thread per core; a file that is no
    image (or breaks while read) is named in the error."""
    from PIL import Image, UnidentifiedImageError

    def one(path: str) -> T:
        try:
            with Image.open(path) as image:
                return read(image)
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise DataError(f"cannot decode image {path}: {error}") from error

    with ThreadPoolExecutor(_threads()) as pool:
        return list(pool.map(one, paths, chunksize=64))


def _headers(paths: list[str]) -> list[tuple[str, tuple[int, int]]]:
    """Each image's mode and size from its header (nothing decoded)."""
    return _each_image(paths, lambda image: (image.mode, image.size))


def _decode_all(paths: list[str], mode: str, size: tuple[int, int]) -> list[np.ndarray]:
    """Every image decoded, converted to `mode` and resized to `size` (W, H; bilinear, antialiased
    as torchvision's Resize on PIL images), as (H, W, C) uint8 arrays."""
    from PIL import Image

    def decode(image) -> np.ndarray:
        converted = image.convert(mode)
        if converted.size != size:
            converted = converted.resize(size, Image.Resampling.BILINEAR)
        return np.asarray(converted, dtype=np.uint8).reshape(size[1], size[0], -1)

    return _each_image(paths, decode)


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
                  (0.5,) * channels, (0.25,) * channels, seed, tuple(f"class-{i}" for i in range(num_classes)))


_LOADERS = {"fashion-mnist": load_fashion_mnist, "cifar10": load_cifar10, "imagefolder": load_image_folder}


def load_data(spec: DataSpec) -> Splits:
    """Build the splits a spec names (the spec is what a checkpoint records)."""
    if spec.name == "synthetic":
        if spec.val_size != DataSpec.val_size:
            raise DataError("the synthetic set has a fixed validation split: --val-size does not apply to it")
        return _with_transforms(synthetic(seed=spec.split_seed), spec)
    try:
        loader = _LOADERS[spec.name]
    except KeyError:
        raise DataError(f"unknown data set {spec.name!r}; choose one of {sorted(_LOADERS) + ['synthetic']}") from None
    return _with_transforms(loader(spec), spec)


def _with_transforms(splits: Splits, spec: DataSpec) -> Splits:
    """The spec's augmentation and normalization on the loaded splits (checked against their channels)."""
    mean, std = spec.statistics((splits.mean, splits.std), splits.stored_shape[0])
    assert spec.augment is not None  # resolved by DataSpec
    return replace(splits, augment=spec.augment, min_crop_scale=float(spec.min_crop_scale), mean=tuple(mean),
                   std=tuple(std))
