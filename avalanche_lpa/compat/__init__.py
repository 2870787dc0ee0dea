"""Fixes of other libraries' behaviour, one module per library, each with the versions it applies to and what
upstream does. The room imports no other room of the package, so any room may use it.

* :mod:`.pillow_augment`: timm's auto-augment ops on every Pillow (posterize to 0 bits, greyscale fill colours).
* :mod:`.avalanche_wandb`: Avalanche's ``WandBLogger`` on current wandb (imported on use: it loads wandb).

The fixes of Avalanche's strategies, checkpoints and loaders still sit beside the code they serve
(``training/fixes.py``, ``experiment/checkpoint.py``, ``plugins/lr_schedule.py``, ``distributed.py``); see the
compatibility page of the docs (docs/compatibility.md).
"""
from .pillow_augment import PillowSafeOp, augment_ops, pillow_safe_augment

__all__ = ["PillowSafeOp", "augment_ops", "pillow_safe_augment"]
