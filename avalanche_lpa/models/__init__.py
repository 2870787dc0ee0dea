"""Models: the LocalityViT skeleton, LPAViT and their timm entry points (registered on import), any timm model
under a growing head, and the adapters that read attention maps from our layers and from timm's."""
from .attention_adapters import (
    AttentionAdapter,
    AttentionSite,
    attention_adapters,
    attention_sites,
    patch_attention,
    record_attention_maps,
    record_dropout_input,
    register_attention_adapter,
    restored_modes,
    supported_attention_classes,
)
from .dytox import DyTox, DyToxBackbone, dytox_keywords
from .heads import HEAD_TYPES, BackboneWithHead, ExperienceHead, GrowingClassifier, PerExperienceHeads, TaskTokenHeads, build_head
from .lpa_convert import PrefixLPAttention, convert_to_lpa, lpa_from_timm_attention
from .locality_vit import LocalityViT, LocalityViTBackbone, LPAViT, model_keywords
from .presets import ATTN_TYPES, PRESET_DATASETS, PRESETS, dytox_model_name, model_name
from .timm_classifier import TIMM_PREFIX, TimmClassifier, timm_classifier, timm_model_name

__all__ = [
    "ATTN_TYPES",
    "AttentionAdapter",
    "AttentionSite",
    "BackboneWithHead",
    "DyTox",
    "DyToxBackbone",
    "ExperienceHead",
    "GrowingClassifier",
    "HEAD_TYPES",
    "LPAViT",
    "LocalityViT",
    "LocalityViTBackbone",
    "PRESETS",
    "PRESET_DATASETS",
    "PerExperienceHeads",
    "PrefixLPAttention",
    "TIMM_PREFIX",
    "TaskTokenHeads",
    "TimmClassifier",
    "attention_adapters",
    "attention_sites",
    "build_head",
    "convert_to_lpa",
    "dytox_keywords",
    "dytox_model_name",
    "lpa_from_timm_attention",
    "model_keywords",
    "model_name",
    "patch_attention",
    "record_attention_maps",
    "record_dropout_input",
    "register_attention_adapter",
    "restored_modes",
    "supported_attention_classes",
    "timm_classifier",
    "timm_model_name",
]
