"""The authors' per-experience learning-rate schedule: linear warm-up, then cosine decay, restarted per task.

:func:`scheduled_lr` is the whole schedule as one pure function; :class:`ExperienceLRSchedulePlugin` only
writes its value into the optimizer. Avalanche's ``LRSchedulerPlugin`` is not used on purpose: it resets the
lr to the scheduler's ``base_lrs`` after each experience (so the base lr cannot differ on later tasks) and
steps only after the first iteration, which skips the first warm-up value.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

from avalanche.core import SupervisedPlugin

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate

__all__ = ["scheduled_lr", "ExperienceLRSchedulePlugin", "ExperienceEpochsPlugin"]


def scheduled_lr(
    experience: int,
    iteration: int,
    total_iters: int,
    *,
    lr: float,
    lr_first: Optional[float] = None,
    warmup_iters: int = 0,
    min_lr: float = 1e-5,
    warmup_start_lr: float = 1e-6,
) -> float:
    """Learning rate of one iteration.

    Args:
        experience: index of the training experience (0 is the first one trained).
        iteration: 0-based iteration inside the experience.
        total_iters: iterations of the whole experience (all epochs).
        lr: peak learning rate of experiences after the first.
        lr_first: peak learning rate of experience 0 (``None``: ``lr``).
        warmup_iters: iterations of the linear warm-up from ``warmup_start_lr`` to the peak.
        min_lr: learning rate reached at the end of the cosine decay.
        warmup_start_lr: learning rate of iteration 0 when there is a warm-up.

    Returns:
        ``warmup_start_lr + (peak - warmup_start_lr) * iteration / warmup_iters`` during the warm-up, then
        ``min_lr + (peak - min_lr) * (1 + cos(pi * t)) / 2`` with ``t`` the fraction of the remaining
        iterations done (clamped to 1, so extra iterations stay at ``min_lr``).
    """
    peak = lr_first if experience == 0 and lr_first is not None else lr
    if iteration < warmup_iters:
        return warmup_start_lr + (peak - warmup_start_lr) * iteration / warmup_iters
    decay_iters = max(total_iters - warmup_iters, 1)
    progress = min((iteration - warmup_iters) / decay_iters, 1.0)
    return min_lr + (peak - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


class ExperienceLRSchedulePlugin(SupervisedPlugin, supports_distributed=True):
    """Sets the lr of every param group to :func:`scheduled_lr` before each training iteration.

    Lengths are given in epochs and converted with ``len(strategy.dataloader)`` once the experience's
    dataloader is final (replay plugins replace it in ``before_training_exp``). A param group's optional
    ``lr_scale`` entry (timm's convention) multiplies the scheduled value.

    Args:
        lr: peak lr of experiences after the first.
        lr_first: peak lr of the first experience (``None``: ``lr``).
        warmup_epochs: epochs of linear warm-up at the start of every experience.
        min_lr: final lr of the cosine decay.
        warmup_start_lr: lr at the first warm-up iteration.
    """

    def __init__(
        self,
        lr: float,
        lr_first: Optional[float] = None,
        warmup_epochs: float = 5.0,
        min_lr: float = 1e-5,
        warmup_start_lr: float = 1e-6,
    ) -> None:
        super().__init__()
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must not be negative, got {warmup_epochs}")
        self.lr = lr
        self.lr_first = lr_first
        self.warmup_epochs = warmup_epochs
        self.min_lr = min_lr
        self.warmup_start_lr = warmup_start_lr
        self.current_lr: Optional[float] = None  # last value written, for loggers and tests

    def lr_for(self, strategy: "SupervisedTemplate", iteration: int) -> float:
        """The scheduled lr of ``iteration`` in the current experience of ``strategy``."""
        iters_per_epoch = len(strategy.dataloader)
        return scheduled_lr(
            strategy.clock.train_exp_counter,
            iteration,
            strategy.train_epochs * iters_per_epoch,
            lr=self.lr,
            lr_first=self.lr_first,
            warmup_iters=math.ceil(self.warmup_epochs * iters_per_epoch),
            min_lr=self.min_lr,
            warmup_start_lr=self.warmup_start_lr,
        )

    def _set(self, strategy: "SupervisedTemplate", lr: float) -> None:
        self.current_lr = lr
        for group in strategy.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)

    def before_training_exp(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        # Set at once so nothing (e.g. a first-iteration hook) sees the previous experience's final lr.
        self._set(strategy, self.lr_for(strategy, 0))

    def before_training_iteration(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        self._set(strategy, self.lr_for(strategy, strategy.clock.train_exp_iterations))


class ExperienceEpochsPlugin(SupervisedPlugin, supports_distributed=True):
    """Trains the first experience for ``epochs_first`` epochs and later ones for ``epochs``.

    Avalanche strategies have one ``train_epochs``; the authors train task 1 for 500 epochs and later tasks
    for 600. The strategy reads ``train_epochs`` after ``before_training_exp``, so setting it there is enough.
    Place it before :class:`ExperienceLRSchedulePlugin`, whose schedule length depends on it.

    Args:
        epochs: epochs of every experience after the first.
        epochs_first: epochs of the first experience.
    """

    def __init__(self, epochs: int, epochs_first: int) -> None:
        super().__init__()
        if epochs < 1 or epochs_first < 1:
            raise ValueError(f"epochs must be positive, got epochs={epochs}, epochs_first={epochs_first}")
        self.epochs = epochs
        self.epochs_first = epochs_first

    def before_training_exp(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        strategy.train_epochs = self.epochs_first if strategy.clock.train_exp_counter == 0 else self.epochs
