"""Image transforms of the authors' recipe (``modules/datasets.py``); the statistics they normalise with are the
dataset table's (:mod:`avalanche_lpa.data.registry`).

The authors build their training transform with timm's ``create_transform`` (RandAugment
``rand-m9-mstd0.5-inc1``, colour jitter 0.4 which timm skips when an auto-augment policy is given, bicubic
interpolation, no random erasing) and, for 32 px inputs, replace its random-resized crop by
``RandomCrop(32, padding=4)`` and its normalisation by CIFAR-100's. :func:`train_transform` calls the same
factory the same way; ``auto_augment=None`` gives plain crop + flip (used for Fashion-MNIST). Its ops are
wrapped by :func:`avalanche_lpa.compat.pillow_safe_augment`, so they behave on every Pillow as on the Pillow of
the authors' runs (posterize to 0 bits gives a black image; Pillow 13 would raise).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from timm.data import create_transform
from torchvision import transforms

from ..compat import pillow_safe_augment
from .registry import DATASETS

__all__ = [
    "AUTHORS_AUTO_AUGMENT",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ModelInput",
    "resized",
    "train_transform",
    "eval_transform",
]

# The statistics live in the dataset table (registry.py); these names are kept for code that imports them.
#: CIFAR-100 normalisation as the authors' code uses it.
CIFAR100_MEAN, CIFAR100_STD = DATASETS["cifar100"].mean, DATASETS["cifar100"].std
#: Fashion-MNIST normalisation (mean and standard deviation of its training images).
FASHION_MNIST_MEAN, FASHION_MNIST_STD = DATASETS["fashion_mnist"].mean, DATASETS["fashion_mnist"].std
#: ImageNet normalisation (timm's defaults, which the authors use for ImageNet-100).
IMAGENET_MEAN, IMAGENET_STD = DATASETS["imagenet100"].mean, DATASETS["imagenet100"].std

#: The authors' RandAugment policy (timm's notation): 2 ops of magnitude 9, magnitude std 0.5, increasing.
AUTHORS_AUTO_AUGMENT = "rand-m9-mstd0.5-inc1"

# Up to this size the authors keep the image size and crop with padding (CIFAR); above it, timm's
# random-resized crop (ImageNet).
_SMALL_IMAGES = 32


def _finish(steps: list, mean: Optional[Sequence[float]], std: Optional[Sequence[float]]) -> transforms.Compose:
    steps.append(transforms.ToTensor())
    if mean is not None and std is not None:
        steps.append(transforms.Normalize(mean, std))
    return transforms.Compose(steps)


def train_transform(
    img_size: int = 32,
    padding: int = 4,
    hflip: float = 0.5,
    auto_augment: Optional[str] = AUTHORS_AUTO_AUGMENT,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    random_resized_crop: Optional[bool] = None,
) -> transforms.Compose:
    """The training transform for PIL images (what Avalanche's CIFAR / ImageNet datasets yield).

    With ``auto_augment`` (a timm policy string), exactly the authors' construction: timm's
    ``create_transform(img_size, is_training=True, color_jitter=0.4, auto_augment=..., interpolation="bicubic",
    re_prob=0)`` (its RandAugment fills with ImageNet's mean colour, as theirs), then for ``img_size <= 32`` the
    first step replaced by ``RandomCrop(img_size, padding)``, and the normalisation by ``mean`` / ``std``.
    Without it, ``RandomCrop(img_size, padding)`` (or a bicubic ``RandomResizedCrop``) ``->
    RandomHorizontalFlip(hflip) -> ToTensor -> Normalize``.

    Args:
        img_size: crop size (the model's input size).
        padding: zero padding of the random crop of small images (0: no crop).
        hflip: probability of a horizontal flip (used without ``auto_augment``; timm's factory flips with 0.5).
        auto_augment: timm auto-augment policy, e.g. ``"rand-m9-mstd0.5-inc1"``; ``None`` for none.
        mean: per-channel normalisation mean (``None``: no normalisation, as :func:`eval_transform` without one).
        std: per-channel normalisation standard deviation.
        random_resized_crop: keep timm's random-resized crop (``None``: for images above 32 px, as the authors).
    """
    if random_resized_crop is None:
        random_resized_crop = img_size > _SMALL_IMAGES
    if auto_augment is None:
        steps: list = []
        if random_resized_crop:
            steps.append(transforms.RandomResizedCrop(img_size, interpolation=transforms.InterpolationMode.BICUBIC))
        elif padding > 0:
            steps.append(transforms.RandomCrop(img_size, padding=padding))
        if hflip > 0:
            steps.append(transforms.RandomHorizontalFlip(hflip))
        return _finish(steps, mean, std)
    composed = create_transform(
        input_size=img_size, is_training=True, color_jitter=0.4, auto_augment=auto_augment,
        interpolation="bicubic", re_prob=0.0,
    )
    steps = list(composed.transforms)
    if not random_resized_crop:
        steps[0] = transforms.RandomCrop(img_size, padding=padding) if padding > 0 else transforms.CenterCrop(img_size)
    if isinstance(steps[-1], transforms.Normalize):  # timm's (ImageNet's): ours, or none, as eval_transform
        steps[-1:] = [transforms.Normalize(mean, std)] if mean is not None and std is not None else []
    # timm's ops ask Pillow for things newer Pillow refuses (posterize to 0 bits) or no Pillow takes (an RGB
    # fill for a greyscale image): avalanche_lpa.compat keeps the authors' results on every Pillow.
    return pillow_safe_augment(transforms.Compose(steps))


def eval_transform(
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    crop_size: Optional[int] = None,
) -> transforms.Compose:
    """``ToTensor -> Normalize`` for evaluation (and herding, which reads the eval transforms).

    With ``crop_size`` (ImageNet), the authors' resize to ``crop_size * 256 / 224`` (bicubic) and centre crop
    come first. Without ``mean`` and ``std`` there is no normalisation (nor in :func:`train_transform`).
    """
    steps: list = []
    if crop_size is not None:
        img_size = crop_size
        steps += [
            transforms.Resize(int(img_size * 256 / 224), interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(img_size),
        ]
    return _finish(steps, mean, std)


@dataclass(frozen=True)
class ModelInput:
    """What a pretrained model wants its images as: side in pixels and per-channel normalisation (timm's
    pretrained config: 224, and the mean / std its weights were trained with)."""

    size: int
    mean: Tuple[float, ...]
    std: Tuple[float, ...]


def resized(transform: transforms.Compose, size: int, mean: Sequence[float], std: Sequence[float],
            native: int) -> transforms.Compose:
    """``transform`` for images brought from ``native`` to ``size`` pixels (bicubic, first) and normalised with
    ``mean`` / ``std``; a padded random crop's padding is scaled with the image (4 px at 32 is 28 px at 224)."""
    steps = [transforms.Resize((size, size), interpolation=transforms.InterpolationMode.BICUBIC)]
    for step in transform.transforms:
        if isinstance(step, transforms.RandomCrop):
            padding = step.padding if isinstance(step.padding, int) else step.padding[0]
            step = transforms.RandomCrop(size, padding=round(padding * size / native))
        elif isinstance(step, transforms.CenterCrop):
            step = transforms.CenterCrop(size)
        elif isinstance(step, transforms.Normalize):
            step = transforms.Normalize(tuple(mean), tuple(std))
        steps.append(step)
    return transforms.Compose(steps)
