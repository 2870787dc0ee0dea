"""Self-attention layers over a grid of patch tokens: LPA, GPSA (ConViT) and plain multi-head attention.

All three share one interface, :class:`PatchAttention`:

* ``forward(x)`` is the training/inference path (fused where the layer allows it);
* ``forward_explicit(x)`` returns ``(output, probabilities [B, heads, N, N])``;
* while ``record_attention`` is set (see :func:`collect_patch_attention_maps`), ``forward`` takes the explicit path
  and keeps the last probabilities in ``attention_map``. Nothing is cached otherwise, so the layers stay
  cheap to ``deepcopy`` (LwF copies the model) and to checkpoint.

Plugins and metrics find these layers by this base class, never by the model class, so they also work when a
strategy wraps the model (ICaRL) and for any future model built from these layers.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Tuple, Type

import torch
import torch.nn.functional as F
from torch import nn

from .position import (
    GridSize,
    centred_grid_coordinates,
    local_position_weights,
    relative_position_features,
    to_grid,
)

__all__ = [
    "PatchAttention",
    "LPAttention",
    "GPSAttention",
    "MHSAttention",
    "ATTENTION_LAYERS",
    "attention_layer",
    "patch_attention_layers",
    "collect_patch_attention_maps",
    "DENORMAL_GUARD",
]

#: Logits further than this below their row's maximum are raised to it (the explicit path, the bias kernels and GPSA's
#: position softmax). The local init puts far patches near -128, whose softmax underflows into float32 denormals
#: that x86 CPUs process several times slower; raising a logit that lies this far below its row's maximum changes
#: every probability by less than ``N * exp(-40)``, far below float32 rounding. The "fused" kernel needs no guard:
#: SDPA's kernels underflow those terms to zero at no cost (measured: the same time with and without far logits).
DENORMAL_GUARD = 40.0

#: Kernels of the fused LPA path; "auto" picks one per device (see ``LPAttention.kernel_for``). "fused": one
#: mask-free ``scaled_dot_product_attention`` over queries and keys extended by position features; "matmul": one
#: batched matmul plus the ``[heads, N, N]`` position bias, then softmax; "sdpa": SDPA with that bias as its mask.
LPA_KERNELS = ("auto", "fused", "matmul", "sdpa")
#: Compute dtypes in which the "fused" kernel's 4 position features (x, y, x^2, y^2 of the key) are exact as they are;
#: in half precision each comes twice, against the query features' value in that dtype and against its rounding
#: error, so the position logits stay float32-accurate (8 columns).
EXACT_POSITION_DTYPES = (torch.float32, torch.float64)


class PatchAttention(nn.Module):
    """Base class of the attention layers: head split, projections and the attention-map interface.

    Args:
        dim: token width.
        num_heads: number of heads; must divide ``dim``.
        grid_size: the patch grid, ``G`` or ``(rows, cols)`` (``N = rows * cols`` tokens).
        qkv_bias: add a bias to the query/key/value projections.
        attn_drop: dropout on the attention probabilities.
        proj_drop: dropout after the output projection.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        grid_size: GridSize,
        qkv_bias: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(
                f"num_heads={num_heads} does not divide embed_dim={dim}; choose a width that is a multiple "
                "of the number of heads"
            )
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.grid_size = to_grid(grid_size)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.record_attention = False
        self.attention_map: Optional[torch.Tensor] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.record_attention:
            out, attn = self.forward_explicit(x)
            self.attention_map = attn.detach()
            return out
        return self.forward_fused(x)

    def forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        """Training/inference path; layers without a fused kernel use the explicit one."""
        return self.forward_explicit(x)[0]

    def forward_explicit(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(output [B, N, C], attention probabilities [B, heads, N, N])``."""
        raise NotImplementedError

    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = t.shape
        return t.view(batch, tokens, self.num_heads, self.head_dim).transpose(1, 2)

    def _merge_heads(self, t: torch.Tensor) -> torch.Tensor:
        batch, _, tokens, _ = t.shape
        return self.proj_drop(self.proj(t.transpose(1, 2).reshape(batch, tokens, -1)))

    def _attend(self, attn: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self._merge_heads(self.attn_drop(attn) @ v)


class _PositionalAttention(PatchAttention):
    """Adds input-independent per-head position logits ``a_h . r_ij`` (shared by LPA and GPSA)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        grid_size: GridSize,
        locality_strength: float = 1.0,
        qkv_bias: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__(dim, num_heads, grid_size, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        self.locality_strength = locality_strength
        self.qk = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.pos_weight = nn.Parameter(torch.empty(num_heads, 3))
        self.num_local_heads = math.isqrt(num_heads) ** 2
        # Geometry only: rebuilt by the constructor, so it stays out of the state dict.
        self.register_buffer("rel_pos", relative_position_features(grid_size), persistent=False)
        self.register_buffer("grid_coords", centred_grid_coordinates(grid_size), persistent=False)
        _PositionalAttention.local_init(self)

    @torch.no_grad()
    def local_init(self) -> None:
        """ConViT-style local init; models call it again after their generic weight init."""
        # V starts as the identity, so each local head copies the patches it focuses on.
        self.v.weight.copy_(torch.eye(self.v.weight.shape[0]))
        self.pos_weight.copy_(local_position_weights(self.num_heads, self.locality_strength)[0])

    def position_logits(self, margin: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Per-head position logits ``[heads, N, N]``; computed once per forward, not per sample.

        Logits more than ``DENORMAL_GUARD + margin_h`` below their row's maximum are raised to that floor (see
        :data:`DENORMAL_GUARD`). Alone (GPSA's separate position softmax) the floor is exact. When content
        logits are added before the softmax (LPA), ``margin`` must bound each head's content-logit spread
        within a row: then a raised entry still ends at least ``DENORMAL_GUARD`` below the row's combined
        maximum, and the result stays exact to float32 rounding at any content scale.

        Args:
            margin: ``[heads]`` extra distance of the floor below the row maximum (``None``: 0).
        """
        logits = torch.einsum("ijk,hk->hij", self.rel_pos, self.pos_weight)
        floor = logits.detach().amax(dim=-1, keepdim=True) - DENORMAL_GUARD
        if margin is not None:
            floor = floor - margin.view(-1, 1, 1)
        return torch.maximum(logits, floor)

    def position_features(self, dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
        """Query features ``[heads, N, P]`` and key features ``[N, P]`` whose dot products are the position logits
        ``a_h . r_ij``, up to a constant per query (which the row softmax cancels).

        With ``d = p_j - p_i`` and centred integer coordinates ``p = (x, y)``:
        ``a0 dx + a1 dy + a2 |d|^2 = (a0 - 2 a2 x_i) x_j + (a1 - 2 a2 y_i) y_j + a2 x_j^2 + a2 y_j^2 + c_i``: ``P = 4``
        in float32. The key features ``(x_j, y_j, x_j^2, y_j^2)`` are small integers, exact in bfloat16 up to 32 x 32
        grids; in half precision (``P = 8``) the query features come as their value in ``dtype`` and its rounding
        error, each against the same key features, so the attention kernel adds the position logits with float32's
        accuracy.
        """
        x, y = self.grid_coords.unbind(-1)
        a = self.pos_weight.float()
        heads, tokens = a.shape[0], x.numel()
        a2 = a[:, 2, None].expand(heads, tokens)
        query = torch.stack([a[:, 0, None] - 2.0 * a2 * x, a[:, 1, None] - 2.0 * a2 * y, a2, a2], dim=-1)
        key = torch.stack([x, y, x * x, y * y], dim=-1)
        if dtype in EXACT_POSITION_DTYPES:
            return query.to(dtype), key.to(dtype)
        rounded = query.to(dtype)
        query = torch.cat([rounded, (query - rounded.float()).to(dtype)], dim=-1)
        return query, torch.cat([key, key], dim=-1).to(dtype)

    def _qkv(self, x: torch.Tensor):
        q, k = self.qk(x).chunk(2, dim=-1)
        return self._split_heads(q), self._split_heads(k), self._split_heads(self.v(x))


class LPAttention(_PositionalAttention):
    """Locality-Preserved Attention: one softmax over ``c_h * q.k / sqrt(d) + a_h . r_ij``.

    Args:
        dim: token width.
        num_heads: number of heads.
        grid_size: the patch grid, ``G`` or ``(rows, cols)``.
        locality_strength: ``alpha`` of the local init; also scales the content weights.
        content_init_std: standard deviation ``sigma`` of the initial content weights ``c_h``.
        kernel: fused kernel: ``"fused"`` (one mask-free ``scaled_dot_product_attention`` over queries and keys
            extended by position features, :meth:`position_features`), ``"matmul"`` (one batched matmul plus the
            ``[heads, N, N]`` position bias, then softmax), ``"sdpa"`` (SDPA with that bias as its mask) or
            ``"auto"`` (:meth:`kernel_for`).
        qkv_bias: as in :class:`PatchAttention`.
        attn_drop: as in :class:`PatchAttention`.
        proj_drop: as in :class:`PatchAttention`.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        grid_size: GridSize,
        locality_strength: float = 1.0,
        content_init_std: float = 0.02,
        kernel: str = "auto",
        qkv_bias: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__(
            dim, num_heads, grid_size, locality_strength=locality_strength, qkv_bias=qkv_bias, attn_drop=attn_drop,
            proj_drop=proj_drop,
        )
        if kernel not in LPA_KERNELS:
            raise ValueError(f"unknown LPA kernel {kernel!r}; choose one of {', '.join(LPA_KERNELS)}")
        self.kernel = kernel
        self.content_init_std = content_init_std
        self.content_weight = nn.Parameter(torch.empty(num_heads))
        # Multiplies the content term; LPAWarmupPlugin ramps it from 0 to 1 at the start of an experience.
        self.register_buffer("content_factor", torch.ones(()), persistent=False)
        LPAttention.local_init(self)

    @torch.no_grad()
    def local_init(self) -> None:
        """Local init of V and the position weights, and ``c_h ~ N(0, sigma^2) * alpha``."""
        super().local_init()
        self.content_weight.normal_(0.0, self.content_init_std).mul_(self.locality_strength)

    @staticmethod
    def kernel_for(device: torch.device) -> str:
        """The kernel behind ``kernel="auto"``: ``"fused"`` on every device (measured by
        ``benchmarks/attention_speed.py``, docs/performance.md).

        Without a mask LPA is plain attention over heads 4 columns wider (8 in half precision): on this project's
        CPU it took 1.1-1.2x plain attention's time (2-4% over plain attention at that head size, the floor of any
        one-call form) and 1.2x its peak memory at 64, 196 and 576 tokens, where the
        bias kernels ("matmul", "sdpa") materialise ``N x N`` terms (up to 1.8x the time and 7.6x the memory at 576
        tokens); on CUDA it may take FlashAttention in half precision, which a float mask rules out (not measured
        here: no GPU).
        """
        return "fused"

    def _content_scale(self) -> torch.Tensor:
        return (self.content_weight * self.content_factor).view(1, -1, 1, 1)

    @torch.no_grad()
    def content_spread(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """An upper bound ``[heads]`` of ``max_j C_ij - min_j C_ij`` over every row ``i`` of the batch.

        ``C_ij = c_h q_i.k_j / sqrt(d)``; by Cauchy-Schwarz ``|C_ij| <= |c_h| |q_i| |k_j| / sqrt(d)``, so twice
        the largest such product bounds the spread. It costs two norms over ``q`` and ``k`` (no ``N x N``
        work) and lets :meth:`position_logits` keep its denormal floor exact whatever the content scale:
        small at initialisation (the floor then removes all denormals), large once content weights grow
        (the floor then moves down and clamps less, staying exact).
        """
        q_norm = q.float().norm(dim=-1).amax(dim=(0, 2))
        k_norm = k.float().norm(dim=-1).amax(dim=(0, 2))
        weight = (self.content_weight * self.content_factor).abs().float()
        return 2.0 * weight * self.scale * q_norm * k_norm

    def forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        kernel = self.kernel if self.kernel != "auto" else self.kernel_for(x.device)
        dropout = self.attn_drop.p if self.training else 0.0
        if kernel == "fused":
            return self._merge_heads(self._fused_attention(x, dropout))
        q, k, v = self._qkv(x)
        bias = self.position_logits(self.content_spread(q, k))
        if kernel == "sdpa":
            out = F.scaled_dot_product_attention(
                q * self._content_scale(), k, v, attn_mask=bias.to(q.dtype), dropout_p=dropout,
            )
            return self._merge_heads(out)
        logits = torch.matmul(q * (self._content_scale() * self.scale), k.transpose(-2, -1))
        return self._attend(logits.add_(bias).softmax(dim=-1), v)

    def _compute_dtype(self) -> torch.dtype:
        """The dtype the attention computes in: autocast's where it is on, else the weights'. Read from the weights, not
        from a tensor of the forward pass, so that ``torch.fx`` traces the layer (no traced value to branch on)."""
        weight = next(self.parameters())
        if torch.is_autocast_enabled(weight.device.type):
            return torch.get_autocast_dtype(weight.device.type)
        return weight.dtype

    def _fused_attention(self, x: torch.Tensor, dropout: float) -> torch.Tensor:
        """LPA as one plain attention without a mask: ``softmax([c q / sqrt(d), f_i] . [k, g_j]) [v, 0]``, with the
        position features ``f_i``, ``g_j`` of :meth:`position_features`; returns ``[B, heads, N, d]``.

        The content scale ``c_h / sqrt(d)`` (warm-up factor included) multiplies the query projection's rows, not
        the queries: a ``C x C`` product instead of one over every token.
        """
        dim = self.qk.out_features // 2
        rows = (self._content_scale().flatten() * self.scale).repeat_interleave(self.head_dim)
        scale = torch.cat([rows, rows.new_ones(dim)]).to(self.qk.weight.dtype)
        bias = self.qk.bias * scale if self.qk.bias is not None else None
        q, k = F.linear(x, self.qk.weight * scale[:, None], bias).chunk(2, dim=-1)
        q, k, v = self._split_heads(q), self._split_heads(k), self._split_heads(self.v(x))
        batch, heads, tokens, width = q.shape
        query_pos, key_pos = self.position_features(self._compute_dtype())
        shape = (batch, heads, tokens, query_pos.shape[-1])
        q = torch.cat([q, query_pos.expand(shape)], dim=-1)
        k = torch.cat([k, key_pos.expand(shape)], dim=-1)
        v = F.pad(v, (0, shape[-1]))  # zeros: the attention kernels want one head size for q, k and v
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=1.0)[..., :width]

    def forward_explicit(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        q, k, v = self._qkv(x)
        content = (q @ k.transpose(-2, -1)) * self.scale
        bias = self.position_logits(self.content_spread(q, k))
        attn = (self._content_scale() * content + bias).softmax(dim=-1)
        return self._attend(attn, v), attn


class GPSAttention(_PositionalAttention):
    """Gated positional self-attention (ConViT baseline).

    ``A = (1 - sigmoid(g_h)) softmax(q.k / sqrt(d)) + sigmoid(g_h) softmax(a_h . r_ij)``, rows renormalised,
    with the gate ``g_h`` initialised to 1. Both softmaxes have rows that sum to one, so the renormalisation is the
    identity and ``A v = (1 - sigmoid(g_h)) attention(q, k, v) + sigmoid(g_h) softmax(a_h . r_ij) v``: the fused
    path is one plain attention call plus the position term, whose ``[heads, N, N]`` probabilities are the same for
    every sample (with attention dropout in training, the explicit path: dropout acts on ``A``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        grid_size: GridSize,
        locality_strength: float = 1.0,
        qkv_bias: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__(
            dim, num_heads, grid_size, locality_strength=locality_strength, qkv_bias=qkv_bias, attn_drop=attn_drop,
            proj_drop=proj_drop,
        )
        self.gating_param = nn.Parameter(torch.ones(num_heads))

    def forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.attn_drop.p > 0:
            return self.forward_explicit(x)[0]
        q, k, v = self._qkv(x)
        gate = torch.sigmoid(self.gating_param).view(1, -1, 1, 1)
        content = F.scaled_dot_product_attention(q, k, v)
        # The position probabilities [heads, N, N] are the same for every sample: one product per head over the
        # batch's values side by side ([heads, N, B * d]), never the probabilities repeated per sample.
        batch, heads, tokens, width = v.shape
        values = v.permute(1, 2, 0, 3).reshape(heads, tokens, batch * width)
        position = torch.bmm(self.position_logits().softmax(dim=-1).to(v.dtype), values)
        position = position.view(heads, tokens, batch, width).permute(2, 0, 1, 3)
        return self._merge_heads((1.0 - gate) * content + gate * position)

    def forward_explicit(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        q, k, v = self._qkv(x)
        content = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        position = self.position_logits().softmax(dim=-1)
        gate = torch.sigmoid(self.gating_param).view(1, -1, 1, 1)
        attn = (1.0 - gate) * content + gate * position
        attn = attn / attn.sum(dim=-1, keepdim=True)
        return self._attend(attn, v), attn


class MHSAttention(PatchAttention):
    """Plain multi-head self-attention (ViT baseline); fused path through ``scaled_dot_product_attention``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        grid_size: GridSize,
        qkv_bias: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__(dim, num_heads, grid_size, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)

    def _qkv(self, x: torch.Tensor):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self._split_heads(q), self._split_heads(k), self._split_heads(v)

    def forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._qkv(x)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0)
        return self._merge_heads(out)

    def forward_explicit(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        q, k, v = self._qkv(x)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self._attend(attn, v), attn


#: ``attn_type`` name -> layer class: the one registry of attention types (models, configs and CLI read it).
ATTENTION_LAYERS: Dict[str, Type[PatchAttention]] = {"lpa": LPAttention, "gpsa": GPSAttention, "mhsa": MHSAttention}


def attention_layer(attn_type: str) -> Type[PatchAttention]:
    """The layer class registered as ``attn_type``, or ``ValueError`` naming the valid types."""
    try:
        return ATTENTION_LAYERS[attn_type]
    except KeyError:
        raise ValueError(
            f"unknown attn_type {attn_type!r}; choose one of {', '.join(ATTENTION_LAYERS)}"
        ) from None


def patch_attention_layers(module: nn.Module, kind: Type[PatchAttention] = PatchAttention) -> List[PatchAttention]:
    """The attention layers of class ``kind`` inside ``module``, in module order (works through wrappers).

    The one way the package finds attention layers: the locality metric, the LPA warm-up and the model's
    ``patch_attention_layers()`` all call it, never the concrete model class.
    """
    return [m for m in module.modules() if isinstance(m, kind)]


def collect_patch_attention_maps(module: nn.Module, run: Callable[[], object]) -> List[torch.Tensor]:
    """Runs ``run()`` with attention recording on and returns the maps of every :class:`PatchAttention`.

    Works on any module that contains such layers, also a model wrapped by a strategy. The maps come back
    in module order (forward order for sequential blocks) as detached ``[B, heads, N, N]`` tensors, and no
    tensor is left on the layers afterwards.

    Args:
        module: the model (or any module holding attention layers).
        run: a callable that performs the forward pass, e.g. ``lambda: model(x)``.
    """
    layers = patch_attention_layers(module)
    if not layers:
        raise ValueError(
            f"{type(module).__name__} has no PatchAttention layer to record; build it from "
            "avalanche_lpa.layers (e.g. LocalityViT)"
        )
    for layer in layers:
        layer.record_attention = True
    try:
        run()
        maps = [layer.attention_map for layer in layers if layer.attention_map is not None]
    finally:
        for layer in layers:
            layer.record_attention = False
            layer.attention_map = None
    return maps
