"""Attention layers and blocks; no dependency on Avalanche."""
from .attention import (
    ATTENTION_LAYERS,
    DENORMAL_GUARD,
    GPSAttention,
    LPAttention,
    MHSAttention,
    PatchAttention,
    attention_layer,
    patch_attention_layers,
    collect_patch_attention_maps,
)
from .blocks import ClassAttention, ClassAttentionBlock, LocalityBlock, build_attention, joint_token_mask
from .position import (
    GridSize,
    check_grid,
    grid_offsets,
    local_position_weights,
    relative_distances,
    relative_position_features,
)

__all__ = [
    "ATTENTION_LAYERS",
    "DENORMAL_GUARD",
    "GridSize",
    "ClassAttention",
    "ClassAttentionBlock",
    "GPSAttention",
    "LPAttention",
    "LocalityBlock",
    "MHSAttention",
    "PatchAttention",
    "attention_layer",
    "patch_attention_layers",
    "build_attention",
    "check_grid",
    "collect_patch_attention_maps",
    "grid_offsets",
    "joint_token_mask",
    "local_position_weights",
    "relative_distances",
    "relative_position_features",
]
