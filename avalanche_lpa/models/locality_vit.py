"""LocalityViT: the skeleton shared by LPAViT and its GPSA / plain-attention baselines.

``patch embedding + learned position embedding -> depth x LocalityBlock (LPA | GPSA | MHSA) on patch tokens
-> concatenate a CLS token -> class-attention blocks -> LayerNorm -> classifier on the CLS token``.

The classifier (submodule ``classifier``, as Avalanche's models name it) grows with the stream by default
(``num_classes=None``): Avalanche's :class:`~avalanche.models.IncrementalClassifier` (``head_type=
"incremental"``) or the authors' per-experience ``LayerNorm + Linear`` heads (``head_type="per_experience"``,
which replace the shared final LayerNorm). ``num_classes=int`` gives a fixed ``nn.Linear`` (DER, iCaRL).
"""
from __future__ import annotations

import inspect
from typing import Any, List, Optional, Sequence, Set, Tuple, Union

import torch
from timm.layers import PatchEmbed, trunc_normal_
from torch import nn

from ..layers import (
    ClassAttentionBlock,
    LocalityBlock,
    attention_layer,
    collect_patch_attention_maps,
    patch_attention_layers,
)
from .heads import HEAD_TYPES, BackboneWithHead, build_head

__all__ = ["LocalityViT", "LPAViT", "LocalityViTBackbone", "model_keywords"]

ImageSize = Union[int, Tuple[int, int]]


def _tracing() -> bool:
    """Whether ``torch.fx`` is tracing the model: its checks of the input's shape are Python branches on a traced
    value, which a trace cannot take, so they are left out of the traced graph."""
    # torch 2.14 logs a warning on every is_fx_tracing() call (it also answers True under torch.export) and offers
    # is_fx_symbolic_tracing(); its message names is_fx_tracing_symbolic_tracing, which it does not define.
    module = torch.fx._symbolic_trace
    for name in ("is_fx_symbolic_tracing", "is_fx_tracing_symbolic_tracing", "is_fx_tracing"):
        tracing = getattr(module, name, None)
        if tracing is not None:
            return tracing()
    return False


def _take_indices(depth: int, indices: Optional[Union[int, Sequence[int]]]) -> List[int]:
    """Block indices from timm's ``indices`` argument: the last ``n`` blocks for an int, those given (negative ones
    counted from the end) for a sequence, every block for ``None``."""
    if indices is None:
        return list(range(depth))
    if isinstance(indices, int):
        if not 0 < indices <= depth:
            raise ValueError(f"indices={indices}: the model has {depth} local blocks")
        return list(range(depth - indices, depth))
    taken = [i + depth if i < 0 else i for i in indices]
    if any(not 0 <= i < depth for i in taken):
        raise ValueError(f"indices={list(indices)}: the model has {depth} local blocks (0..{depth - 1})")
    return taken


def _pair(size: ImageSize) -> Tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _check_positive(**sizes: float) -> None:
    bad = [f"{name}={value}" for name, value in sizes.items() if not value > 0]
    if bad:
        raise ValueError(f"{', '.join(bad)}: sizes must be positive; pass a value of at least 1")


class LocalityViTBackbone(nn.Module):
    """Everything but the classifier: images ``[B, C, H, W]`` to CLS features ``[B, embed_dim]``.

    This is the ``feature_extractor`` that iCaRL and herding use, and the one statement of the network's
    arguments (:class:`LocalityViT` takes the same keywords plus its head's).

    Args:
        img_size: input height/width (int or pair); fixed after construction.
        patch_size: patch side; must divide the image size.
        in_chans: input channels; fixed after construction.
        embed_dim: token width.
        depth: number of local (patch self-attention) blocks.
        num_heads: attention heads; must divide ``embed_dim``.
        mlp_ratio: MLP hidden width relative to ``embed_dim``.
        num_class_attn_blocks: class-attention blocks after the CLS token is added.
        attn_type: ``"lpa"``, ``"gpsa"`` or ``"mhsa"`` (:data:`~avalanche_lpa.layers.ATTENTION_LAYERS`).
        qkv_bias: bias on the query/key/value projections.
        drop_rate: dropout after embeddings, projections and MLPs.
        attn_drop_rate: dropout on attention probabilities.
        drop_path_rate: stochastic depth, increasing linearly over all blocks.
        locality_strength: ``alpha`` of the local init (LPA and GPSA only; ``None``: the layer's default 1).
        content_init_std: initial scale of the content weights (LPA only; ``None``: 0.02).
        lpa_kernel: fused LPA kernel, ``"auto"``, ``"fused"``, ``"matmul"`` or ``"sdpa"`` (LPA only; ``None``:
            ``"auto"``).
        final_norm: LayerNorm on the output tokens (off under per-experience heads, which normalise).

    Raises:
        ValueError: a non-positive size, a patch size that does not divide the image, a head count that does
            not divide the width, or an attention keyword that does not apply to ``attn_type``.
    """

    def __init__(
        self,
        img_size: ImageSize = 32,
        patch_size: int = 4,
        in_chans: int = 3,
        embed_dim: int = 384,
        depth: int = 5,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        num_class_attn_blocks: int = 1,
        attn_type: str = "lpa",
        qkv_bias: bool = False,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        locality_strength: Optional[float] = None,
        content_init_std: Optional[float] = None,
        lpa_kernel: Optional[str] = None,
        final_norm: bool = True,
    ) -> None:
        super().__init__()
        attn_layer = attention_layer(attn_type)
        self.img_size = _pair(img_size)
        self.in_chans = in_chans
        _check_positive(
            img_size=min(self.img_size), patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim,
            depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
        )
        rates = dict(drop_rate=drop_rate, attn_drop_rate=attn_drop_rate, drop_path_rate=drop_path_rate)
        bad = [f"{name}={value}" for name, value in rates.items() if not 0.0 <= value < 1.0]
        if bad:
            raise ValueError(f"{', '.join(bad)}: dropout and drop-path rates are probabilities in [0, 1)")
        if content_init_std is not None and content_init_std < 0:
            raise ValueError(f"content_init_std={content_init_std}: a standard deviation is at least 0")
        if any(s % patch_size for s in self.img_size):
            raise ValueError(
                f"img_size={self.img_size} is not divisible by patch_size={patch_size}; "
                "choose a patch size that divides the image height and width"
            )
        if embed_dim % num_heads:
            raise ValueError(
                f"num_heads={num_heads} does not divide embed_dim={embed_dim}; "
                "choose a width that is a multiple of the number of heads"
            )
        if depth < 1 or num_class_attn_blocks < 0:
            raise ValueError(f"need depth >= 1 and num_class_attn_blocks >= 0, got {depth} and {num_class_attn_blocks}")
        self.grid_size = (self.img_size[0] // patch_size, self.img_size[1] // patch_size)
        self.embed_dim = embed_dim
        self.attn_type = attn_type

        self.patch_embed = PatchEmbed(
            img_size=self.img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim
        )
        num_patches = self.grid_size[0] * self.grid_size[1]
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        rates = torch.linspace(0, drop_path_rate, depth + num_class_attn_blocks).tolist()
        # Only the attention keywords that were given: one that does not apply to attn_type is an error.
        given = dict(locality_strength=locality_strength, content_init_std=content_init_std, kernel=lpa_kernel)
        attn_kwargs = {k: v for k, v in given.items() if v is not None}
        self.blocks = nn.Sequential(
            *[
                LocalityBlock(
                    embed_dim,
                    num_heads,
                    self.grid_size,
                    attn_layer=attn_layer,
                    mlp_ratio=mlp_ratio,
                    drop=drop_rate,
                    drop_path=rates[i],
                    qkv_bias=qkv_bias,
                    attn_drop=attn_drop_rate,
                    **attn_kwargs,
                )
                for i in range(depth)
            ]
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.cls_blocks = nn.ModuleList(
            [
                ClassAttentionBlock(
                    embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop=drop_rate, drop_path=rates[depth + i]
                )
                for i in range(num_class_attn_blocks)
            ]
        )
        # The per-experience heads normalise on their own (the authors' classifier): no shared norm then.
        self.norm = nn.LayerNorm(embed_dim) if final_norm else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        # The generic init above overwrote V; restore the local init of the attention layers.
        for module in self.modules():
            if hasattr(module, "local_init"):
                module.local_init()

    def check_input(self, x: torch.Tensor) -> None:
        """Raises ``ValueError`` unless ``x`` is a batch of images of the size and channels the model was built for."""
        if _tracing():
            return
        expected = (self.in_chans, *self.img_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            got = "x".join(str(s) for s in x.shape[1:]) if x.dim() == 4 else f"a {x.dim()}-d tensor {list(x.shape)}"
            raise ValueError(
                f"expected images of shape [B, {expected[0]}, {expected[1]}, {expected[2]}] (channels, height, "
                f"width), got {got}; resize/convert the inputs (e.g. torchvision Resize, Grayscale) or build the "
                f"model with img_size={tuple(x.shape[-2:]) if x.dim() == 4 else '...'} and "
                f"in_chans={x.shape[1] if x.dim() == 4 else '...'}"
            )

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Images to patch tokens ``[B, N, embed_dim]`` before the local blocks (patch and position embedding)."""
        self.check_input(x)
        return self.pos_drop(self.patch_embed(x) + self.pos_embed)

    def forward_patches(self, x: torch.Tensor) -> torch.Tensor:
        """Images to patch tokens ``[B, N, embed_dim]`` after the local blocks (the shared encoder of DyTox)."""
        return self.blocks(self.embed(x))

    def with_cls(self, patches: torch.Tensor) -> torch.Tensor:
        """Patch tokens after the local blocks to normalised tokens ``[B, 1 + N, embed_dim]``: the CLS token through
        the class-attention blocks, first."""
        cls = self.decode(patches, self.cls_token.expand(patches.shape[0], -1, -1))
        return self.norm(torch.cat([cls, patches], dim=1))

    def decode(
        self, patches: torch.Tensor, queries: torch.Tensor, attn_mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Query tokens ``[B, T, C]`` through the class-attention blocks over ``patches``; returns ``[B, T, C]``."""
        x = torch.cat([queries, patches], dim=1)
        for block in self.cls_blocks:
            x = block(x, num_queries=queries.shape[1], attn_mask=attn_mask)
        return x[:, : queries.shape[1]]

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Images to normalised tokens ``[B, 1 + N, embed_dim]``, CLS token first."""
        if not _tracing() and x.shape[0] == 0:  # an empty batch (the last shard of a tiny dataset): empty tokens
            self.check_input(x)
            num_tokens = 1 + self.grid_size[0] * self.grid_size[1]
            return x.new_zeros((0, num_tokens, self.embed_dim))
        return self.with_cls(self.forward_patches(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images to CLS features ``[B, embed_dim]``."""
        return self.forward_tokens(x)[:, 0]


_HEAD_KEYWORDS = ("num_classes", "initial_out_features", "head_type")


def model_keywords() -> List[str]:
    """Every keyword of :class:`LocalityViT`: the backbone's (but ``final_norm``, which the head decides) and the head's."""
    backbone = [p for p in inspect.signature(LocalityViTBackbone.__init__).parameters if p not in ("self", "final_norm")]
    return backbone + list(_HEAD_KEYWORDS)


class LocalityViT(BackboneWithHead):
    """Vision Transformer skeleton with LPA, GPSA or plain attention, ready for Avalanche strategies.

    Follows Avalanche's model conventions (an ``avalanche.models.BaseModel`` with ``get_features``, the head
    registered as the submodule ``classifier``, so strategies that replace or look up ``classifier`` by name
    work) and timm's (``forward_features`` / ``forward_head`` / ``forward_intermediates``, ``feature_info`` and
    ``timm.create_model(..., features_only=True)``, ``reset_classifier``, ``head`` as an alias).

    Args:
        num_classes: ``None`` for a head that grows with the stream; an int for a fixed ``nn.Linear``.
        initial_out_features: initial (masked) units of the growing head.
        head_type: the growing head: ``"incremental"`` (Avalanche's ``IncrementalClassifier`` after a shared
            LayerNorm) or ``"per_experience"`` (one LayerNorm + Linear per experience, old ones frozen while a
            new one trains: the authors' classifier; no shared LayerNorm then).
        **backbone_args: the network's keywords, stated once in :class:`LocalityViTBackbone` (``img_size,
            patch_size, in_chans, embed_dim, depth, num_heads, mlp_ratio, num_class_attn_blocks, attn_type,
            qkv_bias, drop_rate, attn_drop_rate, drop_path_rate, locality_strength, content_init_std,
            lpa_kernel``).
    """

    def __init__(
        self,
        *,
        num_classes: Optional[int] = None,
        initial_out_features: int = 2,
        head_type: str = "incremental",
        **backbone_args: Any,
    ) -> None:
        super().__init__()
        if head_type not in HEAD_TYPES:
            raise ValueError(f"unknown head_type {head_type!r}; choose one of {', '.join(HEAD_TYPES)}")
        if head_type == "per_experience" and num_classes is not None:
            raise ValueError("head_type='per_experience' grows with the stream; leave num_classes=None")
        if "final_norm" in backbone_args:
            raise ValueError("final_norm follows the head: a shared LayerNorm except under per-experience heads")
        unknown = sorted(set(backbone_args) - set(model_keywords()))
        if unknown:
            raise TypeError(
                f"LocalityViT got unexpected keyword(s) {', '.join(unknown)}; valid: {', '.join(model_keywords())}"
            )
        self.backbone = LocalityViTBackbone(
            **backbone_args, final_norm=not (num_classes is None and head_type == "per_experience")
        )
        self.num_features = self.embed_dim = self.backbone.embed_dim
        self.attn_type = self.backbone.attn_type
        self.initial_out_features = initial_out_features
        self.head_type = head_type
        self.num_classes = num_classes
        self.classifier = build_head(num_classes, self.embed_dim, initial_out_features, head_type)
        # timm's feature metadata: one entry per local block (patch tokens at the patch grid's stride).
        stride = self.backbone.patch_embed.patch_size[0]
        self.feature_info = [dict(num_chs=self.embed_dim, reduction=stride, module=f"backbone.blocks.{i}")
                             for i in range(len(self.backbone.blocks))]

    # -- Avalanche / iCaRL view (feature_extractor, get_features, head: BackboneWithHead) ------------------
    def get_attention_maps(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Patch-to-patch attention probabilities ``[B, heads, N, N]``, one tensor per local block."""
        return collect_patch_attention_maps(self.backbone, lambda: self.backbone(x))

    # -- timm view -------------------------------------------------------------------------------------
    @property
    def img_size(self) -> Tuple[int, int]:
        return self.backbone.img_size

    @property
    def in_chans(self) -> int:
        return self.backbone.in_chans

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images to normalised tokens ``[B, 1 + N, embed_dim]`` (CLS first)."""
        return self.backbone.forward_tokens(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens from :meth:`forward_features` to logits (or to CLS features with ``pre_logits=True``)."""
        cls = x[:, 0]
        return cls if pre_logits else self.classifier(cls)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, Sequence[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """The patch tokens after local blocks, as timm's ViTs give them (``features_only=True`` reads them).

        Args:
            x: images ``[B, C, H, W]``.
            indices: which blocks: the last ``n`` for an int, these indices for a sequence, all for ``None``.
            norm: apply the final LayerNorm to each (where the model has one).
            stop_early: stop after the last block asked for (only with ``intermediates_only``).
            output_fmt: ``"NCHW"`` (tokens on the patch grid, ``[B, C, rows, cols]``) or ``"NLC"`` (``[B, N, C]``).
            intermediates_only: return the intermediates alone, not ``(forward_features(x), intermediates)``.
        """
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        backbone = self.backbone
        depth = len(backbone.blocks)
        take = _take_indices(depth, indices)
        tokens = backbone.embed(x)
        intermediates: List[torch.Tensor] = []
        last = max(take) if stop_early and intermediates_only else depth - 1
        for index, block in enumerate(backbone.blocks[: last + 1]):
            tokens = block(tokens)
            if index in take:
                out = backbone.norm(tokens) if norm else tokens
                if output_fmt == "NCHW":
                    rows, cols = backbone.grid_size
                    out = out.transpose(1, 2).reshape(out.shape[0], out.shape[2], rows, cols)
                intermediates.append(out)
        if intermediates_only:
            return intermediates
        return backbone.with_cls(tokens), intermediates

    # forward (BackboneWithHead) runs through the backbone module, not forward_features, so a forward hook on
    # "backbone" sees the CLS features [B, D] (herding reads them); same result as forward_head(forward_features(x)).

    def reset_classifier(self, num_classes: Optional[int], global_pool: Optional[str] = None) -> None:
        """Replaces the head: ``None`` growing (of ``head_type``), ``0`` none (features out), ``n`` a fixed linear layer.

        The shared final LayerNorm stays as built: a model built with per-experience heads has none.
        """
        if global_pool not in (None, "token"):
            raise ValueError(f"LocalityViT pools with its CLS token only; got global_pool={global_pool!r}")
        device = self.backbone.cls_token.device
        self.num_classes = num_classes
        self.classifier = build_head(num_classes, self.embed_dim, self.initial_out_features, self.head_type).to(device)

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        return {"backbone.pos_embed", "backbone.cls_token"}

    def attention_layers(self) -> List[nn.Module]:
        """The attention layers of the local blocks, in forward order."""
        return patch_attention_layers(self.backbone)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # State dicts saved before the head was registered as `classifier` (avalanche-lpa 0.1) use `head.*`.
        old = prefix + "head."
        current = any(k.startswith(prefix + "classifier.") for k in state_dict)
        for key in [k for k in state_dict if k.startswith(old)] if not current else []:
            state_dict[prefix + "classifier." + key[len(old):]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class LPAViT(LocalityViT):
    """:class:`LocalityViT` with Locality-Preserved Attention in every local block (``attn_type="lpa"``)."""

    def __init__(self, **kwargs) -> None:
        attn_type = kwargs.pop("attn_type", "lpa")
        if attn_type != "lpa":
            raise ValueError(f"LPAViT always uses attn_type='lpa'; use LocalityViT(attn_type={attn_type!r})")
        super().__init__(attn_type="lpa", **kwargs)
