"""Fixes of other libraries' behaviour, each with the versions it applies to and what upstream does.

The package's one home for workarounds of timm and Pillow. It imports no other room of the package, so any
room may use it. (The fixes of Avalanche's strategies, checkpoints and loaders still sit beside the code they
serve: ``training/fixes.py``, ``experiment/checkpoint.py``, ``plugins/lr_schedule.py``, ``distributed.py``; see
the README's Architecture section.)

timm's auto-augment ops on Pillow
---------------------------------
* **Posterize at 0 bits** (Pillow >= 13 raises, every timm version asks for it). timm's ``PosterizeIncreasing``
  keeps ``4 - int(level / 10 * 4)`` bits: at level 10, which ``rand-m9-mstd0.5-inc1``'s magnitude noise
  reaches in about 1 of 700 calls, it asks Pillow to keep 0 bits (``Posterize`` of the original AutoAugment does
  so at level 0). Pillow up to 12 masked every channel with ``~(2 ** 8 - 1)`` and so returned a black image, which
  is what the authors' runs got; Pillow 13 raises ``ValueError: bits must be between or equal to 1 and 8``.
  :class:`PillowSafeOp` returns the black image on every Pillow.
* **Fill colour of a greyscale image** (every Pillow, every timm). The geometric ops (rotate, shear, translate)
  fill with ``hparams["img_mean"]``, an RGB triple when the transform was built with 3-channel statistics;
  Pillow refuses a triple for a one-band image (``TypeError: color must be int or single-element tuple``).
  :class:`PillowSafeOp` converts the fill colour to the image's bands (luma, as ``Image.convert("L")``).
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence, Tuple, Union

from PIL import Image

__all__ = ["PillowSafeOp", "pillow_safe_augment", "augment_ops"]

Fill = Union[int, Tuple[int, ...]]


def _fill_for(image: Image.Image, fill: Fill) -> Fill:
    """``fill`` with as many values as ``image`` has bands (ITU-R 601-2 luma for one band, as Pillow converts)."""
    bands = len(image.getbands())
    if isinstance(fill, int) or len(fill) == bands:
        return fill
    if bands == 1 and len(fill) >= 3:
        red, green, blue = fill[:3]
        return round(red * 299 / 1000 + green * 587 / 1000 + blue * 114 / 1000)
    if bands == 1:
        return fill[0]
    return tuple(fill[i] if i < len(fill) else fill[-1] for i in range(bands))


def _keeps_no_bits(function: Callable, args: Sequence[Any]) -> bool:
    # timm's posterize op is the one function named ``posterize``; its first argument is the bits to keep.
    return getattr(function, "__name__", "") == "posterize" and bool(args) and int(args[0]) < 1


class PillowSafeOp:
    """One timm augment function made safe on every Pillow (see the module docstring for what it fixes).

    Picklable (a plain class holding timm's module-level function), so transforms that hold it survive
    Avalanche's dill checkpoints and DataLoader workers.

    Args:
        function: the timm op, e.g. ``timm.data.auto_augment.posterize`` (an ``AugmentOp``'s ``aug_fn``).
    """

    def __init__(self, function: Callable) -> None:
        self.function = function

    def __call__(self, image: Image.Image, *args: Any, **kwargs: Any) -> Image.Image:
        if _keeps_no_bits(self.function, args):
            # Pillow <= 12: keeping 0 bits masks every value to 0, a black image of the same mode and size.
            return image.point([0] * 256 * len(image.getbands()))
        if "fillcolor" in kwargs and kwargs["fillcolor"] is not None:
            kwargs = {**kwargs, "fillcolor": _fill_for(image, kwargs["fillcolor"])}
        return self.function(image, *args, **kwargs)

    def __repr__(self) -> str:
        return f"PillowSafeOp({getattr(self.function, '__name__', self.function)!r})"


def augment_ops(transform: Any) -> Iterator[Any]:
    """Every timm ``AugmentOp`` inside ``transform`` (a torchvision ``Compose``, timm's RandAugment, AutoAugment
    or AugMix, nested in any way)."""
    if hasattr(transform, "aug_fn"):
        yield transform
        return
    if isinstance(transform, (list, tuple)):  # AutoAugment's policy: a list of sub-policies, each a list of ops
        for child in transform:
            yield from augment_ops(child)
        return
    for attribute in ("transforms", "ops", "policy"):
        children = getattr(transform, attribute, None)
        if isinstance(children, (list, tuple)):
            for child in children:
                yield from augment_ops(child)


def pillow_safe_augment(transform: Any) -> Any:
    """Wraps every timm augment op inside ``transform`` in :class:`PillowSafeOp` (in place) and returns it.

    Idempotent; a transform without timm augment ops is returned unchanged.
    """
    for op in augment_ops(transform):
        if not isinstance(op.aug_fn, PillowSafeOp):
            op.aug_fn = PillowSafeOp(op.aug_fn)
    return transform
