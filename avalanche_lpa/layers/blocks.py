"""Transformer blocks of the LocalityViT skeleton: patch self-attention blocks and class-attention blocks."""
from __future__ import annotations

import inspect
from typing import Any, Optional, Type

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp
from torch import nn

from .attention import LPAttention, PatchAttention
from .position import GridSize

__all__ = ["LocalityBlock", "ClassAttention", "ClassAttentionBlock", "build_attention", "joint_token_mask"]


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


def joint_token_mask(num_queries: int, num_patches: int, device=None) -> torch.Tensor:
    """Additive mask ``[T, T + N]`` that lets each of ``T`` query tokens see itself and the ``N`` patches only.

    ``-inf`` between different query tokens, 0 elsewhere: running all task tokens through a class-attention
    block at once with this mask gives each token exactly what it gets alone (DyTox's ``joint_tokens``).
    """
    mask = torch.zeros(num_queries, num_queries + num_patches, device=device)
    mask[:, :num_queries].fill_(float("-inf")).fill_diagonal_(0.0)
    return mask


class ClassAttention(nn.Module):
    """Class attention (CaiT): the first ``num_queries`` tokens attend to all tokens; only they are returned.

    The parameters are named as in timm's ``ClassAttn`` (``q``, ``k``, ``v``, ``proj``), which handles one query
    token only; several query tokens with a mask are what DyTox's joint task tokens need.

    Args:
        dim: token width.
        num_heads: attention heads; must divide ``dim``.
        qkv_bias: bias on the query/key/value projections.
        attn_drop: dropout on the attention probabilities.
        proj_drop: dropout after the output projection.
    """

    def __init__(
        self, dim: int, num_heads: int = 8, qkv_bias: bool = False, attn_drop: float = 0.0, proj_drop: float = 0.0
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads={num_heads} does not divide dim={dim}")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.k = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = t.shape
        return t.view(batch, tokens, self.num_heads, dim // self.num_heads).transpose(1, 2)

    def forward(
        self, x: torch.Tensor, num_queries: int = 1, attn_mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """``x``: ``[B, T + N, C]`` with the ``T = num_queries`` query tokens first; returns ``[B, T, C]``."""
        batch, _, dim = x.shape
        q = self._heads(self.q(x[:, :num_queries]))
        k, v = self._heads(self.k(x)), self._heads(self.v(x))
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=None if attn_mask is None else attn_mask.to(q.dtype),
            dropout_p=self.attn_drop.p if self.training else 0.0,
        )
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(batch, num_queries, dim)))


class ClassAttentionBlock(nn.Module):
    """Class-attention block: the query tokens attend to themselves and all patches; only they change.

    Drop-path draws one keep/drop per sample *and query token*, so decoding ``T`` task tokens in one masked pass
    (DyTox's joint tokens) drops paths as ``T`` separate passes would (the LPA authors' ``sep_droppath`` in their
    ``TaskAttentionBlock``; Douillard's default is one pass per token). With one query token it is timm's
    per-sample drop-path, with the same random draws.

    Args:
        dim: token width.
        num_heads: attention heads.
        mlp_ratio: hidden width of the MLP relative to ``dim``.
        qkv_bias: bias on the query/key/value projections.
        drop: dropout after the attention projection and in the MLP.
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
        self.attn = ClassAttention(dim, num_heads=num_heads, qkv_bias=qkv_bias, proj_drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), drop=drop)

    def forward(
        self, x: torch.Tensor, num_queries: int = 1, attn_mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """``x``: ``[B, T + N, C]`` with the ``T = num_queries`` query tokens (CLS / task tokens) first."""
        queries = x[:, :num_queries]
        queries = queries + self._token_drop_path(self.attn(self.norm1(x), num_queries, attn_mask))
        queries = queries + self._token_drop_path(self.mlp(self.norm2(queries)))
        return torch.cat([queries, x[:, num_queries:]], dim=1)

    def _token_drop_path(self, residual: torch.Tensor) -> torch.Tensor:
        """``drop_path`` with one draw per (sample, token) of ``[B, T, C]``: rows of ``[B * T, 1, C]``."""
        batch, tokens, dim = residual.shape
        return self.drop_path(residual.reshape(batch * tokens, 1, dim)).reshape(batch, tokens, dim)
