import gzip
import struct

import numpy as np
import pytest
import torch

from subnetsearch.data import (
    FASHION_MNIST_ROOT,
    DataError,
    DataSpec,
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
    with pytest.raises(DataError, match="val_size"):
        load_data(DataSpec(val_size=60000))


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
