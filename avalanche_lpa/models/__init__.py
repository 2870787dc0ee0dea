"""Models: the LocalityViT skeleton, LPAViT and their timm entry points (registered on import)."""
from .heads import HEAD_TYPES, ExperienceHead, GrowingClassifier, PerExperienceHeads
from .locality_vit import LocalityViT, LocalityViTBackbone, LPAViT, model_keywords
from .presets import ATTN_TYPES, PRESETS, model_name

__all__ = [
    "ATTN_TYPES",
    "ExperienceHead",
    "GrowingClassifier",
    "HEAD_TYPES",
    "LPAViT",
    "LocalityViT",
    "LocalityViTBackbone",
    "PRESETS",
    "PerExperienceHeads",
    "model_keywords",
    "model_name",
]
