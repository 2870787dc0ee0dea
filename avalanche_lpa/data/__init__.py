"""The data room: class-incremental benchmarks (synthetic and real), their transforms and downloads, and the
dataset table (:data:`DATASETS`: classes, image shape, statistics, files, loader of each dataset).

Depends only on Avalanche, torchvision and timm (no other room of this package but the bottom ``errors``), so models, tests, benchmarks
and the experiment layer all import it.
"""
from .datasets import (
    AVALANCHE_DATASET_NAMES,
    DEBIAN_FASHION_MNIST,
    DatasetNotFoundError,
    check_data_root,
    data_location,
    default_data_root,
    split_cifar100,
    split_fashion_mnist,
    split_torchvision,
)
from .imagenet100 import IMAGENET100_WNIDS, authors_imagenet100, imagenet100_classes, split_imagenet100
from .folder import STATS_FILE, folder_shape, folder_statistics, scan_image_folder, split_folder
from .integrity import check_files, read_image
from .tiny_imagenet import split_tiny_imagenet
from .core50 import split_core50
from .registry import DATASETS, DatasetInfo, dataset_info, register_dataset
from .splits import (
    TargetTensorDataset,
    check_class_split,
    class_incremental_split,
    classic_split,
    split_synthetic,
    subsample_per_class,
    synthetic_benchmark,
)
from .transforms import (
    AUTHORS_AUTO_AUGMENT,
    CIFAR100_MEAN,
    CIFAR100_STD,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelInput,
    eval_transform,
    resized,
    train_transform,
)

__all__ = [
    "split_core50",
    "split_tiny_imagenet",
    "ModelInput",
    "resized",
    "STATS_FILE",
    "check_class_split",
    "folder_shape",
    "folder_statistics",
    "scan_image_folder",
    "split_folder",
    "AUTHORS_AUTO_AUGMENT",
    "AVALANCHE_DATASET_NAMES",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "DATASETS",
    "DEBIAN_FASHION_MNIST",
    "DatasetInfo",
    "DatasetNotFoundError",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "IMAGENET100_WNIDS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TargetTensorDataset",
    "authors_imagenet100",
    "check_data_root",
    "check_files",
    "class_incremental_split",
    "data_location",
    "classic_split",
    "dataset_info",
    "default_data_root",
    "eval_transform",
    "imagenet100_classes",
    "read_image",
    "register_dataset",
    "split_cifar100",
    "split_fashion_mnist",
    "split_imagenet100",
    "split_synthetic",
    "split_torchvision",
    "subsample_per_class",
    "synthetic_benchmark",
    "train_transform",
]
