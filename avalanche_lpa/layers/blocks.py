"""Transformer blocks of the LocalityViT skeleton: patch self-attention blocks and class-attention blocks."""
from __future__ import annotations

import inspect
from typing import Any, Type

import torch
from timm.layers import DropPath, Mlp
from timm.models.cait import ClassAttn
from torch import nn

from .attention import LPAttention, PatchAttention
from .position import GridSize

__all__ = ["LocalityBlock", "ClassAttentionBlock", "build_attention"]


def build_attention(
    attn_layer: Type[PatchAttention], dim: int, num_heads: int, grid_size: GridSize, **kwargs: Any
) -> PatchAttention:
    """``attn_layer(dim, num_heads, grid_size, **kwargs)``; a keyword the layer does not take is a ``ValueError``.

    timm's habit: a keyword meant for another attention type (``content_init_std`` for GPSA) is refused,
    not silently dropped.
    """
    accepted = [p for p in inspect.signature(attn_layer.__init__).parameters if p not in ("self", "dim", "num_heads", "grid_size")]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"{', '.join(unknown)}: not a keyword of {attn_layer.__name__} (it takes {', '.join(accepted)}); "
            "leave it unset for this attention type"
        )
    return attn_layer(dim, num_heads, grid_size, **kwargs)


class LocalityBlock(nn.Module):
    """Pre-norm transformer block over patch tokens with a patch-attention layer (LPA, GPSA or MHSA).

    Args:
        dim: token width.
        num_heads: attention heads.
        grid_size: the patch grid, ``G`` or ``(rows, cols)``.
        attn_layer: the attention class (timm's ``attn_layer=`` style), a :class:`PatchAttention`.
        mlp_ratio: hidden width of the MLP relative to ``dim``.
        drop: dropout after the attention projection and in the MLP.
        drop_path: stochastic-depth rate of this block.
        **attn_kwargs: keywords of ``attn_layer`` (``locality_strength``, ``content_init_std``, ...); one it
            does not take is a ``ValueError``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        grid_size: GridSize,
        attn_layer: Type[PatchAttention] = LPAttention,
        mlp_ratio: float = 4.0,
        drop: float = 0.0,
        drop_path: float = 0.0,
        **attn_kwargs: Any,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = build_attention(attn_layer, dim, num_heads, grid_size, proj_drop=drop, **attn_kwargs)
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
