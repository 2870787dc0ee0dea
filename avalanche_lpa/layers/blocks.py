"""Transformer blocks of the LocalityViT skeleton: patch self-attention blocks and class-attention blocks."""
from __future__ import annotations

import torch
from timm.layers import DropPath, Mlp
from timm.models.cait import ClassAttn
from torch import nn

from .attention import ATTENTION_LAYERS
from .position import GridSize

__all__ = ["LocalityBlock", "ClassAttentionBlock"]


def _attention_class(attn_type: str):
    try:
        return ATTENTION_LAYERS[attn_type]
    except KeyError:
        raise ValueError(
            f"unknown attn_type {attn_type!r}; choose one of {', '.join(sorted(ATTENTION_LAYERS))}"
        ) from None


class LocalityBlock(nn.Module):
    """Pre-norm transformer block over patch tokens with an LPA, GPSA or MHSA attention layer.

    Args:
        dim: token width.
        num_heads: attention heads.
        grid_size: the patch grid, ``G`` or ``(rows, cols)``.
        attn_type: ``"lpa"``, ``"gpsa"`` or ``"mhsa"``.
        mlp_ratio: hidden width of the MLP relative to ``dim``.
        drop_path: stochastic-depth rate of this block.
        **attn_kwargs: passed to the attention layer (``locality_strength``, ``content_init_std``, ...).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        grid_size: GridSize,
        attn_type: str = "lpa",
        mlp_ratio: float = 4.0,
        drop: float = 0.0,
        drop_path: float = 0.0,
        **attn_kwargs,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _attention_class(attn_type)(dim, num_heads, grid_size, proj_drop=drop, **attn_kwargs)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ClassAttentionBlock(nn.Module):
    """Class-attention block: the CLS token attends to itself and all patches; only the CLS token changes.

    Args:
        dim: token width.
        num_heads: attention heads.
        mlp_ratio: hidden width of the MLP relative to ``dim``.
        qkv_bias: bias on the query/key/value projections.
        drop_path: stochastic-depth rate of this block.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = ClassAttn(dim, num_heads=num_heads, qkv_bias=qkv_bias, proj_drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[B, 1 + N, C]`` with the CLS token first; returns the same shape."""
        cls = x[:, :1]
        cls = cls + self.drop_path(self.attn(self.norm1(x)))
        cls = cls + self.drop_path(self.mlp(self.norm2(cls)))
        return torch.cat([cls, x[:, 1:]], dim=1)
