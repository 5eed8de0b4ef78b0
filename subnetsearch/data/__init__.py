"""Data sets and the train / validation / test split. Selection uses validation only."""

from subnetsearch.data._arrays import ArraySplit, DataError, Splits, random_crop_flip, split_train_val
from subnetsearch.data._sources import (
    FASHION_MNIST_ROOT,
    DataSpec,
    load_cifar10,
    load_data,
    load_fashion_mnist,
    load_image_folder,
    read_idx,
    synthetic,
)

__all__ = [
    "FASHION_MNIST_ROOT",
    "ArraySplit",
    "DataError",
    "DataSpec",
    "Splits",
    "load_cifar10",
    "load_data",
    "load_fashion_mnist",
    "load_image_folder",
    "random_crop_flip",
    "read_idx",
    "split_train_val",
    "synthetic",
]
