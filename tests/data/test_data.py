import gzip
import struct

import numpy as np
import pytest
import torch

from subnetsearch.data import (
    FASHION_MNIST_ROOT,
    DataError,
    DataSpec,
    Splits,
    load_data,
    random_crop_flip,
    read_idx,
    split_train_val,
    synthetic,
)


def _write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_real_fashion_mnist_loads_with_a_deterministic_split() -> None:
    splits = load_data(DataSpec())
    assert (len(splits.train), len(splits.val), len(splits.test)) == (55000, 5000, 10000)
    assert splits.input_shape == (1, 28, 28) and splits.num_classes == 10
    again = load_data(DataSpec())
    assert torch.equal(splits.val.labels, again.val.labels)
    other = load_data(DataSpec(split_seed=1))
    assert not torch.equal(splits.val.labels, other.val.labels)
    # validation is carved from the 60k training images, test is the official 10k
    assert sorted(torch.bincount(splits.test.labels).tolist()) == [1000] * 10


def test_train_and_validation_do_not_overlap() -> None:
    images = torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1)
    train, val = split_train_val(images, torch.arange(100), 20, seed=3)
    assert len(set(train.labels.tolist()) & set(val.labels.tolist())) == 0
    assert len(train) + len(val) == 100


def test_read_idx_round_trip_and_errors(tmp_path) -> None:
    array = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.gz", array)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), array)
    with pytest.raises(DataError, match="not found: .*missing.gz"):
        read_idx(tmp_path / "missing.gz")
    with gzip.open(tmp_path / "short.gz", "wb") as handle:
        handle.write(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"abc")
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "short.gz")
    with gzip.open(tmp_path / "bad.gz", "wb") as handle:
        handle.write(b"PK\x03\x04garbage")
    with pytest.raises(DataError, match="bad magic"):
        read_idx(tmp_path / "bad.gz")


def test_missing_data_folders_name_the_path(tmp_path) -> None:
    with pytest.raises(DataError, match=f"not found: {tmp_path / 'nope'}.*apt-get install"):
        load_data(DataSpec(root=str(tmp_path / "nope")))
    with pytest.raises(DataError, match="CIFAR-10 not found under"):
        load_data(DataSpec("cifar10", root=str(tmp_path)))
    with pytest.raises(DataError, match="image folder not found"):
        load_data(DataSpec("imagefolder", root=str(tmp_path)))
    with pytest.raises(DataError, match="unknown data set"):
        load_data(DataSpec("mnist-please"))
    with pytest.raises(DataError, match="--val-size, carved from the 60000 training images"):
        load_data(DataSpec(val_size=60000))
    with pytest.raises(DataError, match="fixed validation split: --val-size does not apply"):
        load_data(DataSpec("synthetic", val_size=0))
    with pytest.raises(DataError, match="--image-size applies to image folders"):
        DataSpec("synthetic", image_size=16)
    with pytest.raises(DataError, match=r"--image-size\) must be >= 1"):
        DataSpec("imagefolder", image_size=0)


def test_image_folder_loads_users_own_data(tmp_path) -> None:
    from PIL import Image

    for part in ("train", "test"):
        for label in ("cat", "dog"):
            folder = tmp_path / part / label
            folder.mkdir(parents=True)
            for index in range(6):
                Image.new("RGB", (10, 8), (index * 40, 0, 0)).save(folder / f"{index}.png")
    splits = load_data(DataSpec("imagefolder", root=str(tmp_path), val_size=2, image_size=16))
    assert splits.input_shape == (3, 16, 16) and splits.num_classes == 2
    assert (len(splits.train), len(splits.val), len(splits.test)) == (10, 2, 12)


def _image_tree(root, parts, mode="L", size=(9, 7), per_class=5):
    from PIL import Image

    for part in parts:
        for label in ("cat", "dog"):
            folder = root / part / label
            folder.mkdir(parents=True)
            for index in range(per_class):
                color = index * 40 if mode == "L" else (index * 40, 0, 255 - index * 40)
                Image.new(mode, size, color).save(folder / f"{index}.png")


def test_image_folder_keeps_grayscale_and_size_uses_val_folder_and_names_classes(tmp_path) -> None:
    _image_tree(tmp_path, ("train", "val", "test"))
    splits = load_data(DataSpec("imagefolder", root=str(tmp_path)))
    assert splits.input_shape == (1, 7, 9)  # grayscale stays 1 channel, native size (w 9, h 7) kept
    assert (len(splits.train), len(splits.val), len(splits.test)) == (10, 10, 10)  # val/ is the validation split
    assert splits.classes == ("cat", "dog")
    assert len(splits.mean) == 1 and 0 < splits.mean[0] < 1  # the training images' own statistics
    rgb = load_data(DataSpec("imagefolder", root=str(tmp_path), channels=3, image_size=12))
    assert rgb.input_shape == (3, 12, 12)
    with pytest.raises(DataError, match=r"must be 1 \(grayscale\)"):
        load_data(DataSpec("imagefolder", root=str(tmp_path), channels=2))


@pytest.mark.parametrize("held_out", [("val",), ("test",), ("val", "test")])
def test_image_folder_takes_val_test_or_both_and_says_which_split_does_what(tmp_path, held_out) -> None:
    """ImageNet's train/ + val/ layout (torchvision's ImageFolder) as well as train/ + test/ and all
    three: selection and reporting never share an image, and `roles` says where each comes from."""
    _image_tree(tmp_path, ("train", *held_out), per_class=6)
    splits = load_data(DataSpec("imagefolder", root=str(tmp_path), val_size=4))
    if held_out == ("val", "test"):
        assert (len(splits.train), len(splits.val), len(splits.test)) == (12, 12, 12)
        assert splits.roles == "validation: val/; test: test/"
    else:
        assert (len(splits.train), len(splits.val), len(splits.test)) == (8, 4, 12)
        assert splits.roles.startswith("validation: 4 images carved from train/") and f"test: {held_out[0]}/" in splits.roles
    (tmp_path / "lonely" / "train" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="has train/ but neither val/ nor test/"):
        load_data(DataSpec("imagefolder", root=str(tmp_path / "lonely")))


def test_image_folder_errors_name_the_file_and_the_option(tmp_path) -> None:
    from PIL import Image

    _image_tree(tmp_path, ("train", "test"), mode="RGB")
    Image.new("RGB", (20, 20)).save(tmp_path / "train" / "cat" / "big.png")
    with pytest.raises(DataError, match="2 sizes .*--image-size"):
        load_data(DataSpec("imagefolder", root=str(tmp_path), val_size=2))
    (tmp_path / "train" / "cat" / "big.png").unlink()
    with pytest.raises(DataError, match="--val-size, carved from the 10 training images"):
        load_data(DataSpec("imagefolder", root=str(tmp_path)))
    broken = tmp_path / "test" / "dog" / "broken.png"
    broken.write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=f"cannot decode image {broken}"):
        load_data(DataSpec("imagefolder", root=str(tmp_path), val_size=2))


def test_flip_augmentation_can_be_turned_off() -> None:
    base = synthetic()
    plain = Splits(**{**{f: getattr(base, f) for f in base.__dataclass_fields__}, "hflip": False})
    generator = torch.Generator().manual_seed(0)
    crops = random_crop_flip(base.train.images, 0, generator, flip=False)  # no padding: only a flip could change it
    assert torch.equal(crops, base.train.images)
    images, _ = next(plain.batches(plain.train, 64, augment=True, generator=torch.Generator().manual_seed(1)))
    flipped, _ = next(base.batches(base.train, 64, augment=True, generator=torch.Generator().manual_seed(1)))
    assert not torch.equal(images, flipped)  # same crops, the flips differ


def test_an_image_folder_spec_recorded_before_native_sizes_keeps_its_size() -> None:
    old = {"name": "imagefolder", "root": "/x", "val_size": 5, "split_seed": 0, "image_size": None}  # resized to 32
    assert DataSpec.from_dict(old).image_size == 32
    new = DataSpec("imagefolder", "/x", 5).to_dict()  # records channels: None there means the images' own size
    assert DataSpec.from_dict(new).image_size is None


def test_data_spec_from_dict_names_the_bad_field() -> None:
    assert DataSpec.from_dict({"name": "synthetic", "hflip": False}) == DataSpec("synthetic", hflip=False)
    for payload, message in (([], "must be a mapping"), ({"colour": 1}, r"unknown data field\(s\) \['colour'\]"),
                             ({"val_size": True}, "'val_size' must be int"), ({"hflip": 1}, "'hflip' must be bool"),
                             ({"name": "imagenet"}, "unknown data set 'imagenet'")):
        with pytest.raises(DataError, match=message):
            DataSpec.from_dict(payload)


def test_fashion_mnist_default_root_is_the_debian_package() -> None:
    assert (FASHION_MNIST_ROOT / "train-images-idx3-ubyte.gz").exists()


def test_batches_normalize_and_augment_preserve_shapes() -> None:
    splits = synthetic()
    images, labels = next(splits.batches(splits.train, 16, shuffle=True, augment=True,
                                         generator=torch.Generator().manual_seed(0)))
    assert images.shape == (16, 1, 12, 12) and images.dtype == torch.float32 and labels.shape == (16,)
    with pytest.raises(DataError, match="batch_size"):
        next(splits.batches(splits.train, 0))


def test_random_crop_flip_only_shifts_and_mirrors() -> None:
    image = torch.zeros(1, 1, 6, 6, dtype=torch.uint8)
    image[0, 0, 2, 3] = 255
    outputs = {tuple(random_crop_flip(image, 2, torch.Generator().manual_seed(s)).nonzero()[:, 2:].flatten().tolist())
               for s in range(40)}
    assert len(outputs) > 3  # it moves
    for out in outputs:
        assert len(out) in (0, 2)  # the one bright pixel stays one pixel (or is cropped away)
