"""LPA warm-up: ramp the content term of every LPA layer from ``start_factor`` to 1 at the start of each task.

The LPA layer damps early gradients into Q/K by starting its content weights small; that only helps on the
first task. :class:`LPAWarmupPlugin` repeats the effect on every new task by scaling the content term
``c_h * q.k / sqrt(d)`` with each layer's ``content_factor`` buffer while the attention re-adapts, so the new
task is first learned through the (local) position term.
"""
from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Optional

from avalanche.core import SupervisedPlugin
from torch import nn

from ..layers import LPAttention, patch_attention_layers

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate

__all__ = ["SCHEDULES", "content_warmup", "set_content_factor", "LPAWarmupPlugin"]

SCHEDULES = ("linear", "cosine")


def content_warmup(progress: float, start_factor: float = 0.0, schedule: str = "linear") -> float:
    """The content-term factor after a fraction ``progress`` of the warm-up.

    Args:
        progress: completed fraction of the warm-up; values outside ``[0, 1]`` are clamped.
        start_factor: factor at ``progress == 0``.
        schedule: ``"linear"`` or ``"cosine"`` (half-cosine ease from ``start_factor`` to 1).

    Returns:
        ``start_factor + (1 - start_factor) * ramp(progress)``, exactly 1 once ``progress >= 1``.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown warm-up schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    progress = min(max(progress, 0.0), 1.0)
    ramp = progress if schedule == "linear" else 0.5 * (1.0 - math.cos(math.pi * progress))
    return start_factor + (1.0 - start_factor) * ramp


def set_content_factor(model: nn.Module, factor: float) -> int:
    """Sets ``content_factor`` of every LPA layer in ``model``; returns how many layers were set."""
    layers = patch_attention_layers(model, LPAttention)
    for layer in layers:
        layer.content_factor.fill_(factor)
    return len(layers)


class LPAWarmupPlugin(SupervisedPlugin, supports_distributed=True):
    """Ramps the LPA content term from ``start_factor`` to 1 at the start of each training experience.

    The factor for the ``i``-th iteration of an experience (0-based, counted by ``strategy.clock``) is
    ``content_warmup(i / n, start_factor, schedule)`` with ``n`` the warm-up length in iterations. Evaluation (also periodic evaluation
    inside training) always runs with factor 1, and the factor is 1 again when an experience ends. The plugin
    keeps only numbers, so it survives ``deepcopy`` and checkpointing; models without LPA layers (GPSA, MHSA)
    are left untouched with a single warning.

    The factor enters the model at the first training iteration (not in ``before_training_exp``) and is reset
    after the last epoch, before any ``after_training_exp`` callback, so a copy taken when an experience starts
    (the recipe's distillation teacher) or ends (LwF's teacher) sees 1 whatever the plugin order; only when
    training is stopped early does the copy at the end depend on this plugin being listed before the copying one.

    Args:
        start_factor: factor at the first iteration of an experience (0 switches the content term off).
        epochs: warm-up length in epochs (fractions allowed), converted with ``len(strategy.dataloader)``.
        iterations: warm-up length in iterations; overrides ``epochs`` when given.
        schedule: ``"linear"`` or ``"cosine"``.
        skip_first_experience: leave the first training experience alone (the LPA init already damps it).
    """

    def __init__(
        self,
        start_factor: float = 0.0,
        epochs: float = 1.0,
        iterations: Optional[int] = None,
        schedule: str = "linear",
        skip_first_experience: bool = False,
    ) -> None:
        super().__init__()
        if not 0.0 <= start_factor <= 1.0:
            raise ValueError(f"start_factor must lie in [0, 1], got {start_factor}")
        if epochs < 0 or (iterations is not None and iterations < 0):
            raise ValueError(f"the warm-up length must not be negative, got epochs={epochs}, iterations={iterations}")
        content_warmup(0.0, start_factor, schedule)  # validates the schedule name
        self.start_factor = start_factor
        self.epochs = epochs
        self.iterations = iterations
        self.schedule = schedule
        self.skip_first_experience = skip_first_experience
        self.active = False  # warming up in the current experience
        self.factor = 1.0  # factor of the latest training iteration
        self._warned = False

    def length(self, strategy: "SupervisedTemplate") -> int:
        """Warm-up length in iterations for the current experience."""
        if self.iterations is not None:
            return self.iterations
        return math.ceil(self.epochs * len(strategy.dataloader))

    def factor_at(self, iteration: int, total: int) -> float:
        """Factor of iteration ``iteration`` of a warm-up that lasts ``total`` iterations."""
        return 1.0 if total <= 0 else content_warmup(iteration / total, self.start_factor, self.schedule)

    def _apply(self, strategy: "SupervisedTemplate", factor: float) -> None:
        if set_content_factor(strategy.model, factor) == 0 and not self._warned:
            self._warned = True
            warnings.warn(
                f"LPAWarmupPlugin: {type(strategy.model).__name__} has no LPAttention layer; the plugin does "
                "nothing (expected for GPSA / plain-attention models)"
            )

    def before_training_exp(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        # The clock counts finished experiences, so 0 here means "this is the first one".
        first = strategy.clock.train_exp_counter == 0
        self.active = not (self.skip_first_experience and first)
        # The model keeps factor 1 until the first iteration: a copy other plugins take in this callback (the
        # distillation teacher) must be the previous experience's model as it is evaluated, whatever the order.
        self.factor = 1.0

    def before_training_iteration(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        if not self.active:
            return
        # Replay plugins may swap the dataloader in before_training_exp, so measure epochs here.
        total = self.length(strategy)
        iteration = strategy.clock.train_exp_iterations
        self.factor = self.factor_at(iteration, total)
        self.active = iteration < total
        self._apply(strategy, self.factor)

    def after_training_epoch(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        # Reset before any after_training_exp callback runs, so a model copy taken there (LwF's teacher)
        # sees factor 1 whatever the plugin order. The clock increments the epoch counter after us.
        if strategy.clock.train_exp_epochs + 1 >= strategy.train_epochs:
            self._finish(strategy)

    def after_training_exp(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        self._finish(strategy)

    def _finish(self, strategy: "SupervisedTemplate") -> None:
        self.active = False
        self.factor = 1.0
        self._apply(strategy, 1.0)

    def before_eval(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        # Periodic evaluation may interrupt a warm-up; the next training iteration sets its factor again.
        set_content_factor(strategy.model, 1.0)
