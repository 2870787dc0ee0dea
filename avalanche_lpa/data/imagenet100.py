"""ImageNet-100 from a local ImageNet folder (``<root>/train/<wnid>/*``, ``<root>/val/<wnid>/*``): the authors'
100 classes (the first 100 WordNet ids in sorted order, as DyTox's subset) or a class list of the user's. ImageNet is
not downloaded: a missing folder is a one-line error that says to pass it with ``--data-root``.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from torchvision import datasets

from .datasets import check_data_root, default_data_root
from .integrity import DatasetNotFoundError, read_image
from .registry import dataset_info
from .splits import class_incremental_split, subsample_per_class
from .transforms import ModelInput, eval_transform, train_transform

__all__ = ["IMAGENET100_WNIDS", "authors_imagenet100", "imagenet100_classes", "split_imagenet100"]


class _ClassSubsetFolder(datasets.ImageFolder):
    """``ImageFolder`` restricted to ``classes`` (WordNet ids), labelled in that order; an image that does not
    decode is a one-line error naming it (:func:`read_image`)."""

    def __init__(self, root: str, classes: Sequence[str]) -> None:
        self._wanted = list(classes)
        super().__init__(root, loader=read_image)

    def find_classes(self, directory: str) -> Tuple[List[str], Dict[str, int]]:
        missing = [c for c in self._wanted if not (Path(directory) / c).is_dir()]
        if missing:
            raise DatasetNotFoundError(
                f"ImageNet-100: {len(missing)} class folder(s) missing under {directory} (first: {missing[0]}); "
                "check --class-list against the folder"
            )
        return self._wanted, {c: i for i, c in enumerate(self._wanted)}


#: The authors' ImageNet-100 (``val_100.txt``, the subset DyTox uses too): the first 100 ImageNet-1k classes
#: in sorted WordNet-id order, one id per line.
IMAGENET100_WNIDS = Path(__file__).with_name("imagenet100_wnids.txt")


def authors_imagenet100() -> List[str]:
    """The 100 WordNet ids of the authors' ImageNet-100, in label order."""
    return IMAGENET100_WNIDS.read_text().split()


def imagenet100_classes(root: os.PathLike, class_list: Optional[os.PathLike] = None) -> List[str]:
    """The 100 WordNet ids: from ``class_list`` (one per line) or the first 100 folders of ``<root>/train``.

    On a full ImageNet-1k folder the first 100 folders in sorted order are exactly the authors' subset
    (:func:`authors_imagenet100`).
    """
    if class_list is not None:
        path = Path(class_list).expanduser()
        if not path.is_file():
            raise DatasetNotFoundError(f"class list {path} does not exist; pass a file with one WordNet id per line")
        wnids = [line.split()[0] for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
        if len(set(wnids)) != len(wnids):
            raise ValueError(f"class list {path} repeats a WordNet id; each class must appear once")
        return wnids
    train = Path(root).expanduser() / "train"
    return sorted(d.name for d in train.iterdir() if d.is_dir())[:100]


def split_imagenet100(
    root: Optional[os.PathLike] = None,
    class_list: Optional[os.PathLike] = None,
    n_experiences: int = 10,
    class_order: Optional[Sequence[int]] = None,
    seed: int = 1993,
    augment: bool = True,
    auto_augment: Optional[str] = None,
    img_size: Optional[int] = None,
    max_train_per_class: Optional[int] = None,
    max_test_per_class: Optional[int] = None,
    initial_classes: Optional[int] = None,
    model_input: Optional[ModelInput] = None,
):
    """ImageNet-100 from a local ImageNet folder (``<root>/train/<wnid>/*``, ``<root>/val/<wnid>/*``).

    Args:
        root: the ImageNet folder.
        class_list: file with one WordNet id per line; without it the first 100 classes of ``<root>/train``
            in sorted order, which on a full ImageNet folder is the authors' subset (a warning says when the
            picked classes differ from it).
        img_size: training crop / evaluation size (``None``: the table's, 224 as in the paper).
        augment: the authors' training transform (random-resized crop, flip, ``auto_augment``); else the
            evaluation transform.

    The other arguments (``initial_classes``: a B50 split) are as in :func:`split_cifar100`.
    """
    info = dataset_info("imagenet100")
    root = check_data_root(root if root is not None else default_data_root(info.name),
                           " and ".join(f"{split}/" for split in info.files))
    for split in info.files:
        if not (root / split).is_dir():
            raise DatasetNotFoundError(
                f"ImageNet not found: expected {root / split}/<wnid>/<images>; pass the folder with --data-root"
            )
    wnids = imagenet100_classes(root, class_list)
    if class_list is None and wnids != authors_imagenet100():
        warnings.warn(
            f"the first {len(wnids)} class folders of {root / 'train'} ({wnids[0]} ... {wnids[-1]}) are not the "
            f"authors' ImageNet-100 ({IMAGENET100_WNIDS.name}); pass --class-list to choose the classes",
            stacklevel=2,
        )
    mean, std, img_size = info.mean, info.std, img_size or info.input_shape[-1]
    if model_input is not None:  # a pretrained model's size and statistics
        mean, std, img_size = model_input.mean, model_input.std, model_input.size
    eval_tf = eval_transform(mean=mean, std=std, crop_size=img_size)
    train_tf = (train_transform(img_size, auto_augment=auto_augment, mean=mean, std=std, random_resized_crop=True)
                if augment else eval_tf)
    train = subsample_per_class(_ClassSubsetFolder(str(root / "train"), wnids), max_train_per_class, seed)
    test = subsample_per_class(_ClassSubsetFolder(str(root / "val"), wnids), max_test_per_class, seed)
    return class_incremental_split(
        train, test, n_experiences, class_order, seed, initial_classes, train_transform=train_tf,
        eval_transform=eval_tf,
    )
