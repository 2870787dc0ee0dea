"""Benchmarks for experiments and tests.

``synthetic_benchmark`` builds a small in-memory class-incremental benchmark whose classes differ by a
class-specific spatial pattern: learnable by a tiny ViT in a few iterations, with no files involved.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from avalanche.benchmarks import nc_benchmark
from torch.utils.data import TensorDataset

__all__ = ["TargetTensorDataset", "synthetic_benchmark"]


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
    """
    num_classes = n_experiences * classes_per_experience
    generator = torch.Generator().manual_seed(seed)
    prototypes = torch.randn(num_classes, in_chans, img_size, img_size, generator=generator)
    train = _synthetic_split(prototypes, train_per_class, noise, generator)
    test = _synthetic_split(prototypes, test_per_class, noise, generator)
    return nc_benchmark(
        train,
        test,
        n_experiences=n_experiences,
        task_labels=False,
        seed=seed,
        fixed_class_order=list(fixed_class_order) if fixed_class_order is not None else list(range(num_classes)),
    )
