"""Classification heads that grow with the stream: Avalanche's incremental linear head and per-experience heads.

* :class:`GrowingClassifier`: Avalanche's ``IncrementalClassifier`` (one linear layer that gains units for
  new classes) that also loads a state dict saved after it grew.
* :class:`PerExperienceHeads`: the LPA authors' classifier (``ind_clf: 1-1`` in their configs): one
  ``LayerNorm + Linear`` head per training experience over that experience's new classes, logits written
  into the columns of their class ids, heads of earlier experiences frozen while a new one trains.

Both are Avalanche ``DynamicModule`` s: strategies grow them in ``model_adaptation`` before each experience
(and, for classes met only in evaluation, widen the masked output so losses on future classes work).
"""
from __future__ import annotations

from typing import Any, Iterable, List, Optional, Sequence

import torch
from avalanche.models import BaseModel, DynamicModule, IncrementalClassifier
from torch import nn

__all__ = ["BackboneWithHead", "GrowingClassifier", "ExperienceHead", "PerExperienceHeads", "TaskTokenHeads", "HEAD_TYPES", "build_head"]

#: Growing head types of :class:`~avalanche_lpa.models.LocalityViT` (``num_classes=None``).
HEAD_TYPES = ("incremental", "per_experience")


class GrowingClassifier(IncrementalClassifier):
    """Avalanche's ``IncrementalClassifier`` that also loads a state dict saved after it grew.

    A fresh model starts with ``initial_out_features`` units; a checkpoint taken after ten experiences holds
    a larger head. Before loading, the linear layer and the ``active_units`` mask are resized to the shapes
    in the state dict, so ``model.load_state_dict(torch.load(path))`` just works on a freshly built model.
    Build the optimizer after loading, since the head's parameters are new objects.
    """

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        weight = state_dict.get(prefix + "classifier.weight")
        if weight is not None and weight.shape != self.classifier.weight.shape:
            device = self.classifier.weight.device
            self.classifier = nn.Linear(weight.shape[1], weight.shape[0]).to(device)
        units = state_dict.get(prefix + "active_units")
        if units is not None and units.shape != self.active_units.shape:
            self.active_units = torch.zeros_like(units, device=self.active_units.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class ExperienceHead(nn.Module):
    """``LayerNorm + Linear`` over the classes of one experience (PyTorch's default initialisation).

    Args:
        in_features: feature width.
        classes: the class ids this head scores, in the order of its outputs (kept sorted).
    """

    def __init__(self, in_features: int, classes: Iterable[int]) -> None:
        super().__init__()
        ids = sorted({int(c) for c in classes})
        if not ids:
            raise ValueError("an experience head needs at least one class")
        self.norm = nn.LayerNorm(in_features)
        self.linear = nn.Linear(in_features, len(ids))
        # Saved with the weights, so a checkpoint says which columns each head fills.
        self.register_buffer("classes", torch.tensor(ids, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(x))


class PerExperienceHeads(DynamicModule):
    """One :class:`ExperienceHead` per training experience that brings new classes; logits in class-id order.

    ``forward`` returns ``[B, num_outputs]``: column ``c`` holds the logit of the head that owns class ``c``;
    columns of classes no head owns yet (future classes met in evaluation, or the ``initial_out_features``
    of a fresh module) hold ``mask_value``, as Avalanche's ``IncrementalClassifier`` masks inactive units.

    Adaptation (called by every Avalanche strategy before an experience): in training mode, the classes of
    the experience that no head owns get a new head; with ``freeze_old=True`` the heads of earlier
    experiences then stop requiring gradients (the authors' ``freeze_task: [old_heads]``), so only the
    newest head (and the backbone) learns the new task. Plugins that finetune all heads set
    ``requires_grad`` themselves and restore it. In evaluation mode only the masked width grows.

    A state dict saved after ``k`` experiences loads into a freshly built module (the missing heads are
    created from the saved shapes and class ids first); build the optimizer after loading.

    Args:
        in_features: feature width.
        initial_out_features: masked columns of a fresh module (before any adaptation).
        mask_value: value of the columns no head owns.
        freeze_old: freeze earlier heads when a new one is added in training.
    """

    def __init__(
        self, in_features: int, initial_out_features: int = 2, mask_value: float = -1000.0, freeze_old: bool = True
    ) -> None:
        super().__init__()
        if in_features < 1 or initial_out_features < 0:
            raise ValueError(
                f"need in_features >= 1 and initial_out_features >= 0, got {in_features} and {initial_out_features}"
            )
        self.in_features = in_features
        self.num_outputs = initial_out_features
        self.mask_value = mask_value
        self.freeze_old = freeze_old
        self.heads = nn.ModuleList()
        self._columns: List[int] = []  # class ids of the heads' outputs, in head order (host-side copy)
        # A module with no head yet has no parameter to tell its device: this empty buffer does.
        self.register_buffer("_anchor", torch.zeros(0), persistent=False)

    @property
    def classes(self) -> List[int]:
        """Class ids owned by the heads, in head order (the order of their concatenated outputs)."""
        return list(self._columns)

    def _add_head(self, classes: Sequence[int]) -> ExperienceHead:
        head = ExperienceHead(self.in_features, classes).to(self._anchor.device)
        self.heads.append(head)
        self._columns += head.classes.tolist()
        self.num_outputs = max(self.num_outputs, max(self._columns) + 1)
        return head

    @torch.no_grad()
    def adaptation(self, experience) -> None:
        classes = {int(c) for c in experience.classes_in_this_experience}
        if not classes:
            return
        self.num_outputs = max(self.num_outputs, max(classes) + 1)
        new = classes - set(self._columns)
        if not self.training or not new:
            return
        if self.freeze_old:
            for head in self.heads:
                head.requires_grad_(False)
        self._add_head(sorted(new))

    def head_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The heads' outputs side by side, ``[B, len(classes)]``: every head reads all of ``x``."""
        return torch.cat([head(x) for head in self.heads], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.heads) == 0:
            return x.new_full((x.shape[0], self.num_outputs), self.mask_value)
        logits = self.head_logits(x)
        if self._columns == list(range(self.num_outputs)):
            return logits  # every column owned, in order: no scatter needed
        out = logits.new_full((x.shape[0], self.num_outputs), self.mask_value)
        return out.index_copy(1, torch.cat([head.classes for head in self.heads]), logits)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Create the heads a checkpoint holds beyond ours, from their saved class ids, before loading them.
        index = len(self.heads)
        while prefix + f"heads.{index}.classes" in state_dict:
            self._add_head(state_dict[prefix + f"heads.{index}.classes"].tolist())
            index += 1
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        # Heads this module had already grown take the checkpoint's class ids into their buffers (loaded after
        # this call, child by child): the columns follow the checkpoint's.
        self._columns = [
            c for index, head in enumerate(self.heads)
            for c in state_dict.get(prefix + f"heads.{index}.classes", head.classes).tolist()
        ]
        if self._columns:
            self.num_outputs = max(self.num_outputs, max(self._columns) + 1)


class TaskTokenHeads(PerExperienceHeads):
    """:class:`PerExperienceHeads` whose head ``t`` reads only the embedding of task token ``t`` (DyTox's ``1-1``).

    The input is the task-token embeddings side by side, ``[B, T * in_features]`` (``T`` at least the number of
    heads); everything else (growth, freezing, class-id columns, loading) is as in the base class.
    """

    def head_logits(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.view(x.shape[0], -1, self.in_features)
        if tokens.shape[1] < len(self.heads):
            raise ValueError(f"{len(self.heads)} heads need as many task-token embeddings, got {tokens.shape[1]}")
        return torch.cat([head(tokens[:, t]) for t, head in enumerate(self.heads)], dim=1)


def build_head(
    num_classes: Optional[int], in_features: int, initial_out_features: int = 2, head_type: str = "incremental"
) -> nn.Module:
    """The classifier of a model: growing (``num_classes=None``, of ``head_type``), none (``0``) or a fixed linear layer.

    Raises:
        ValueError: an unknown ``head_type`` or a negative ``num_classes``.
    """
    if initial_out_features < 0:
        raise ValueError(f"initial_out_features={initial_out_features}: the growing head's first width is at least 0")
    if head_type == "per_experience" and num_classes is not None:
        raise ValueError("head_type='per_experience' grows with the stream; leave num_classes=None")
    if num_classes is None:
        if head_type not in HEAD_TYPES:
            raise ValueError(f"unknown head_type {head_type!r}; choose one of {', '.join(HEAD_TYPES)}")
        if head_type == "per_experience":
            return PerExperienceHeads(in_features, initial_out_features=initial_out_features)
        return GrowingClassifier(in_features, initial_out_features=initial_out_features)
    if num_classes < 0:
        raise ValueError(f"num_classes must be None (growing head), 0 (no head) or positive, got {num_classes}")
    return nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()


class BackboneWithHead(nn.Module, BaseModel):
    """A model made of a ``backbone`` submodule (images to features) and a ``classifier`` submodule (the head).

    The views Avalanche strategies and timm users expect, stated once for every model family of the package
    (LocalityViT, DyTox, any timm network): ``feature_extractor`` (what iCaRL takes apart and herding hooks),
    ``get_features`` (Avalanche's ``BaseModel``, used by LFL), ``head`` / ``get_classifier`` (timm's names) and
    ``forward`` through the ``backbone`` module, so a forward hook on ``backbone`` sees the features.
    Subclasses set ``self.backbone`` and ``self.classifier``.
    """

    @property
    def feature_extractor(self) -> nn.Module:
        """Images to features (iCaRL and herding take the model apart with this)."""
        return self.backbone

    @property
    def head(self) -> nn.Module:
        """timm's name of the classifier (an alias of the submodule ``classifier``; assigning it replaces that)."""
        return self.classifier

    def __setattr__(self, name: str, value: Any) -> None:
        # nn.Module.__setattr__ registers modules without asking the property: timm's `model.head = nn.Linear(...)`
        # would add an unused submodule `head` beside the classifier that forward uses.
        super().__setattr__("classifier" if name == "head" else name, value)

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def get_features(self, x: torch.Tensor) -> torch.Tensor:
        """Features before the classifier."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(x))

