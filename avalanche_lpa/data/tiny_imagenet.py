"""Split Tiny-ImageNet (200 classes, 64 px; 500 training and 50 validation images per class), read by Avalanche's
``TinyImagenet`` dataset and downloaded by it, as Avalanche's ``SplitTinyImageNet`` does, into Avalanche's dataset
location (``~/.avalanche/data/tinyimagenet/tiny-imagenet-200``) when missing; the validation images are the test set.
"""
from __future__ import annotations

import contextlib
import io
import os
from typing import Optional, Sequence

from .datasets import _dataset_root, table_transforms
from .integrity import read_image
from .registry import dataset_info
from .splits import class_incremental_split, subsample_per_class
from .transforms import ModelInput

__all__ = ["split_tiny_imagenet"]


def split_tiny_imagenet(
    root: Optional[os.PathLike] = None,
    n_experiences: int = 10,
    class_order: Optional[Sequence[int]] = None,
    seed: int = 1993,
    augment: bool = True,
    auto_augment: Optional[str] = None,
    max_train_per_class: Optional[int] = None,
    max_test_per_class: Optional[int] = None,
    download: bool = True,
    initial_classes: Optional[int] = None,
    model_input: Optional[ModelInput] = None,
):
    """Split Tiny-ImageNet from ``<root>/tiny-imagenet-200`` (downloaded there if missing and ``download``).

    Class ids are Avalanche's (the order of ``wnids.txt``). Training images get a random crop with 8 px of padding
    and a flip (``auto_augment`` added if given); the arguments are as in :func:`~avalanche_lpa.data.split_cifar100`.
    """
    info = dataset_info("tiny_imagenet")
    root = _dataset_root(info, root, download)
    # 64 px: a padded crop, as CIFAR's (not the random-resized crop of larger images)
    train_tf, eval_tf = table_transforms(info, augment, auto_augment, model_input, random_resized_crop=False)
    with contextlib.redirect_stdout(io.StringIO()):  # Avalanche prints "Files already downloaded and verified"
        train, test = (info.torchvision(str(root), train=split, loader=read_image, download=False)
                       for split in (True, False))
    train = subsample_per_class(train, max_train_per_class, seed)
    test = subsample_per_class(test, max_test_per_class, seed)
    return class_incremental_split(train, test, n_experiences, class_order, seed, initial_classes,
                                   train_transform=train_tf, eval_transform=eval_tf)
