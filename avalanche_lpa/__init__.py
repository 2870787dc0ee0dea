"""avalanche-lpa: Locality-Preserved Attention for Vision Transformers in Avalanche continual learning.

Importing the package is light (no torch, timm or Avalanche): its names load on first use, so the command line
answers at once. ``import avalanche_lpa.models`` (or using :class:`LPAViT`, :class:`LocalityViT`) registers the
models in timm (``timm.create_model("lpa_vit_cifar")``).
"""
from __future__ import annotations

import importlib
from typing import Any

from .version import __version__

__all__ = ["LPAViT", "LocalityViT", "__version__", "layers", "load_run", "models"]

# name -> the module that defines it (imported on first use)
_LAZY = {
    "LPAViT": "avalanche_lpa.models",
    "LocalityViT": "avalanche_lpa.models",
    "load_run": "avalanche_lpa.runner",
}
_SUBMODULES = ("layers", "models")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'avalanche_lpa' has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))
