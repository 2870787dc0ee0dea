"""CORe50 NC (50 objects, 128 px; 8 training sessions, 3 test sessions), read from the file lists of its NC protocol
as Avalanche's ``CORe50Dataset`` downloads them into Avalanche's dataset location (``~/.avalanche/data/core50``).

The NC protocol (new classes) of run ``r`` lists, in ``batches_filelists/NC_inc/run<r>/``, nine training batches
(10 objects, then 8 x 5) and one test list, as ``<session>/<object>/<image> <label>`` lines below ``core50_128x128``.
Avalanche's ``CORe50(scenario="nc")`` evaluates on the whole test list after every batch; here the test images are
split by class as the training images are, so every experience has its own test set and the accuracy matrix of every
other benchmark. With ``data.class_order: null`` the classes arrive in the protocol's order of run 0 (the objects of
batch 0, then of batch 1, ...): ``n_experiences: 9`` with ``initial_classes: 10`` gives exactly its nine batches.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .datasets import _dataset_root, table_transforms
from .folder import _ImageList
from .integrity import DatasetNotFoundError, read_image
from .registry import dataset_info
from .splits import class_incremental_split, subsample_per_class
from .transforms import ModelInput

__all__ = ["CORE50_NC_LISTS", "CORE50_IMAGES", "core50_nc_order", "split_core50"]

#: Where the NC protocol's file lists of run 0 sit below the data root, and the images they name.
CORE50_NC_LISTS = "batches_filelists/NC_inc/run0"
CORE50_IMAGES = "core50_128x128"
_BATCHES = 9


def _read_list(path: Path) -> List[Tuple[str, int]]:
    """``(image path below the images folder, label)`` of each line of a file list; a malformed line is one error."""
    samples = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise DatasetNotFoundError(f"CORe50: line {number} of {path} is not '<image path> <label>' ({line.strip()!r}); "
                                       "download the file lists again (delete batches_filelists and run again)")
        samples.append((parts[0], int(parts[1])))
    return samples


def _lists(root: Path) -> Tuple[List[List[Tuple[str, int]]], List[Tuple[str, int]]]:
    """The nine training batches and the test list of run 0."""
    folder = root / CORE50_NC_LISTS
    batches = [_read_list(folder / f"train_batch_{index:02d}_filelist.txt") for index in range(_BATCHES)]
    return batches, _read_list(folder / "test_filelist.txt")


def core50_nc_order(batches: Sequence[Sequence[Tuple[str, int]]]) -> List[int]:
    """The class ids in the order the NC batches bring them (each batch's new classes, sorted)."""
    order: List[int] = []
    for batch in batches:
        order += sorted({label for _, label in batch} - set(order))
    return order


def _class_names(samples: Sequence[Tuple[str, int]], n_classes: int) -> List[str]:
    """Each class id's object folder (``o12``), the name its images sit under."""
    names: Dict[int, str] = {}
    for path, label in samples:
        names.setdefault(label, Path(path).parent.name)
    return [names.get(label, str(label)) for label in range(n_classes)]


def split_core50(
    root: Optional[os.PathLike] = None,
    n_experiences: int = 9,
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
    """CORe50 NC from ``<root>/core50_128x128`` and the NC file lists of run 0 (downloaded there if missing and
    ``download``, by Avalanche's ``CORe50Dataset``: the images and all its lists).

    Args:
        class_order: original class ids (the file lists' labels) in arrival order; ``None``: the NC protocol's order.

    The other arguments are as in :func:`~avalanche_lpa.data.split_cifar100`. Training images get a random crop with
    16 px of padding and a flip (``auto_augment`` added if given); ImageNet's statistics, as Avalanche's CORe50.
    The benchmark's ``class_names`` are the objects' folder names (``o1`` ... ``o50``).

    The class order and the split are checked against the 50 classes where every table dataset's are
    (:func:`~avalanche_lpa.runner.benchmark.build_benchmark`).

    Raises:
        DatasetNotFoundError: the files are missing (downloading off or failed), a file list is malformed, or a
            listed image does not decode (named when it is read); one line each.
    """
    info = dataset_info("core50")
    root = _dataset_root(info, root, download)
    images = root / CORE50_IMAGES
    if not images.is_dir():
        raise DatasetNotFoundError(f"CORe50: the file lists are in {root} but not the images ({images}/); download "
                                   "core50_128x128.zip from https://vlomonaco.github.io/core50/ and extract it there")
    batches, test_list = _lists(root)
    train_list = [sample for batch in batches for sample in batch]
    labels = {label for _, label in train_list}
    if labels != set(range(info.num_classes)) or {label for _, label in test_list} - labels:
        raise DatasetNotFoundError(f"CORe50: the NC file lists in {root / CORE50_NC_LISTS} do not label "
                                   f"{info.num_classes} classes 0..{info.num_classes - 1} in training and a subset in "
                                   "testing; download the file lists again (delete batches_filelists and run again)")
    train_tf, eval_tf = table_transforms(info, augment, auto_augment, model_input, random_resized_crop=False)
    train, test = (_ImageList([(str(images / path), label) for path, label in samples], read_image)
                   for samples in (train_list, test_list))
    train = subsample_per_class(train, max_train_per_class, seed)
    test = subsample_per_class(test, max_test_per_class, seed)
    order = list(class_order) if class_order is not None else core50_nc_order(batches)
    benchmark = class_incremental_split(train, test, n_experiences, order, seed, initial_classes,
                                        train_transform=train_tf, eval_transform=eval_tf)
    benchmark.class_names = _class_names(train_list, info.num_classes)
    return benchmark
