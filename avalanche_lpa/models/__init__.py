"""Models: the LocalityViT skeleton, LPAViT and their timm entry points (registered on import)."""
from .dytox import DyTox, DyToxBackbone, dytox_keywords
from .heads import HEAD_TYPES, ExperienceHead, GrowingClassifier, PerExperienceHeads, TaskTokenHeads
from .locality_vit import LocalityViT, LocalityViTBackbone, LPAViT, model_keywords
from .presets import ATTN_TYPES, PRESETS, dytox_model_name, model_name

__all__ = [
    "ATTN_TYPES",
    "DyTox",
    "DyToxBackbone",
    "ExperienceHead",
    "GrowingClassifier",
    "HEAD_TYPES",
    "LPAViT",
    "LocalityViT",
    "LocalityViTBackbone",
    "PRESETS",
    "PerExperienceHeads",
    "TaskTokenHeads",
    "dytox_keywords",
    "dytox_model_name",
    "model_keywords",
    "model_name",
]
