"""In-memory image splits and a fast batch iterator.

Every data set is held as uint8 tensors (N, C, H, W): Fashion-MNIST is 47 MB that way, and
batching from tensors is several times faster on a 2-core CPU than a PIL-based DataLoader. Crops,
flips and normalization run where the batch is, on uint8 until the input-sized result is
normalized: with `device` a GPU, the uint8 batch is pinned and copied (a quarter of the float
bytes) and transformed there, so the host only gathers indices.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from subnetsearch.errors import SubnetsearchError


class DataError(SubnetsearchError, ValueError):
    """A data set is missing, malformed, or asked for with bad settings."""


# Training augmentations: "pad-crop" (random crop after 2-pixel zero padding, the CIFAR recipe; from
# images stored larger than the input, an input-sized window anywhere, unpadded),
# "resized-crop" (random area and aspect, resized to the input size: the ImageNet recipe), "none".
AUGMENTS = ("pad-crop", "resized-crop", "none")


@dataclass(frozen=True)
class ArraySplit:
    """One split of a data set: uint8 images (N, C, H, W) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise DataError(f"labels shape {tuple(self.labels.shape)} does not match {self.images.shape[0]} images")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, count: int) -> ArraySplit:
        """The first `count` examples (the split is already shuffled where that matters)."""
        return ArraySplit(self.images[:count], self.labels[:count])


@dataclass(frozen=True)
class Splits:
    """Train / validation / test of one data set. Selection uses `val` only; `test` only reports."""

    name: str
    train: ArraySplit
    val: ArraySplit
    test: ArraySplit
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    split_seed: int
    classes: tuple[str, ...] = ()  # class names by label, where the data set has them
    hflip: bool = True  # training augmentation flips images horizontally (off for digits, text, ...)
    augment: str = "pad-crop"  # the training augmentation (AUGMENTS)
    crop: int | None = None  # the network's square input side, cut from the stored images (None: their size)
    min_crop_scale: float = 0.08  # resized-crop: the smallest share of the image's area a crop keeps
    roles: str = ""  # where each split comes from, said to the user (e.g. "test: val/ (ImageNet layout)")

    def __post_init__(self) -> None:
        if self.augment not in AUGMENTS:
            raise DataError(f"unknown augmentation {self.augment!r}; choose one of {', '.join(AUGMENTS)}")
        if not 0 < self.min_crop_scale <= 1:
            raise DataError(f"the smallest crop scale must be in (0, 1], got {self.min_crop_scale}")
        if len(self.mean) != self.stored_shape[0] or len(self.std) != self.stored_shape[0]:
            raise DataError(f"normalization has {len(self.mean)} means and {len(self.std)} stds for images of "
                            f"{self.stored_shape[0]} channel(s)")
        if self.crop is not None and not 1 <= self.crop <= min(self.stored_shape[1:]):
            raise DataError(f"the input size {self.crop} must be between 1 and the stored images' size "
                            f"{self.stored_shape[1]}x{self.stored_shape[2]} (it is cut from them)")

    @property
    def stored_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train.images.shape[1:]
        return (int(c), int(h), int(w))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.stored_shape
        return (c, self.crop, self.crop) if self.crop is not None else (c, h, w)

    def preprocessing(self) -> dict:
        """What a deployed network needs to be fed like the evaluator fed it: the input shape, the
        size images are resized to and the centre crop cut from them, the pixel scale, the channel
        mean and std, and the class names by label."""
        return {"input_shape": list(self.input_shape), "resize": list(self.stored_shape[1:]),
                "center_crop": list(self.input_shape[1:]), "pixel_scale": 255.0, "mean": list(self.mean),
                "std": list(self.std), "classes": list(self.classes)}

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) -> normalized float32, on the images' device: (x / 255 - mean) / std as
        one scale and one shift in place."""
        std = torch.tensor(self.std, dtype=torch.float64)
        scale = (1.0 / (255.0 * std)).float().to(images.device).view(1, -1, 1, 1)
        shift = (torch.tensor(self.mean, dtype=torch.float64) / std).float().to(images.device).view(1, -1, 1, 1)
        return images.float().mul_(scale).sub_(shift)

    def transform(self, images: torch.Tensor, augment: bool, generator: torch.Generator | None) -> torch.Tensor:
        """A uint8 batch as the network sees it: with `augment` the training augmentation (and
        random flips unless the data set turned them off), else the centre crop; normalized. Random
        draws come from `generator` on the CPU, so a batch is the same wherever it is transformed."""
        if augment and self.augment == "resized-crop":
            return self._resized_crops(images, generator)
        if augment and self.augment == "pad-crop":  # from larger stored images: input-sized crops anywhere
            return self.normalize(random_crop_flip(images, padding=2 if self.crop is None else 0, generator=generator,
                                                   flip=self.hflip, size=self.input_shape[1:]))
        if augment and self.hflip:  # "none": flips only
            images = flip_some(images, generator)
        return self.normalize(center_crop(images, self.input_shape[1:]))

    def _resized_crops(self, images: torch.Tensor, generator: torch.Generator | None,
                       index: torch.Tensor | None = None) -> torch.Tensor:
        return self.normalize(random_resized_crop(images, self.input_shape[1:], (self.min_crop_scale, 1.0), generator,
                                                  self.hflip, index=index))

    def batches(
        self,
        split: ArraySplit,
        batch_size: int,
        *,
        shuffle: bool = False,
        augment: bool = False,
        generator: torch.Generator | None = None,
        max_batches: int | None = None,
        shard: tuple[int, int] = (0, 1),
        augment_generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (normalized float images, labels), on `device` if given (a GPU: the uint8 batch is
        pinned, copied asynchronously and transformed there). Augmentation: `transform`.

        Data-parallel ranks: with `shard=(rank, world)` every rank draws the same order from its
        `generator` (seeded alike), cuts global batches of `batch_size * world` and keeps every
        world-th image of each from its rank on: the ranks' batches together are the one-process
        batch. Augmentation then draws from `augment_generator` (per rank), so `generator` stays the
        same on every rank and what else draws from it (the sub-networks a step samples) agrees."""
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        rank, world = shard
        if not 0 <= rank < world:
            raise DataError(f"shard must be (rank, world) with 0 <= rank < world, got {shard}")
        n = len(split)
        on_host = device is None or torch.device(device).type == "cpu"
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        step = batch_size * world
        for count, start in enumerate(range(0, n, step)):
            if max_batches is not None and count >= max_batches:
                return
            index = order[start : start + step][rank::world]
            labels = split.labels[index]
            if on_host and augment and self.augment == "resized-crop":  # windows cut from the stored images
                yield self._resized_crops(split.images, augment_generator or generator, index), labels
                continue
            images = split.images[index]
            if not on_host:
                images = images.pin_memory().to(device, non_blocking=True)
                labels = labels.pin_memory().to(device, non_blocking=True)
            yield self.transform(images, augment, augment_generator or generator), labels


def random_crop_flip(images: torch.Tensor, padding: int, generator: torch.Generator | None,
                     flip: bool = True, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Per-image random crop after zero padding, and random horizontal flip (standard CIFAR recipe);
    the crops are `size` (default: the images' own) anywhere inside the padded images."""
    n, _, height, width = images.shape
    h, w = size or (height, width)
    where = images.device
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
    dy = torch.randint(0, height + 2 * padding - h + 1, (n,), generator=generator).to(where)
    dx = torch.randint(0, width + 2 * padding - w + 1, (n,), generator=generator).to(where)
    rows = (dy.view(n, 1) + torch.arange(h, device=where).view(1, h)).view(n, 1, h, 1)
    cols = (dx.view(n, 1) + torch.arange(w, device=where).view(1, w)).view(n, 1, 1, w)
    batch = torch.arange(n, device=where).view(n, 1, 1, 1)
    channels = torch.arange(images.shape[1], device=where).view(1, -1, 1, 1)
    out = padded[batch, channels, rows, cols]
    flipped = (torch.rand(n, generator=generator) < 0.5).to(where)
    if flip:
        out[flipped] = out[flipped].flip(-1)
    return out


def flip_some(images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Each image flipped horizontally with probability 1/2."""
    flipped = (torch.rand(images.shape[0], generator=generator) < 0.5).to(images.device)
    out = images.clone()
    out[flipped] = out[flipped].flip(-1)
    return out


def center_crop(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The centre (h, w) window of every image (as torchvision's CenterCrop rounds it)."""
    h, w = images.shape[-2:]
    top, left = int(round((h - size[0]) / 2.0)), int(round((w - size[1]) / 2.0))
    return images if (h, w) == tuple(size) else images[..., top : top + size[0], left : left + size[1]]


def crop_windows(n: int, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
                 generator: torch.Generator | None) -> torch.Tensor:
    """(n, 4) rows of top, left, crop height, crop width, drawn as torchvision's
    RandomResizedCrop.get_params draws one (up to 10 tries of a random area share in `scale` and a
    log-uniform aspect in `ratio`, then the centre crop of the clamped aspect), for all n at once
    from `generator`."""
    tries = 10
    area = height * width * (scale[0] + (scale[1] - scale[0]) * torch.rand(n, tries, generator=generator))
    low, high = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(low + (high - low) * torch.rand(n, tries, generator=generator))
    w = torch.sqrt(area * aspect).round().long()
    h = torch.sqrt(area / aspect).round().long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.argmax(fits.int(), dim=1)  # the first try that fits (0 where none does: replaced below)
    rows = torch.arange(n)
    h, w, found = h[rows, first], w[rows, first], fits[rows, first]
    in_ratio = width / height  # no try fits: the centre crop at the nearest allowed aspect (torchvision's)
    if in_ratio < min(ratio):
        fallback_w, fallback_h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fallback_w, fallback_h = int(round(height * max(ratio))), height
    else:
        fallback_w, fallback_h = width, height
    h = torch.where(found, h, torch.full_like(h, fallback_h))
    w = torch.where(found, w, torch.full_like(w, fallback_w))
    top = (torch.rand(n, generator=generator) * (height - h + 1)).long().clamp(max=height - 1)
    left = (torch.rand(n, generator=generator) * (width - w + 1)).long().clamp(max=width - 1)
    top = torch.where(found, top, (height - h) // 2)
    left = torch.where(found, left, (width - w) // 2)
    return torch.stack([top, left, h, w], dim=1)


def random_resized_crop(images: torch.Tensor, size: tuple[int, int], scale: tuple[float, float],
                        generator: torch.Generator | None, flip: bool = True,
                        ratio: tuple[float, float] = (3 / 4, 4 / 3), index: torch.Tensor | None = None) -> torch.Tensor:
    """torchvision's RandomResizedCrop (and RandomHorizontalFlip) on a batch: windows drawn for the
    whole batch at once (`crop_windows`), each cut and resized to `size` by torchvision's own kernel
    (bilinear, antialiased; uint8 stays uint8, natively on the CPU), on the images' device. With
    `index`, the batch is those rows of `images`, cut from them in place (the full-size images are
    never gathered). (A thread pool over the windows measured no faster on 2 cores: each resize
    already uses torch's intra-op threads.)"""
    from torchvision.transforms.v2 import functional

    rows = index.tolist() if index is not None else list(range(images.shape[0]))
    _, _, height, width = images.shape
    windows = crop_windows(len(rows), height, width, scale, ratio, generator).tolist()
    mirrored = (torch.rand(len(rows), generator=generator) < 0.5).tolist()

    def one(k: int) -> torch.Tensor:
        top, left, h, w = windows[k]
        crop = functional.resize(images[rows[k], :, top : top + h, left : left + w], list(size), antialias=True)
        return crop.flip(-1) if flip and mirrored[k] else crop

    return torch.stack([one(k) for k in range(len(rows))])


def split_train_val(images: torch.Tensor, labels: torch.Tensor, val_size: int, seed: int) -> tuple[ArraySplit, ArraySplit]:
    """Deterministic, seeded carve-out of a validation split from the training images."""
    n = int(labels.shape[0])
    if not 0 < val_size < n:
        raise DataError(f"the validation split (--val-size, carved from the {n} training images) must hold "
                        f"1 to {n - 1} images, got {val_size}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_index, train_index = order[:val_size], order[val_size:]
    return ArraySplit(images[train_index], labels[train_index]), ArraySplit(images[val_index], labels[val_index])
