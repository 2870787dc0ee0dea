"""DyTox's divergence loss (``continual/losses.py: divergence_loss``, ``head_div: 0.1``, mode ``tr``).

While an experience ``t > 0`` trains, a divergence head on the newest task token's embedding classifies each
sample as "one of the old classes" (output 0) or one of the new classes (outputs 1..n_new); its loss, weighted
0.1, pushes the new token towards what only the new classes need. Targets: hard labels map old classes to 0 and
new class ``c`` to its rank among the new classes + 1; soft (mixup) targets put the sum of the old classes' soft
targets in column 0 and the new classes' soft targets after it. Off during finetuning.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Set

import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin

from ._classes import experience_classes
from .criterion import SeenClassesBCE
from .finetune import in_finetuning
from .herding import find_module

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate

__all__ = ["DivergenceHeadPlugin", "divergence_targets", "divergence_loss"]


def divergence_targets(
    new_classes: Sequence[int],
    labels: Optional[torch.Tensor] = None,
    soft_targets: Optional[torch.Tensor] = None,
    columns: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Targets of the divergence head: class indices (hard labels) or ``[B, 1 + n_new]`` soft targets.

    Args:
        new_classes: the classes of the current experience.
        labels: ``[B]`` class ids (hard path).
        soft_targets: ``[B, len(columns)]`` targets of the classification loss (mixup, label smoothing).
        columns: the class id of each column of ``soft_targets``.
    """
    new = sorted(int(c) for c in new_classes)
    if soft_targets is not None:
        if columns is None:
            raise ValueError("soft targets need the class id of each column")
        index = {int(c): i for i, c in enumerate(columns.tolist())}
        new_columns = [index[c] for c in new]
        is_new = torch.zeros(len(index), dtype=torch.bool, device=soft_targets.device)
        is_new[new_columns] = True
        old = soft_targets[:, ~is_new].sum(dim=1, keepdim=True)
        return torch.cat([old, soft_targets[:, new_columns]], dim=1)
    if labels is None:
        raise ValueError("give labels or soft targets")
    rank = torch.zeros(int(labels.max()) + 1 if len(labels) else 1, dtype=torch.long, device=labels.device)
    for i, c in enumerate(new):
        if c < len(rank):
            rank[c] = i + 1
    return rank[labels]


def divergence_loss(logits: torch.Tensor, targets: torch.Tensor, loss: str = "bce") -> torch.Tensor:
    """BCE with logits against soft targets or one-hot hard targets (the authors' ``bce_loss``), or cross-entropy."""
    if targets.dtype.is_floating_point:
        return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))
    if loss == "bce":
        return F.binary_cross_entropy_with_logits(logits, F.one_hot(targets, logits.shape[1]).to(logits.dtype))
    return F.cross_entropy(logits, targets)


class DivergenceHeadPlugin(SupervisedPlugin, supports_distributed=True):
    """Adds ``weight * divergence loss`` to ``strategy.loss`` in every training iteration of an experience ``t > 0``.

    Works with a model that has ``divergence_head`` and ``divergence_logits(features)``
    (:class:`~avalanche_lpa.models.DyTox`). The features are read from the model's ``feature_layer`` submodule
    with a forward hook that exists only during the strategy's own forward pass (not the teacher's, not
    evaluation). With :class:`SeenClassesBCE` as the criterion the soft targets of its last loss call are used
    (mixup, label smoothing), else the hard labels. Nothing is added during finetuning.

    Args:
        weight: the loss weight (the authors' ``head_div: 0.1``).
        loss: ``"bce"`` or ``"ce"`` for hard labels (soft targets always use BCE, as the authors).
        feature_layer: the submodule whose output are the task-token embeddings.
    """

    def __init__(self, weight: float = 0.1, loss: str = "bce", feature_layer: str = "backbone") -> None:
        super().__init__()
        if weight < 0 or loss not in ("bce", "ce"):
            raise ValueError(f"need weight >= 0 and loss 'bce' or 'ce', got {weight} and {loss!r}")
        self.weight = weight
        self.loss = loss
        self.feature_layer = feature_layer
        self.seen_classes: Set[int] = set()
        self.new_classes: List[int] = []
        self._features: Optional[torch.Tensor] = None
        self._handle: Any = None

    @staticmethod
    def _model(strategy: "SupervisedTemplate") -> Any:
        return getattr(strategy.model, "module", strategy.model)  # DDP wraps the model during iterations

    def before_training_exp(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        self.new_classes = sorted(experience_classes(strategy.experience) - self.seen_classes)

    def before_forward(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        if in_finetuning(strategy) or getattr(self._model(strategy), "divergence_head", None) is None:
            return

        def keep(module, args, output):
            self._features = output

        self._handle = find_module(strategy.model, self.feature_layer).register_forward_hook(keep)

    def after_forward(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def before_backward(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        features, self._features = self._features, None
        if features is None or not self.new_classes or self.weight == 0:
            return
        logits = self._model(strategy).divergence_logits(features)
        criterion = strategy._criterion
        if isinstance(criterion, SeenClassesBCE) and criterion.last_targets is not None:
            targets = divergence_targets(self.new_classes, soft_targets=criterion.last_targets,
                                         columns=criterion.last_columns)
        else:
            targets = divergence_targets(self.new_classes, labels=strategy.mb_y)
        strategy.loss = strategy.loss + self.weight * divergence_loss(logits, targets, self.loss)

    def after_training_exp(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        self.seen_classes |= experience_classes(strategy.experience)

    def __getstate__(self):
        return {**self.__dict__, "_features": None, "_handle": None}
