"""Your own images as a class-incremental benchmark: ``data.dataset: folder``.

The root holds ``train/<class>/<images>`` and ``test/<class>/<images>`` (torchvision's ``ImageFolder`` layout), or
CUB-200-2011 as distributed (``images/<class>/*`` with ``images.txt`` and ``train_test_split.txt``), or class
folders alone (ImageNet-R as distributed) split by ``data.folder.test_fraction``. Classes are numbered by
sorted name; the run's ``classes.json`` records their names in arrival order. The image size and the per-channel
mean and standard deviation come from ``data.folder`` or, where it leaves them ``null``, from the training images:
computed once, while every image of the folder is decoded (so an unreadable one is named before a run starts), and
cached beside them in ``avalanche_lpa_stats.json`` (recomputed when the files change).
"""
from __future__ import annotations

import collections
import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torchvision import datasets, transforms

from ..errors import ConfigError
from .integrity import DatasetNotFoundError, read_image
from .datasets import default_data_root
from .splits import check_class_split, class_incremental_split, subsample_per_class
from .transforms import ModelInput, eval_transform, train_transform

__all__ = ["STATS_FILE", "folder_shape", "folder_statistics", "scan_image_folder", "split_folder"]

#: The cache of the computed image size and statistics, written into the root.
STATS_FILE = "avalanche_lpa_stats.json"
_SPLITS = ("train", "test")
_LAYOUT = "train/<class>/<images> and test/<class>/<images>"


def _images(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(datasets.folder.IMG_EXTENSIONS))


def _two_folders(root: Path, fix: str) -> Dict[str, Dict[str, List[Path]]]:
    found = {}
    for split in _SPLITS:
        found[split] = {d.name: _images(d) for d in sorted((root / split).iterdir()) if d.is_dir()}
        if not found[split]:
            raise DatasetNotFoundError(f"{root / split} holds no class folders; {fix}")
    return found


def _cub_layout(root: Path) -> Dict[str, Dict[str, List[Path]]]:
    """CUB-200-2011 as distributed: ``images/<class>/*``, ``images.txt`` (id, path), ``train_test_split.txt``
    (id, 1 for training)."""
    try:
        paths = dict(line.split(maxsplit=1) for line in (root / "images.txt").read_text().splitlines() if line.strip())
        training = dict(line.split() for line in (root / "train_test_split.txt").read_text().splitlines() if line.strip())
    except ValueError:
        raise DatasetNotFoundError(f"{root}/images.txt or train_test_split.txt is not CUB's '<id> <value>' lines; "
                                   "restore them from the CUB_200_2011 archive") from None
    found: Dict[str, Dict[str, List[Path]]] = {split: {} for split in _SPLITS}
    for image_id, relative in sorted(paths.items(), key=lambda item: item[1]):
        if image_id not in training:
            raise DatasetNotFoundError(f"image {image_id} ({relative}) of {root}/images.txt is not in "
                                       "train_test_split.txt; restore it from the CUB_200_2011 archive")
        path = root / "images" / relative.strip()
        split = "train" if training[image_id] == "1" else "test"
        found[split].setdefault(path.parent.name, []).append(path)
    missing = [p for images in found["train"].values() for p in images if not p.is_file()][:1]
    if missing:
        raise DatasetNotFoundError(f"{missing[0]} is listed in {root}/images.txt but missing; restore it")
    return found


def _one_folder(root: Path, test_fraction: float, fix: str) -> Dict[str, Dict[str, List[Path]]]:
    """``<class>/*`` split per class: a fixed permutation (seed 0, the same test set for every run seed), its first
    ``round(n * test_fraction)`` images for testing (ImageNet-R's 80 / 20 split of the CIL literature)."""
    if not 0 < test_fraction < 1:
        raise ConfigError(f"data.folder.test_fraction={test_fraction} must be between 0 and 1 (e.g. 0.2)")
    found: Dict[str, Dict[str, List[Path]]] = {split: {} for split in _SPLITS}
    for folder in sorted(d for d in root.iterdir() if d.is_dir()):
        images = _images(folder)
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0)).tolist()
        cut = max(1, round(len(images) * test_fraction)) if images else 0
        found["test"][folder.name] = sorted(images[i] for i in order[:cut])
        found["train"][folder.name] = sorted(images[i] for i in order[cut:])
    if not found["train"]:
        raise DatasetNotFoundError(f"{root} holds no class folders; {fix}")
    return found


def scan_image_folder(root: os.PathLike, test_fraction: Optional[float] = None
                      ) -> Tuple[List[str], Dict[str, Dict[str, List[Path]]]]:
    """The class names (sorted) and ``{split: {class: [image paths]}}`` of an image-folder root, in one of three
    layouts: ``train/<class>/*`` and ``test/<class>/*``; CUB-200-2011's (``images/``, ``images.txt``,
    ``train_test_split.txt``); or ``<class>/*`` split by ``test_fraction`` (ImageNet-R).

    Raises:
        DatasetNotFoundError: the root is missing or in none of the layouts, train and test hold different
            classes, or a class has no images (one line naming the folder and the fix).
    """
    root = Path(root).expanduser()
    fix = f"pass --data-root (data.root) with a folder holding {_LAYOUT}"
    if not root.is_dir():
        raise DatasetNotFoundError(f"image folder {root} does not exist; {fix}")
    split_already = all((root / split).is_dir() for split in _SPLITS)
    cub = (root / "images.txt").is_file() and (root / "train_test_split.txt").is_file()
    if test_fraction is not None and (split_already or cub):
        raise ConfigError(f"data.folder.test_fraction={test_fraction} splits a root of class folders alone, but {root} "
                          f"already has {'train/ and test/' if split_already else 'CUB train_test_split.txt'}; "
                          "set data.folder.test_fraction to null")
    if split_already:
        found = _two_folders(root, fix)
    elif cub:
        found = _cub_layout(root)
    elif test_fraction is not None:
        found = _one_folder(root, test_fraction, fix)
    else:
        raise DatasetNotFoundError(
            f"image folder {root} has neither train/ and test/ class folders nor CUB's images.txt and "
            f"train_test_split.txt; {fix}, or set data.folder.test_fraction (e.g. 0.2) to split its class folders")
    train, test = set(found["train"]), set(found["test"])
    if train != test:
        only = [f"only in {split}: {', '.join(sorted(names)[:5])}" for split, names in
                (("train", train - test), ("test", test - train)) if names]
        raise DatasetNotFoundError(f"the train and test classes of {root} differ ({'; '.join(only)}); give both "
                                   "splits the same class folders")
    for split in _SPLITS:
        for name, images in found[split].items():
            if not images:
                where = root / split / name if (root / split).is_dir() else root / name
                raise DatasetNotFoundError(f"class {name!r} has no {split} images in {where}; add images "
                                           f"({', '.join(datasets.folder.IMG_EXTENSIONS[:4])}, ...) or remove the "
                                           "class from both splits")
    return sorted(train), found


class _ImageList(torch.utils.data.Dataset):
    """Images listed by path with their class ids (``targets``), read by ``loader``; Avalanche adds the transforms."""

    def __init__(self, samples: List[Tuple[str, int]], loader: Any) -> None:
        self.samples = samples
        self.targets = [target for _, target in samples]
        self.loader = loader

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Tuple[Any, int]:
        path, target = self.samples[index]
        return self.loader(path), target


def _signature(found: Dict[str, Dict[str, List[Path]]], in_chans: int) -> str:
    digest = hashlib.sha256(f"channels={in_chans}".encode())
    for split in _SPLITS:
        for name, images in sorted(found[split].items()):
            for path in images:
                digest.update(f"{split}/{name}/{path.name}:{path.stat().st_size}\n".encode())
    return digest.hexdigest()


def _mode(in_chans: int) -> str:
    if in_chans not in (1, 3):
        raise ValueError(f"data.folder.in_chans must be 1 (grey) or 3 (RGB), got {in_chans}")
    return "L" if in_chans == 1 else "RGB"


def _load(path: str, mode: str) -> Any:
    return read_image(path).convert(mode)


def folder_statistics(root: os.PathLike, in_chans: int = 3, test_fraction: Optional[float] = None,
                      found: Optional[Dict[str, Dict[str, List[Path]]]] = None) -> Dict[str, Any]:
    """Image size (the shorter side of the most common training size), per-channel mean and standard deviation of
    the training images, computed once (every image of both splits decoded) and cached in ``<root>/STATS_FILE``.

    Args:
        found: the folder's images as :func:`scan_image_folder` listed them, when the caller has them (a large
            folder is then listed once, not twice).

    Raises:
        DatasetNotFoundError: as :func:`scan_image_folder`, or an image does not decode (named).
    """
    root = Path(root).expanduser()
    if found is None:
        _, found = scan_image_folder(root, test_fraction)
    signature = _signature(found, in_chans)
    cache = root / STATS_FILE
    try:
        cached = json.loads(cache.read_text())
        if cached.get("signature") == signature:
            return cached
    except (OSError, ValueError):
        pass
    mode, to_tensor = _mode(in_chans), transforms.ToTensor()
    sizes: collections.Counter = collections.Counter()
    total = torch.zeros(in_chans, dtype=torch.float64)
    squares = torch.zeros(in_chans, dtype=torch.float64)
    pixels = 0
    for split in _SPLITS:
        for images in found[split].values():
            for path in images:
                image = _load(str(path), mode)
                if split == "train":
                    sizes[image.size] += 1
                    x = to_tensor(image).double().flatten(1)
                    total += x.sum(1)
                    squares += (x * x).sum(1)
                    pixels += x.shape[1]
    mean = total / pixels
    std = (squares / pixels - mean * mean).clamp_min(1e-12).sqrt()
    (width, height), _ = sizes.most_common(1)[0]
    stats = {"img_size": min(width, height), "mean": [round(float(v), 4) for v in mean],
             "std": [round(float(v), 4) for v in std], "in_chans": in_chans,
             "images": {split: sum(len(v) for v in found[split].values()) for split in _SPLITS},
             "signature": signature}
    try:
        cache.write_text(json.dumps(stats, indent=1))
    except OSError:  # a read-only dataset folder: computed again next time
        pass
    return stats


def _root(root: Optional[os.PathLike]) -> Path:
    return Path(root).expanduser() if root is not None else default_data_root("folder")


def folder_shape(root: Optional[os.PathLike] = None, img_size: Optional[int] = None, in_chans: int = 3,
                 test_fraction: Optional[float] = None, **options: Any) -> Tuple[int, int, int]:
    """``(channels, height, width)`` the loader yields: ``img_size`` or the computed one (``options``: the loader's
    other keywords, unused)."""
    if img_size is None:
        img_size = folder_statistics(_root(root), in_chans, test_fraction)["img_size"]
    return in_chans, img_size, img_size


def _transforms(img_size: int, mean: Sequence[float], std: Sequence[float], augment: bool,
                auto_augment: Optional[str]) -> Tuple[Any, Any]:
    """Training and evaluation transforms as the table's datasets: small images (<= 32 px) resized to the size,
    then a padded random crop and a flip; larger ones a random-resized crop and a flip (evaluation: resize and
    centre crop, as ImageNet's)."""
    small = img_size <= 32
    resize = transforms.Resize((img_size, img_size), interpolation=transforms.InterpolationMode.BICUBIC)
    evaluation = eval_transform(mean=mean, std=std, crop_size=None if small else img_size)
    if small:
        evaluation = transforms.Compose([resize, *evaluation.transforms])
    if not augment:
        return evaluation, evaluation
    training = train_transform(img_size, padding=max(1, img_size // 8) if small else 0, auto_augment=auto_augment,
                               mean=mean, std=std, random_resized_crop=not small)
    if small:
        training = transforms.Compose([resize, *training.transforms])
    return training, evaluation


def split_folder(
    root: Optional[os.PathLike] = None,
    n_experiences: int = 10,
    class_order: Optional[Sequence[int]] = None,
    seed: int = 1993,
    augment: bool = True,
    auto_augment: Optional[str] = None,
    max_train_per_class: Optional[int] = None,
    max_test_per_class: Optional[int] = None,
    initial_classes: Optional[int] = None,
    img_size: Optional[int] = None,
    in_chans: int = 3,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    test_fraction: Optional[float] = None,
    model_input: Optional[ModelInput] = None,
):
    """A class-incremental benchmark over an image folder (``train/<class>/*``, ``test/<class>/*``).

    Args:
        root: the folder.
        img_size: side the images are brought to (``None``: computed, :func:`folder_statistics`).
        in_chans: 1 (grey) or 3 (RGB).
        mean: per-channel normalisation mean (``None``: the training images').
        std: per-channel standard deviation (``None``: the training images').
        test_fraction: for a root of class folders alone: the share of each class kept for testing.
        model_input: a pretrained model's size and statistics, instead of ``img_size``, ``mean`` and ``std``.

    The other arguments are as in :func:`~avalanche_lpa.data.split_cifar100`. The benchmark's ``class_names``
    lists the class folders by class id (sorted names).

    Raises:
        DatasetNotFoundError: see :func:`scan_image_folder` and :func:`folder_statistics` (one line).
    """
    root = _root(root)
    classes, found = scan_image_folder(root, test_fraction)
    if model_input is not None:
        img_size, mean, std = model_input.size, model_input.mean, model_input.std
    if mean is None or std is None or img_size is None:
        stats = folder_statistics(root, in_chans, test_fraction, found)
        img_size = img_size or stats["img_size"]
        mean, std = mean or stats["mean"], std or stats["std"]
    if not len(mean) == len(std) == in_chans:
        raise ValueError(f"data.folder.mean and std need one value per channel ({in_chans})")
    if class_order is not None and sorted(class_order) != list(range(len(classes))):
        raise ConfigError(f"data.class_order must list each of the {len(classes)} class ids of {root} "
                                   f"(0..{len(classes) - 1}, sorted folder names) once; fix it or set it to null")
    check_class_split(str(root), len(classes), n_experiences, initial_classes)
    loader = functools.partial(_load, mode=_mode(in_chans))  # picklable: checkpoints hold the datasets
    lists = {split: _ImageList([(str(path), target) for target, name in enumerate(classes)
                                for path in found[split][name]], loader) for split in _SPLITS}
    train = subsample_per_class(lists["train"], max_train_per_class, seed)
    test = subsample_per_class(lists["test"], max_test_per_class, seed)
    training, evaluation = _transforms(img_size, mean, std, augment, auto_augment)
    benchmark = class_incremental_split(train, test, n_experiences, class_order, seed, initial_classes,
                                        train_transform=training, eval_transform=evaluation)
    benchmark.class_names = classes
    return benchmark
