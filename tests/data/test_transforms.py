"""Image-folder transforms: resize then crop (random-resized crops in training, the centre in
evaluation), overridable normalization, every augmentation on every batch path, and the errors a
user can get (a missing --image-size, a crop larger than the stored images, bad --normalize)."""

from __future__ import annotations

import pytest
import torch

from subnetsearch.data import DataError, DataSpec, load_data
from subnetsearch.data._arrays import AUGMENTS, center_crop, crop_windows, random_resized_crop
from subnetsearch.data._sources import IMAGENET_STATISTICS


def _tree(root, size=(24, 20), mode="RGB", per_class=4) -> None:
    from PIL import Image

    for part in ("train", "val", "test"):
        for label in ("a", "b"):
            folder = root / part / label
            folder.mkdir(parents=True)
            for index in range(per_class):
                pixels = torch.randint(0, 256, (size[1], size[0], 3 if mode == "RGB" else 1),
                                       generator=torch.Generator().manual_seed(index + 10 * (label == "b")))
                Image.fromarray(pixels.squeeze(-1).numpy().astype("uint8"), mode).save(folder / f"{index}.png")


def test_a_whole_window_without_flips_is_the_image_itself() -> None:  # and flips mirror it
    images = torch.rand(5, 3, 9, 9)
    same = random_resized_crop(images, (9, 9), (1.0, 1.0), torch.Generator().manual_seed(0), flip=False,
                               ratio=(1.0, 1.0))
    assert torch.allclose(same, images, atol=1e-5)
    mirrored = random_resized_crop(images, (9, 9), (1.0, 1.0), torch.Generator().manual_seed(0), ratio=(1.0, 1.0))
    for out, image in zip(mirrored, images, strict=True):  # each image either as it is or mirrored
        assert torch.allclose(out, image, atol=1e-5) or torch.allclose(out, image.flip(-1), atol=1e-5)
    assert any(not torch.allclose(out, image, atol=1e-5) for out, image in zip(mirrored, images, strict=True))


def test_resized_crops_are_seeded_sized_windows() -> None:
    ramp = torch.arange(32.0).view(1, 1, 1, 32).expand(64, 1, 32, 32).contiguous()  # value = column
    first = random_resized_crop(ramp, (8, 8), (0.08, 1.0), torch.Generator().manual_seed(3), flip=False)
    again = random_resized_crop(ramp, (8, 8), (0.08, 1.0), torch.Generator().manual_seed(3), flip=False)
    other = random_resized_crop(ramp, (8, 8), (0.08, 1.0), torch.Generator().manual_seed(4), flip=False)
    assert first.shape == (64, 1, 8, 8) and torch.equal(first, again) and not torch.equal(first, other)
    widths = first[:, 0, 0, -1] - first[:, 0, 0, 0]  # a window of w columns spans about (w - w/8) of them
    assert widths.min() > 0 and widths.max() <= 31 and widths.std() > 1  # windows of many sizes, all inside
    assert first.min() >= 0 and first.max() <= 31


def test_windows_are_drawn_as_torchvision_draws_them() -> None:
    windows = crop_windows(4000, 30, 40, (0.08, 1.0), (3 / 4, 4 / 3), torch.Generator().manual_seed(0))
    top, left, h, w = windows.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 30).all() and (left + w <= 40).all()
    share, aspect = (h * w).float() / 1200, w.float() / h.float()
    assert share.min() >= 0.06 and share.max() <= 1.0 and share.std() > 0.2  # rounding moves a share a little
    assert aspect.min() > 0.6 and aspect.max() < 1.5
    from torchvision.transforms.v2 import RandomResizedCrop

    torch.manual_seed(0)  # torchvision's sampler, on the global generator: the same distribution of areas
    theirs = torch.tensor([RandomResizedCrop.get_params(torch.zeros(1, 30, 40), [0.08, 1.0], [3 / 4, 4 / 3])
                           for _ in range(4000)])
    assert abs(float((theirs[:, 2] * theirs[:, 3]).float().mean() / 1200) - float(share.mean())) < 0.02
    never = crop_windows(3, 20, 20, (1.0, 1.0), (2.0, 2.0), torch.Generator().manual_seed(0))  # no try can fit
    assert never.tolist() == [[5, 0, 10, 20]] * 3  # torchvision's fallback: the centred crop at the nearest aspect


def test_evaluation_sees_the_centre_crop_of_the_resized_images(tmp_path) -> None:
    _tree(tmp_path)
    splits = load_data(DataSpec("imagefolder", root=str(tmp_path), image_size=16, resize=20))
    assert splits.stored_shape == (3, 20, 20) and splits.input_shape == (3, 16, 16)
    images, _ = next(splits.batches(splits.val, 8))
    assert torch.allclose(images, splits.normalize(splits.val.images[..., 2:18, 2:18]))
    assert splits.preprocessing()["resize"] == [20, 20] and splits.preprocessing()["center_crop"] == [16, 16]
    trained, _ = next(splits.batches(splits.train, 8, augment=True, generator=torch.Generator().manual_seed(0)))
    assert trained.shape == (8, 3, 16, 16) and not torch.allclose(trained, images)
    assert splits.augment == "resized-crop"  # the image-folder default, as ImageNet recipes train


@pytest.mark.parametrize("augment", AUGMENTS)
def test_every_augmentation_gives_the_same_batches_on_every_path(tmp_path, augment) -> None:
    """The host path (resized crops cut from the stored images in place) and the accelerator path
    (the batch gathered first, then transformed where it is) give the same input-sized batch."""
    _tree(tmp_path)
    splits = load_data(DataSpec("imagefolder", root=str(tmp_path), image_size=12, resize=16, augment=augment))
    host = next(splits.batches(splits.train, 8, shuffle=True, augment=True, generator=torch.Generator().manual_seed(1)))
    generator = torch.Generator().manual_seed(1)
    index = torch.randperm(len(splits.train), generator=generator)[:8]  # the order batches() draws first
    gathered = splits.transform(splits.train.images[index], True, generator)
    assert host[0].shape == (8, 3, 12, 12) and torch.equal(host[1], splits.train.labels[index])
    torch.testing.assert_close(host[0], gathered)


@pytest.mark.gpu
def test_a_batch_transformed_on_the_gpu_equals_the_host_batch() -> None:
    for augment in AUGMENTS:
        spec = DataSpec("synthetic", augment=augment)
        data = load_data(spec)
        host = next(data.batches(data.train, 16, augment=True, generator=torch.Generator().manual_seed(0)))
        gpu = next(data.batches(data.train, 16, augment=True, device="cuda", generator=torch.Generator().manual_seed(0)))
        assert torch.allclose(host[0], gpu[0].cpu(), atol=1e-4) and torch.equal(host[1], gpu[1].cpu())


def test_normalization_is_the_datas_own_imagenets_or_given(tmp_path) -> None:
    _tree(tmp_path)
    own = load_data(DataSpec("imagefolder", root=str(tmp_path)))
    assert own.mean != IMAGENET_STATISTICS[0] and all(0 < m < 1 for m in own.mean)
    imagenet = load_data(DataSpec("imagefolder", root=str(tmp_path), normalize="imagenet"))
    assert (imagenet.mean, imagenet.std) == IMAGENET_STATISTICS
    given = load_data(DataSpec("synthetic", normalize="0.1/0.2"))
    assert (given.mean, given.std) == ((0.1,), (0.2,))
    assert torch.allclose(given.normalize(torch.full((1, 1, 2, 2), 255, dtype=torch.uint8)), torch.tensor(4.5))


def test_transform_options_are_checked_and_recorded(tmp_path) -> None:
    for spec, message in ((dict(name="imagefolder", resize=32), "give --image-size"),
                          (dict(name="imagefolder", resize=16, image_size=24), "at most --resize"),
                          (dict(name="fashion-mnist", resize=32), "--resize applies to image folders"),
                          (dict(augment="mixup"), "unknown augmentation"),
                          (dict(min_crop_scale=0.0), "--min-crop-scale must be in"),
                          (dict(normalize="imagenette"), "--normalize must be data, imagenet or"),
                          (dict(normalize="0.5,0.5/0.2"), "as many means as stds"),
                          (dict(normalize="0.5/0"), "every std > 0")):
        with pytest.raises(DataError, match=message):
            DataSpec(**spec)
    _tree(tmp_path, mode="L")
    with pytest.raises(DataError, match="3 means and 3 stds for images of 1 channel"):
        load_data(DataSpec("imagefolder", root=str(tmp_path), normalize="0.5,0.5,0.5/0.2,0.2,0.2"))
    gray = load_data(DataSpec("imagefolder", root=str(tmp_path), normalize="imagenet"))  # a stem summed over RGB
    assert gray.mean == pytest.approx((0.449,)) and gray.std == pytest.approx((0.226,))
    spec = DataSpec("imagefolder", "/x", image_size=224, resize=256, min_crop_scale=0.25)
    assert DataSpec.from_dict(spec.to_dict()) == spec and spec.to_dict()["augment"] == "resized-crop"
    legacy = {"name": "imagefolder", "root": "/x", "val_size": 5, "split_seed": 0, "image_size": 64, "channels": 3}
    assert DataSpec.from_dict(legacy).augment == "pad-crop"  # what a checkpoint recorded before was trained with
    assert DataSpec().augment == "pad-crop"


def test_a_center_crop_rounds_like_torchvision() -> None:
    from torchvision.transforms.v2 import functional

    images = torch.arange(2 * 3 * 11 * 10, dtype=torch.uint8).view(2, 3, 11, 10)
    assert torch.equal(center_crop(images, (6, 7)), functional.center_crop(images, [6, 7]))
