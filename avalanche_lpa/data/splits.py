"""Class-incremental splits on Avalanche's generators, and a synthetic benchmark for tests and smoke runs.

Class ids are remapped from zero in the order the classes arrive (``class_order``), so a growing head adds units
0, 1, 2, ... ``synthetic_benchmark`` builds a small in-memory benchmark whose classes differ by a class-specific
spatial pattern: learnable by a tiny ViT in a few iterations, with no files involved.
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence

import torch
from avalanche.benchmarks import nc_benchmark
from torch.utils.data import Dataset, Subset, TensorDataset

from ..errors import ConfigError

from .registry import dataset_info

__all__ = [
    "TargetTensorDataset", "synthetic_benchmark", "split_synthetic", "class_incremental_split", "subsample_per_class",
    "classic_split",
]


class TargetTensorDataset(TensorDataset):
    """``TensorDataset`` of ``(image, label)`` with the ``targets`` list Avalanche's generators expect."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        super().__init__(images, labels)
        self.targets = labels.tolist()


def _synthetic_split(
    prototypes: torch.Tensor, per_class: int, noise: float, generator: torch.Generator
) -> TargetTensorDataset:
    num_classes = prototypes.shape[0]
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    images = prototypes[labels] + noise * torch.randn(len(labels), *prototypes.shape[1:], generator=generator)
    return TargetTensorDataset(images, labels)


def synthetic_benchmark(
    n_experiences: int = 3,
    classes_per_experience: int = 2,
    img_size: int = 8,
    in_chans: int = 1,
    train_per_class: int = 32,
    test_per_class: int = 16,
    noise: float = 0.5,
    seed: int = 0,
    fixed_class_order: Optional[Sequence[int]] = None,
    initial_classes: Optional[int] = None,
):
    """A class-incremental benchmark (Avalanche ``nc_benchmark``) over random class prototypes.

    Args:
        n_experiences: number of experiences.
        classes_per_experience: classes added by each experience.
        img_size: image height and width.
        in_chans: image channels.
        train_per_class: training images per class.
        test_per_class: test images per class.
        noise: standard deviation of the per-pixel noise around each class prototype.
        seed: seed of the data and of the class order.
        fixed_class_order: explicit class order (defaults to 0, 1, 2, ...).
        initial_classes: classes of the first experience, of the ``n_experiences * classes_per_experience``
            (``None``: ``classes_per_experience`` each).
    """
    num_classes = n_experiences * classes_per_experience
    generator = torch.Generator().manual_seed(seed)
    prototypes = torch.randn(num_classes, in_chans, img_size, img_size, generator=generator)
    train = _synthetic_split(prototypes, train_per_class, noise, generator)
    test = _synthetic_split(prototypes, test_per_class, noise, generator)
    order = list(fixed_class_order) if fixed_class_order is not None else list(range(num_classes))
    return class_incremental_split(train, test, n_experiences, order, seed, initial_classes)


def split_synthetic(
    n_experiences: int = 3,
    class_order: Optional[Sequence[int]] = None,
    seed: int = 0,
    **options: Any,
):
    """The table's ``synthetic`` dataset: :func:`synthetic_benchmark` with its classes per experience.

    Args:
        n_experiences: number of experiences.
        class_order: class ids in arrival order (``None``: 0, 1, 2, ...).
        seed: seed of the data.
        **options: ``img_size``, ``in_chans``, ``train_per_class``, ``test_per_class``, ``noise`` (``data.synthetic``),
            ``initial_classes``.
    """
    per_experience = dataset_info("synthetic").classes_per_experience
    return synthetic_benchmark(n_experiences=n_experiences, classes_per_experience=per_experience, seed=seed,
                               fixed_class_order=class_order, **options)


def subsample_per_class(dataset: Any, per_class: Optional[int], seed: int) -> Any:
    """At most ``per_class`` images of each class, drawn once with ``seed`` (``None``: the whole dataset).

    Raises:
        ValueError: ``per_class`` is not ``None`` or an integer of at least 1 (the ``max_*_per_class`` arguments).
    """
    if per_class is None:
        return dataset
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"max_train_per_class / max_test_per_class must be None (all images) or an integer of at "
                         f"least 1, got {per_class!r}")
    targets = torch.as_tensor(list(dataset.targets))
    generator = torch.Generator().manual_seed(seed)
    keep: List[int] = []
    for label in targets.unique().tolist():
        members = (targets == label).nonzero().flatten()
        keep += members[torch.randperm(len(members), generator=generator)[:per_class]].tolist()
    keep.sort()
    subset = Subset(dataset, keep)
    subset.targets = targets[keep].tolist()
    return subset


def class_incremental_split(
    train: Dataset,
    test: Dataset,
    n_experiences: int,
    class_order: Optional[Sequence[int]],
    seed: int,
    initial_classes: Optional[int] = None,
    **transforms: Any,
):
    """Avalanche's ``nc_benchmark`` without task labels, class ids remapped from zero in arrival order.

    Args:
        train: training dataset with ``targets``.
        test: test dataset with ``targets``.
        n_experiences: number of experiences (must divide the number of classes, or the classes after the
            first experience when ``initial_classes`` is given).
        class_order: original class ids in arrival order (``None``: shuffled with ``seed``).
        seed: seed of the shuffle.
        initial_classes: classes of the first experience (a B50 split: half of them); ``None``: equal shares.
        **transforms: ``train_transform`` / ``eval_transform``.
    """
    return nc_benchmark(
        train,
        test,
        n_experiences=n_experiences,
        task_labels=False,
        seed=seed,
        fixed_class_order=list(class_order) if class_order is not None else None,
        per_exp_classes={0: initial_classes} if initial_classes is not None else None,
        class_ids_from_zero_from_first_exp=True,
        **transforms,
    )


def classic_split(
    avalanche_split: Callable[..., Any],
    torchvision_dataset: Callable[..., Dataset],
    root: str,
    *,
    n_experiences: int,
    class_order: Optional[Sequence[int]],
    seed: int,
    max_train_per_class: Optional[int],
    max_test_per_class: Optional[int],
    train_tf: Callable,
    eval_tf: Callable,
    initial_classes: Optional[int] = None,
):
    """Avalanche's classic split (``SplitCIFAR100``, ``SplitFMNIST``) or, for subsampled quick runs, the same
    ``nc_benchmark`` it builds over per-class subsets of the torchvision datasets.

    Args:
        avalanche_split: the classic benchmark generator (e.g. ``SplitCIFAR100``).
        torchvision_dataset: the dataset class behind it (e.g. ``torchvision.datasets.CIFAR100``).
        root: where the dataset's files are.
        n_experiences: number of experiences.
        class_order: original class ids in arrival order (``None``: shuffled with ``seed``).
        seed: seed of the shuffle and of subsampling.
        max_train_per_class: keep at most this many training images per class (``None``: all).
        max_test_per_class: the same for test images.
        train_tf: training transform.
        eval_tf: evaluation transform.
        initial_classes: classes of the first experience (``None``: equal shares); Avalanche's classic
            benchmarks take only "half" (``first_exp_with_half_classes``), so any other split is the same
            ``nc_benchmark`` over the whole datasets.
    """
    if max_train_per_class is None and max_test_per_class is None and initial_classes is None:
        return avalanche_split(
            n_experiences,
            seed=seed,
            fixed_class_order=list(class_order) if class_order is not None else None,
            class_ids_from_zero_from_first_exp=True,
            train_transform=train_tf,
            eval_transform=eval_tf,
            dataset_root=str(root),
        )
    train = subsample_per_class(torchvision_dataset(str(root), train=True), max_train_per_class, seed)
    test = subsample_per_class(torchvision_dataset(str(root), train=False), max_test_per_class, seed)
    return class_incremental_split(
        train, test, n_experiences, class_order, seed, initial_classes, train_transform=train_tf,
        eval_transform=eval_tf,
    )


def check_class_split(name: str, num_classes: int, n_experiences: int, initial_classes: Optional[int] = None) -> None:
    """Raises :class:`~avalanche_lpa.errors.ConfigError` (one line) unless ``n_experiences`` experiences split the
    ``num_classes`` classes of dataset ``name``: equal shares, or ``initial_classes`` first and equal shares after."""
    steps, first = n_experiences, initial_classes
    if first is None:
        if num_classes % steps:
            raise ConfigError(f"data.n_experiences={steps} does not divide the {num_classes} classes of {name}")
        return
    if steps == 1 and first != num_classes:
        raise ConfigError(f"data.initial_classes={first} with one experience must be all {num_classes} classes "
                          f"of {name}; set it to null")
    if steps > 1 and not 0 < first < num_classes:
        raise ConfigError(f"data.initial_classes={first} must be between 1 and {num_classes - 1} (the {name} "
                          "classes less at least one for the later experiences)")
    if steps > 1 and (num_classes - first) % (steps - 1):
        raise ConfigError(f"data.n_experiences={steps} after a first experience of data.initial_classes={first}: "
                          f"{steps - 1} experiences do not divide the other {num_classes - first} classes of {name}")
