"""DyTox (Douillard et al., CVPR 2022) over the LocalityViT skeleton, as an Avalanche dynamic model.

One shared encoder (patch and position embedding, the local blocks: GPSA in DyTox, LPA in the authors' DyTox+LPA),
one learned task token per experience decoded by the shared class-attention block (the task-attention block,
TAB), one ``LayerNorm + Linear`` head per experience on its own token's embedding, and a divergence head on the
newest token (training only; its loss lives in :class:`~avalanche_lpa.plugins.DivergenceHeadPlugin`). The
authors' code: ``continual/dytox.py`` and ``cifar_dytox_plus_lpa_jointtokens.yaml`` (bwnzheng/LPA_ICME2023).
"""
from __future__ import annotations

from typing import Any, List, Optional, Set

import torch
from avalanche.models import DynamicModule
from timm.layers import trunc_normal_
from torch import nn

from ..layers import collect_patch_attention_maps, joint_token_mask, patch_attention_layers
from .heads import BackboneWithHead, ExperienceHead, TaskTokenHeads
from .locality_vit import LocalityViTBackbone, model_keywords

__all__ = ["DyTox", "DyToxBackbone", "dytox_keywords"]

_OWN_KEYWORDS = ("joint_tokens", "divergence_head", "freeze_old", "initial_out_features")


def dytox_keywords() -> List[str]:
    """Every keyword of :class:`DyTox`: the network's (as :class:`LocalityViT`'s, without its head's) and DyTox's."""
    heads = ("num_classes", "initial_out_features", "head_type")
    return [k for k in model_keywords() if k not in heads] + list(_OWN_KEYWORDS)


class DyToxBackbone(nn.Module):
    """Images to the task-token embeddings side by side, ``[B, T * embed_dim]`` (what herding and iCaRL read).

    Args:
        encoder: the shared network; its CLS token is task token 0 and its class-attention blocks are the TAB.
        joint_tokens: decode all task tokens in one pass with :func:`~avalanche_lpa.layers.joint_token_mask`
            (the authors' configs) instead of one pass per token; the results are equal.
    """

    def __init__(self, encoder: LocalityViTBackbone, joint_tokens: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.joint_tokens = joint_tokens
        # Task token 0 is the encoder's CLS token (the same parameter), as in DyTox.
        self.task_tokens = nn.ParameterList([encoder.cls_token])

    @property
    def num_tokens(self) -> int:
        return len(self.task_tokens)

    def add_task_token(self) -> nn.Parameter:
        """A new task token: a fresh parameter of the first token's shape, truncated normal (std 0.02)."""
        token = nn.Parameter(torch.zeros_like(self.task_tokens[0]))
        trunc_normal_(token, std=0.02)
        self.task_tokens.append(token)
        return token

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, dim = x.shape[0], self.encoder.embed_dim
        if batch == 0:
            self.encoder.check_input(x)
            return x.new_zeros((0, self.num_tokens * dim))
        patches = self.encoder.forward_patches(x)
        tokens = [token.expand(batch, -1, -1) for token in self.task_tokens]
        if self.joint_tokens:
            mask = joint_token_mask(len(tokens), patches.shape[1], device=patches.device)
            decoded = self.encoder.decode(patches, torch.cat(tokens, dim=1), attn_mask=mask)
        else:
            decoded = torch.cat([self.encoder.decode(patches, token) for token in tokens], dim=1)
        return decoded.flatten(1)


class DyTox(DynamicModule, BackboneWithHead):
    """DyTox (``attn_type="gpsa"``) and the authors' DyTox+LPA (``attn_type="lpa"``) for Avalanche strategies.

    Adaptation (parent first, then the heads): in training mode, an experience with classes no head owns gets,
    from the second such experience on, a new task token (older tokens then stop requiring gradients, the
    authors' ``freeze_task: [old_task_tokens]``) and a fresh divergence head with ``n_new + 1`` outputs
    (output 0 = "one of the old classes"); the heads (:class:`TaskTokenHeads`) add theirs and freeze the older
    ones. Plugins that finetune set ``requires_grad`` themselves and restore it. A state dict saved after ``k``
    experiences loads into a freshly built model.

    Args:
        joint_tokens: decode the task tokens in one masked pass (the authors' setting) or one pass each.
        divergence_head: create the divergence head (the authors' ``head_div: 0.1``).
        freeze_old: freeze older tokens and heads when a new experience starts training.
        initial_out_features: masked logits of a fresh model.
        **backbone_args: the network's keywords, as for :class:`~avalanche_lpa.models.LocalityViT`.
    """

    def __init__(
        self,
        *,
        joint_tokens: bool = False,
        divergence_head: bool = True,
        freeze_old: bool = True,
        initial_out_features: int = 2,
        **backbone_args: Any,
    ) -> None:
        super().__init__()
        network = set(model_keywords()) - {"num_classes", "initial_out_features", "head_type"}
        unknown = sorted(set(backbone_args) - network)
        if unknown:
            raise TypeError(
                f"DyTox got unexpected keyword(s) {', '.join(unknown)} (it grows its own heads); "
                f"valid: {', '.join(sorted(network))}"
            )
        encoder = LocalityViTBackbone(**backbone_args, final_norm=False)
        if len(encoder.cls_blocks) == 0:
            raise ValueError("DyTox decodes its task tokens with the class-attention block: num_class_attn_blocks >= 1")
        self.backbone = DyToxBackbone(encoder, joint_tokens=joint_tokens)
        self.num_features = self.embed_dim = encoder.embed_dim
        self.attn_type = encoder.attn_type
        self.use_divergence_head = divergence_head
        self.freeze_old = freeze_old
        self.classifier = TaskTokenHeads(self.embed_dim, initial_out_features, freeze_old=freeze_old)
        self.divergence_head: Optional[ExperienceHead] = None

    # -- growth ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def adaptation(self, experience: Any) -> None:
        if not self.training:
            return
        new: Set[int] = {int(c) for c in experience.classes_in_this_experience} - set(self.classifier.classes)
        if not new or len(self.classifier.heads) == 0:  # nothing new, or the first task: token 0 is there
            return
        if self.freeze_old:
            for token in self.backbone.task_tokens:
                token.requires_grad_(False)
        self.backbone.add_task_token()
        if self.use_divergence_head:
            self._new_divergence_head(len(new) + 1)

    def _new_divergence_head(self, outputs: int) -> ExperienceHead:
        device = self.backbone.task_tokens[0].device
        self.divergence_head = ExperienceHead(self.embed_dim, range(outputs)).to(device)
        return self.divergence_head

    def divergence_logits(self, features: torch.Tensor) -> torch.Tensor:
        """The divergence head on the newest task token's embedding (``features`` from :attr:`backbone`)."""
        if self.divergence_head is None:
            raise ValueError("no divergence head yet: it exists from the second experience on")
        return self.divergence_head(features[:, -self.embed_dim:])

    # -- Avalanche / timm views ------------------------------------------------------------------------------
    @property
    def task_tokens(self) -> nn.ParameterList:
        return self.backbone.task_tokens

    @property
    def img_size(self):
        return self.backbone.encoder.img_size

    @property
    def in_chans(self) -> int:
        return self.backbone.encoder.in_chans

    # feature_extractor / get_features (the task-token embeddings side by side) and forward through the backbone
    # module (herding and the divergence loss hook it): BackboneWithHead.

    def get_attention_maps(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Patch-to-patch attention probabilities ``[B, heads, N, N]`` of the shared encoder's local blocks."""
        encoder = self.backbone.encoder
        return collect_patch_attention_maps(encoder, lambda: encoder.forward_patches(x))

    def attention_layers(self) -> List[nn.Module]:
        """The attention layers of the shared encoder's local blocks, in forward order."""
        return patch_attention_layers(self.backbone.encoder)

    def no_weight_decay(self) -> Set[str]:
        return {"backbone.encoder.pos_embed"} | {f"backbone.task_tokens.{i}" for i in range(len(self.task_tokens))}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Grow to the checkpoint's tokens and divergence head before the children load them.
        while prefix + f"backbone.task_tokens.{len(self.backbone.task_tokens)}" in state_dict:
            self.backbone.add_task_token()
        classes = state_dict.get(prefix + "divergence_head.classes")
        if classes is not None and (self.divergence_head is None or len(self.divergence_head.classes) != len(classes)):
            self._new_divergence_head(len(classes))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
