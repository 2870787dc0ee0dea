"""The paper's distillation weighting on top of Avalanche's ``LwFPlugin``.

Per experience, ``loss = (1 - lambda) * classification + lambda * KD`` with ``lambda = n_old / n_total``
(classes seen before the experience over classes seen after it), KD being Avalanche's LwF term: KL between
the softened outputs of the previous model and the current one on the old classes.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict

from avalanche.training.plugins import LwFPlugin

from ._classes import experience_classes

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate

__all__ = ["distillation_weight", "WeightedLwFPlugin"]


def distillation_weight(n_old: int, n_total: int) -> float:
    """``lambda = n_old / n_total`` (0 when nothing has been seen)."""
    if n_old < 0 or n_total < n_old:
        raise ValueError(f"need 0 <= n_old <= n_total, got n_old={n_old}, n_total={n_total}")
    return n_old / n_total if n_total else 0.0


class WeightedLwFPlugin(LwFPlugin, supports_distributed=True):
    """``LwFPlugin`` whose KD term and classification loss are weighted ``lambda`` and ``1 - lambda``.

    Design: the stock plugin adds ``alpha * KD`` to ``strategy.loss`` in ``before_backward``. This subclass
    sets Avalanche's ``alpha`` to ``lambda`` at the start of every experience (so the stock KD computation,
    teacher copy and old-class bookkeeping are reused unchanged) and, in the same callback, scales the loss
    accumulated so far by ``1 - lambda``. Doing both in one callback makes the rule independent of plugin
    order; anything added to the loss by plugins that run *before* this one is scaled too, so list
    regularisers that must stay unscaled after it. ``lambdas[i]`` records lambda of training experience ``i``.

    Args:
        temperature: softmax temperature of the distillation (the paper uses 1).
    """

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__(alpha=0.0, temperature=temperature)
        self.weight = 0.0
        self.lambdas: Dict[int, float] = {}

    def before_training_exp(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        # LwF records the classes of each finished experience, so these are exactly the distilled classes.
        old = set().union(*self.lwf.prev_classes_by_task.values())
        total = old | experience_classes(strategy.experience)
        self.weight = distillation_weight(len(old), len(total))
        self.lwf.alpha = self.weight
        self.lambdas[strategy.clock.train_exp_counter] = self.weight

    def before_backward(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        if self.weight == 0.0:  # first experience: no teacher, plain classification loss
            return
        kd = self.lwf(strategy.mb_x, strategy.mb_output, strategy.model)  # already multiplied by lambda
        strategy.loss = (1.0 - self.weight) * strategy.loss + kd
