"""CIFAR-10 data layer: acquisition, decoding and cache; stratified splits; batched augmentation."""

from cifarlab.data.augment import (
    BatchAugment,
    alternate_flip_mask,
    crop,
    crop_flip,
    cutout_at,
    hflip,
    normalize,
)
from cifarlab.data.cifar10 import (
    CIFAR10_MD5,
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR10_URL,
    CLASSES,
    CifarArrays,
    default_cache_dir,
    default_data_dir,
    download_archive,
    load_cifar10,
)
from cifarlab.data.splits import Splits, make_splits

__all__ = [
    "CIFAR10_MD5",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR10_URL",
    "CLASSES",
    "BatchAugment",
    "CifarArrays",
    "Splits",
    "alternate_flip_mask",
    "crop",
    "crop_flip",
    "cutout_at",
    "default_cache_dir",
    "default_data_dir",
    "download_archive",
    "hflip",
    "load_cifar10",
    "make_splits",
    "normalize",
]
