"""Image transforms of the authors' recipe, for the experiment layer to put on its datasets."""
from __future__ import annotations

from typing import Optional, Sequence

from torchvision import transforms

__all__ = ["train_transform", "eval_transform"]


def _finish(steps: list, mean: Optional[Sequence[float]], std: Optional[Sequence[float]]) -> transforms.Compose:
    steps.append(transforms.ToTensor())
    if mean is not None and std is not None:
        steps.append(transforms.Normalize(mean, std))
    return transforms.Compose(steps)


def train_transform(
    img_size: int = 32,
    padding: int = 4,
    hflip: float = 0.5,
    randaugment_magnitude: Optional[int] = 9,
    randaugment_ops: int = 2,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
) -> transforms.Compose:
    """``RandomCrop(img_size, padding) -> RandomHorizontalFlip -> RandAugment -> ToTensor -> Normalize``.

    For PIL images (what Avalanche's CIFAR / ImageNet datasets yield).

    Args:
        img_size: crop size (the model's input size).
        padding: zero padding before the random crop (0: no crop).
        hflip: probability of a horizontal flip (0: no flip).
        randaugment_magnitude: RandAugment magnitude (``None``: no RandAugment).
        randaugment_ops: RandAugment operations per image.
        mean: per-channel normalisation mean (``None`` with ``std=None``: no normalisation).
        std: per-channel normalisation standard deviation.
    """
    steps: list = []
    if padding > 0:
        steps.append(transforms.RandomCrop(img_size, padding=padding))
    if hflip > 0:
        steps.append(transforms.RandomHorizontalFlip(hflip))
    if randaugment_magnitude is not None:
        steps.append(transforms.RandAugment(num_ops=randaugment_ops, magnitude=randaugment_magnitude))
    return _finish(steps, mean, std)


def eval_transform(
    mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None
) -> transforms.Compose:
    """``ToTensor -> Normalize`` for evaluation (and herding, which reads the eval transforms)."""
    return _finish([], mean, std)
