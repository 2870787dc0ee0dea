"""The authors' classification loss: binary cross-entropy over the seen classes, with label smoothing and
mixup/cutmix (timm's ``Mixup``), as an Avalanche criterion that is also a plugin."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Set

import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin
from timm.data import Mixup
from timm.data.mixup import mixup_target

from ._classes import experience_classes

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate

__all__ = ["SeenClassesBCE"]


class SeenClassesBCE(SupervisedPlugin, supports_distributed=True):
    """BCE-with-logits over the classes seen so far, with label smoothing and optional mixup/cutmix.

    Pass it as the strategy's ``criterion``; Avalanche then also registers it as a plugin. As a plugin it
    records the classes of every training experience and, in ``before_forward``, mixes the training batch
    in place with timm's ``Mixup`` (pairs ``i`` and ``B - 1 - i``; odd batches are left unmixed), keeping
    the soft targets for the next loss call. Called as ``criterion(logits, labels)`` it restricts the
    logits to the seen classes (plus any class in ``labels``, so evaluation on future classes works) and
    uses the pending soft targets once, else label-smoothed one-hot targets. Labels in ``strategy.mb_y``
    stay integers, so accuracy metrics are unaffected.

    Args:
        label_smoothing: timm-style smoothing (``on = 1 - s + s / C``, ``off = s / C`` over ``C`` seen classes).
        mixup_alpha: Beta parameter of mixup (0 turns mixup off).
        cutmix_alpha: Beta parameter of cutmix (0 turns cutmix off).
        mix_prob: probability of mixing a batch.
        switch_prob: probability of cutmix instead of mixup when both are on.
    """

    def __init__(
        self,
        label_smoothing: float = 0.0,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        mix_prob: float = 1.0,
        switch_prob: float = 0.5,
    ) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing
        self.mixup: Optional[Mixup] = None
        if mixup_alpha > 0 or cutmix_alpha > 0:
            self.mixup = Mixup(
                mixup_alpha=mixup_alpha,
                cutmix_alpha=cutmix_alpha,
                prob=mix_prob,
                switch_prob=switch_prob,
                label_smoothing=label_smoothing,
                num_classes=1,  # set per batch to the number of seen classes
            )
        self.seen_classes: Set[int] = set()
        self._pending: Optional[torch.Tensor] = None  # soft targets of the batch mixed last
        # What the last loss call used (DyTox's divergence loss derives its targets from them).
        self.last_targets: Optional[torch.Tensor] = None
        self.last_columns: Optional[torch.Tensor] = None

    @property
    def pending_targets(self) -> Optional[torch.Tensor]:
        """Soft targets ``[B, n_columns]`` of the batch mixed last, until the next loss call uses them."""
        return self._pending

    def columns(self, labels: torch.Tensor) -> torch.Tensor:
        """Sorted class ids the loss covers: seen classes plus those in ``labels``."""
        classes = self.seen_classes | {int(c) for c in labels.unique().tolist()}
        return torch.tensor(sorted(classes), device=labels.device)

    def before_training_exp(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        self.seen_classes |= experience_classes(strategy.experience)

    def before_forward(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        self._pending = None
        x, labels = strategy.mb_x, strategy.mb_y
        if self.mixup is None or len(x) % 2:
            return
        columns = self.columns(labels)
        self.mixup.num_classes = len(columns)
        _, self._pending = self.mixup(x, torch.searchsorted(columns, labels))  # mixes x in place

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        columns = self.columns(labels)
        targets, self._pending = self._pending, None
        if targets is None or targets.shape != (len(labels), len(columns)):
            targets = mixup_target(torch.searchsorted(columns, labels), len(columns), 1.0, self.label_smoothing)
        self.last_targets, self.last_columns = targets.detach(), columns
        return F.binary_cross_entropy_with_logits(logits[:, columns], targets.to(logits.dtype))

    def after_training_iteration(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        self.last_targets = self.last_columns = None  # nothing of a batch outlives its iteration (checkpoints)
