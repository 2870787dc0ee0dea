"""avalanche-lpa: Locality-Preserved Attention for Vision Transformers in Avalanche continual learning."""
from . import layers, models  # noqa: F401  (importing models registers the timm entry points)
from .models import LocalityViT, LPAViT

__version__ = "0.1.0"

__all__ = ["LPAViT", "LocalityViT", "__version__", "layers", "models"]
