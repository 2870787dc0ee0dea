"""avalanche-lpa: Locality-Preserved Attention for Vision Transformers in Avalanche continual learning.

Importing the package is light (no torch, timm or Avalanche): its names load on first use, so the command line
answers at once. Our models are registered in timm (``timm.create_model("lpa_vit_cifar")``) by
``import avalanche_lpa.models``, by using :class:`LPAViT` / :class:`LocalityViT`, or by ``import avalanche_lpa``
after timm was imported (``import timm, avalanche_lpa``: timm is loaded already, so registering costs nothing).
"""
from __future__ import annotations

import importlib
import sys
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


if "timm" in sys.modules:  # a timm user's `import timm, avalanche_lpa`: register our models as the import always did
    importlib.import_module(f"{__name__}.models")
