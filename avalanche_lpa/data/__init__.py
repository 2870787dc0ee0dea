"""The data room: class-incremental benchmarks (synthetic and real), their transforms, statistics and downloads.

Depends only on Avalanche, torchvision and timm (no other room of this package), so models, tests, benchmarks
and the experiment layer all import it.
"""
from .datasets import (
    AVALANCHE_DATASET_NAMES,
    DEBIAN_FASHION_MNIST,
    IMAGENET100_WNIDS,
    DatasetNotFoundError,
    authors_imagenet100,
    check_data_root,
    default_data_root,
    imagenet100_classes,
    split_cifar100,
    split_fashion_mnist,
    split_imagenet100,
)
from .splits import TargetTensorDataset, class_incremental_split, classic_split, subsample_per_class, synthetic_benchmark
from .transforms import (
    AUTHORS_AUTO_AUGMENT,
    CIFAR100_MEAN,
    CIFAR100_STD,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    eval_transform,
    train_transform,
)

__all__ = [
    "AUTHORS_AUTO_AUGMENT",
    "AVALANCHE_DATASET_NAMES",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "DEBIAN_FASHION_MNIST",
    "DatasetNotFoundError",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "IMAGENET100_WNIDS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TargetTensorDataset",
    "authors_imagenet100",
    "check_data_root",
    "class_incremental_split",
    "classic_split",
    "default_data_root",
    "eval_transform",
    "imagenet100_classes",
    "split_cifar100",
    "split_fashion_mnist",
    "split_imagenet100",
    "subsample_per_class",
    "synthetic_benchmark",
    "train_transform",
]
