"""Models: the LocalityViT skeleton, LPAViT and their timm entry points (registered on import)."""
from .locality_vit import GrowingClassifier, LocalityViT, LocalityViTBackbone, LPAViT
from .presets import ATTN_TYPES, PRESETS, model_name

__all__ = ["ATTN_TYPES", "GrowingClassifier", "LPAViT", "LocalityViT", "LocalityViTBackbone", "PRESETS", "model_name"]
