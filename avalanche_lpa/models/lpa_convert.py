"""LPA inside a (pretrained) timm Vision Transformer: :func:`convert_to_lpa`.

Each converted block's attention becomes a :class:`PrefixLPAttention`: the block's own query, key, value and output
projections, one content weight per head (``c_h = 1``) and LPA's position weights (``a_h = 0``). At conversion it
therefore computes what the block computed (to float rounding); training then moves the position weights away from
zero. Prefix tokens (the class token, register and distillation tokens) stay outside the position term: a position
logit exists only between two patches. Being an :class:`~avalanche_lpa.layers.LPAttention`, a converted layer is
read by the locality metric and ramped by the LPA warm-up like the layers of our own models.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional, Tuple

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Attention as TimmAttention
from torch import nn

from ..layers import LPAttention
from ..layers.position import GridSize, to_grid

__all__ = ["PrefixLPAttention", "convert_to_lpa", "lpa_from_timm_attention"]


class PrefixLPAttention(LPAttention):
    """LPA over timm's token layout: ``num_prefix_tokens`` tokens, then the ``rows x cols`` patches.

    The position logits ``a_h . r_ij`` are added among patches only (zero wherever a prefix token is the query or
    the key). The fused path is PyTorch's ``scaled_dot_product_attention`` with that ``[heads, T, T]`` bias as its
    mask; the explicit path (attention maps, locality) builds the probabilities.

    Args:
        dim: token width.
        num_heads: number of heads.
        grid_size: the patch grid.
        num_prefix_tokens: tokens before the patches.
        scale: the content logits' scale (timm's ``head_dim ** -0.5`` unless the model set another).
        qkv_bias: as in :class:`~avalanche_lpa.layers.LPAttention`.
        attn_drop: as there.
        proj_drop: as there.
    """

    def __init__(self, dim: int, num_heads: int, grid_size: GridSize, num_prefix_tokens: int = 1,
                 scale: Optional[float] = None, qkv_bias: bool = False, attn_drop: float = 0.0,
                 proj_drop: float = 0.0) -> None:
        super().__init__(dim, num_heads, grid_size, kernel="sdpa", qkv_bias=qkv_bias, attn_drop=attn_drop,
                         proj_drop=proj_drop)
        self.num_prefix_tokens = num_prefix_tokens
        if scale is not None:
            self.scale = scale

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None, **kwargs: Any) -> torch.Tensor:
        # timm's blocks pass attn_mask (None in a ViT's forward); a real mask would change what LPA attends to.
        if attn_mask is not None:
            raise ValueError("a converted LPA layer takes no attention mask; run the ViT without attn_mask")
        return super().forward(x)

    def _bias(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Position logits ``[heads, T, T]``: LPA's among the patches, zero in the prefix rows and columns."""
        rows, cols = self.grid_size
        if q.shape[-2] != self.num_prefix_tokens + rows * cols:
            raise ValueError(f"the converted LPA layer expects {self.num_prefix_tokens} prefix tokens and a {rows}x{cols}"
                             f" patch grid ({self.num_prefix_tokens + rows * cols} tokens), got {q.shape[-2]} tokens")
        prefix = self.num_prefix_tokens
        return F.pad(self.position_logits(self.content_spread(q, k)), (prefix, 0, prefix, 0))

    def forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._qkv(x)
        bias = self._bias(q, k).to(q.dtype)
        dropout = self.attn_drop.p if self.training else 0.0
        out = F.scaled_dot_product_attention(q * self._content_scale(), k, v, attn_mask=bias, dropout_p=dropout,
                                             scale=self.scale)
        return self._merge_heads(out)

    def forward_explicit(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        q, k, v = self._qkv(x)
        content = (q @ k.transpose(-2, -1)) * self.scale
        attn = (self._content_scale() * content + self._bias(q, k)).softmax(dim=-1)
        return self._attend(attn, v), attn


def _is_identity(module: Optional[nn.Module]) -> bool:
    return module is None or isinstance(module, nn.Identity)


def lpa_from_timm_attention(attention: nn.Module, grid_size: GridSize, num_prefix_tokens: int) -> PrefixLPAttention:
    """A :class:`PrefixLPAttention` computing what timm's ``attention`` computes, with its weights (copied).

    Raises:
        ValueError: the layer is not timm's plain ViT attention (query/key normalisation, a gate, a norm before the
            projection or another width are not converted; one line naming what).
    """
    if not isinstance(attention, TimmAttention):
        raise ValueError(f"cannot convert {type(attention).__name__}: only timm's ViT Attention is converted to LPA")
    extras = [name for name in ("q_norm", "k_norm", "norm") if not _is_identity(getattr(attention, name, None))]
    extras += ["gate"] if getattr(attention, "gate", None) is not None else []
    dim = attention.qkv.in_features
    width = attention.num_heads * attention.head_dim
    if extras or width != dim or attention.proj.in_features != dim:
        what = ", ".join(extras) or f"an attention width of {width} for tokens of width {dim}"
        raise ValueError(f"cannot convert this timm attention to LPA: it has {what} (plain ViT attention only)")
    weight = attention.qkv.weight
    layer = PrefixLPAttention(dim, attention.num_heads, grid_size, num_prefix_tokens, scale=float(attention.scale),
                              qkv_bias=attention.qkv.bias is not None, attn_drop=attention.attn_drop.p,
                              proj_drop=attention.proj_drop.p).to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        # timm's qkv rows are [q; k; v], each head after head: the layout of our qk (q then k) and v.
        layer.qk.weight.copy_(weight[: 2 * dim])
        layer.v.weight.copy_(weight[2 * dim:])
        if attention.qkv.bias is not None:
            layer.qk.bias.copy_(attention.qkv.bias[: 2 * dim])
            layer.v.bias.copy_(attention.qkv.bias[2 * dim:])
        layer.proj.load_state_dict(attention.proj.state_dict())
        layer.content_weight.fill_(1.0)
        layer.pos_weight.zero_()
    layer.train(attention.training)
    return layer


def _vision_transformer(model: nn.Module) -> nn.Module:
    """The timm ``VisionTransformer`` of ``model``: itself, or its ``backbone`` (a :class:`TimmClassifier`)."""
    for candidate in (model, getattr(model, "backbone", None)):
        if candidate is not None and hasattr(candidate, "blocks") and hasattr(candidate, "patch_embed"):
            return candidate
    raise ValueError(f"{type(model).__name__} is not a timm VisionTransformer (no blocks and patch_embed); LPA "
                     "conversion needs a ViT / DeiT-style timm model")


def convert_to_lpa(model: nn.Module, blocks: Optional[Iterable[int]] = None) -> nn.Module:
    """Makes the attention of a timm Vision Transformer's blocks LPA, keeping its (pretrained) weights.

    Args:
        model: a timm ``VisionTransformer`` (ViT, DeiT, ...) or a model holding one as ``backbone``.
        blocks: indices of the blocks to convert (``None``: every block).

    Returns:
        ``model``, changed in place: the converted model computes what it computed before (position weights at
        zero, content weights at one) until its position weights learn.

    Raises:
        ValueError: not a ViT with a fixed patch grid, a block index out of range, or an attention layer that is not
            timm's plain ViT attention (one line).
    """
    vit = _vision_transformer(model)
    if getattr(vit, "dynamic_img_size", False):
        raise ValueError("LPA conversion needs a fixed patch grid; create the timm model with dynamic_img_size=False")
    grid = to_grid(tuple(vit.patch_embed.grid_size))
    prefix = int(getattr(vit, "num_prefix_tokens", 1))
    chosen = range(len(vit.blocks)) if blocks is None else list(blocks)
    for index in chosen:
        if not 0 <= index < len(vit.blocks):
            raise ValueError(f"block {index} does not exist: the model has blocks 0..{len(vit.blocks) - 1}")
        block = vit.blocks[index]
        if not isinstance(block.attn, PrefixLPAttention):
            block.attn = lpa_from_timm_attention(block.attn, grid, prefix)
    return model
