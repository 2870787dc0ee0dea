"""Any timm model as a feature extractor under a growing Avalanche head: :class:`TimmClassifier`.

timm builds the network without its classifier (``num_classes=0``, so ``forward`` returns pooled features
``[B, D]``); the head is ours, as on :class:`~avalanche_lpa.models.LocalityViT`: Avalanche's growing
``IncrementalClassifier``, the per-experience heads, or a fixed linear layer (iCaRL, DER). The network is the
submodule ``backbone`` and the head the submodule ``classifier``, so replay with herding (which hooks
``backbone``), iCaRL (``feature_extractor``), DER, finetuning (``backbone.patch_embed`` ...) and the
locality metric work as they do on LocalityViT.
"""
from __future__ import annotations

from typing import Any, List, Optional, Set

import timm
import torch
from torch import nn

from .. import names
from .attention_adapters import attention_layers, collect_attention_maps
from .heads import HEAD_TYPES, BackboneWithHead, build_head

__all__ = ["TIMM_PREFIX", "TimmClassifier", "timm_classifier", "timm_model_name"]

#: How configs and the command line name a timm model: ``timm:<name>``.
TIMM_PREFIX = names.TIMM_PREFIX


def timm_model_name(spec: str) -> str:
    """The timm name in ``timm:<name>``, checked against timm's registry.

    Raises:
        ValueError: ``spec`` lacks the prefix or names no timm model (one line, with an example).
    """
    if not isinstance(spec, str) or not spec.startswith(TIMM_PREFIX):
        raise ValueError(f"{spec!r} is not a timm model spec; write timm:<name>, e.g. timm:deit_tiny_patch16_224")
    name = spec[len(TIMM_PREFIX):]
    # A pretrained tag (vit_small_patch16_224.augreg_in21k) selects weights of the same architecture.
    if not name or not timm.is_model(name.split(".")[0]):
        raise ValueError(
            f"{name!r} is not a timm model; pick a name from timm.list_models(), e.g. timm:deit_tiny_patch16_224"
        )
    return name


class TimmClassifier(BackboneWithHead):
    """A timm network (built with ``num_classes=0``) and a classifier that grows with the stream.

    Args:
        backbone: images ``[B, C, H, W]`` to features ``[B, num_features]`` (a timm model without its head).
        num_classes: ``None`` for a growing head, an int for a fixed ``nn.Linear`` (iCaRL, DER).
        initial_out_features: initial (masked) units of the growing head.
        head_type: ``"incremental"`` (Avalanche's ``IncrementalClassifier``) or ``"per_experience"``.
        num_features: feature width; default ``backbone.num_features`` (timm's attribute).
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        num_classes: Optional[int] = None,
        initial_out_features: int = 2,
        head_type: str = "incremental",
        num_features: Optional[int] = None,
    ) -> None:
        super().__init__()
        if head_type not in HEAD_TYPES:
            raise ValueError(f"unknown head_type {head_type!r}; choose one of {', '.join(HEAD_TYPES)}")
        width = num_features if num_features is not None else getattr(backbone, "num_features", None)
        if not isinstance(width, int) or width < 1:
            raise ValueError(
                f"cannot tell the feature width of {type(backbone).__name__}; pass num_features=<its output width>"
            )
        self.backbone = backbone
        self.num_features = self.embed_dim = width
        self.num_classes = num_classes
        self.head_type = head_type
        self.classifier = build_head(num_classes, width, initial_out_features, head_type)

    def get_attention_maps(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Patch-to-patch attention probabilities ``[B, heads, N, N]``, one per attention layer that ran.

        Prefix tokens are dropped and rows renormalised (see :mod:`~avalanche_lpa.models.attention_adapters`).
        """
        return collect_attention_maps(self.backbone, lambda: self.backbone(x))

    def attention_layers(self) -> List[nn.Module]:
        """The attention modules a registered adapter can read, in module order."""
        return attention_layers(self.backbone)

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        """The backbone's own no-decay parameters (position embedding, tokens), with the ``backbone.`` prefix."""
        names = getattr(self.backbone, "no_weight_decay", lambda: set())()
        return {f"backbone.{name}" for name in names}


def timm_classifier(
    name: str,
    *,
    num_classes: Optional[int] = None,
    head_type: str = "incremental",
    initial_out_features: int = 2,
    pretrained: bool = False,
    **kwargs: Any,
) -> TimmClassifier:
    """``timm.create_model(name, num_classes=0, pretrained=pretrained, **kwargs)`` under our head.

    Args:
        name: a timm model name (``timm.list_models()``).
        num_classes: ``None`` for a growing head, an int for a fixed linear head.
        head_type: the growing head, ``"incremental"`` or ``"per_experience"``.
        initial_out_features: initial units of the growing head.
        pretrained: load timm's pretrained weights (downloads them); off by default.
        **kwargs: keywords of the timm model (``img_size``, ``in_chans``, ``patch_size``, ``depth``, ...).
    """
    backbone = timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)
    return TimmClassifier(
        backbone, num_classes=num_classes, head_type=head_type, initial_out_features=initial_out_features
    )
