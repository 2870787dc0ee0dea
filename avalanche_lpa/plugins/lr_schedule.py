"""The authors' per-experience learning-rate schedule: timm's cosine schedule with linear warm-up, built anew
for every training experience, and the different epoch count of the first experience.

The authors (``main.py``) create a fresh optimizer and ``timm.scheduler.create_scheduler`` at the start of every
task: a ``CosineLRScheduler`` whose length is the config's ``epochs`` (600, also on task 1, which trains only 500
epochs), 5 linear warm-up epochs from 1e-6, minimum 1e-5, stepped once per epoch with ``step(epoch)`` after
the epoch (so epoch ``e >= 1`` trains at the schedule's value of ``e - 1``). :class:`ExperienceLRSchedulePlugin`
builds the very same timm scheduler per experience, stepped per epoch like theirs or per iteration (smoother
for the few-epoch runs a CPU affords). Avalanche's ``LRSchedulerPlugin`` is not used: it resets the lr to the
scheduler's ``base_lrs`` after each experience (so the peak cannot differ on later tasks) and steps only
after the first iteration.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

from avalanche.core import SupervisedPlugin
from timm.scheduler import CosineLRScheduler

from .finetune import in_finetuning

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate

__all__ = ["LR_STEPS", "ExperienceLRSchedulePlugin", "ExperienceEpochsPlugin"]

#: How often :class:`ExperienceLRSchedulePlugin` steps timm's scheduler.
LR_STEPS = ("iteration", "epoch")


class ExperienceLRSchedulePlugin(SupervisedPlugin, supports_distributed=True):
    """timm's ``CosineLRScheduler`` (linear warm-up, then cosine), restarted at every training experience.

    At the start of an experience the peak lr of every param group becomes ``lr_first`` (experience 0) or
    ``lr`` (later ones) and the lr is set to the schedule's first value; the scheduler is built at the first
    epoch, once other plugins have installed the experience's final dataloader (its length converts epochs
    to iterations). A param group's ``lr_scale`` (timm's convention) multiplies the scheduled value. The
    finetuning phase of :class:`~avalanche_lpa.plugins.BalancedFinetuningPlugin` keeps its own lr.

    Args:
        lr: peak lr of the experiences after the first.
        lr_first: peak lr of the first experience (``None``: ``lr``).
        warmup_epochs: linear warm-up length in epochs (fractions allowed with ``step="iteration"``).
        min_lr: the cosine's final value.
        warmup_start_lr: lr at the start of the warm-up.
        schedule_epochs: length of the cosine in epochs (``None``: the experience's ``train_epochs``). The
            authors use 600 on every task, so task 1 (500 epochs) stops before the minimum.
        step: ``"epoch"`` (the authors': ``scheduler.step(e)`` after epoch ``e``) or ``"iteration"``
            (``scheduler.step_update(i)`` before iteration ``i``, lengths converted to iterations).
        reset_optimizer_state: clear the optimizer's state (Adam moments) at every experience, as the
            authors' fresh optimizer per task does.
    """

    def __init__(
        self,
        lr: float,
        lr_first: Optional[float] = None,
        warmup_epochs: float = 5.0,
        min_lr: float = 1e-5,
        warmup_start_lr: float = 1e-6,
        schedule_epochs: Optional[float] = None,
        step: str = "iteration",
        reset_optimizer_state: bool = False,
    ) -> None:
        super().__init__()
        if step not in LR_STEPS:
            raise ValueError(f"unknown lr step {step!r}; choose one of {', '.join(LR_STEPS)}")
        if warmup_epochs < 0 or (schedule_epochs is not None and schedule_epochs <= 0):
            raise ValueError(
                f"need warmup_epochs >= 0 and schedule_epochs > 0, got {warmup_epochs} and {schedule_epochs}"
            )
        if step == "epoch" and warmup_epochs != int(warmup_epochs):
            raise ValueError(f"step='epoch' needs whole warm-up epochs, got {warmup_epochs}; use step='iteration'")
        self.lr = lr
        self.lr_first = lr_first
        self.warmup_epochs = warmup_epochs
        self.min_lr = min_lr
        self.warmup_start_lr = warmup_start_lr
        self.schedule_epochs = schedule_epochs
        self.step = step
        self.reset_optimizer_state = reset_optimizer_state
        self._scheduler: Optional[CosineLRScheduler] = None  # of the current experience only

    def peak(self, experience: int) -> float:
        """The peak lr of training experience ``experience`` (0-based)."""
        return self.lr_first if experience == 0 and self.lr_first is not None else self.lr

    @property
    def current_lr(self) -> Optional[float]:
        """The lr the scheduler set last (``None`` outside an experience)."""
        return None if self._scheduler is None else self._scheduler.optimizer.param_groups[0]["lr"]

    def _build(self, strategy: "SupervisedTemplate") -> CosineLRScheduler:
        epochs = self.schedule_epochs if self.schedule_epochs is not None else strategy.train_epochs
        per_epoch = 1 if self.step == "epoch" else len(strategy.dataloader)
        return CosineLRScheduler(
            strategy.optimizer,
            t_initial=max(1, round(epochs * per_epoch)),
            lr_min=self.min_lr,
            warmup_t=math.ceil(self.warmup_epochs * per_epoch),
            warmup_lr_init=self.warmup_start_lr,
            t_in_epochs=self.step == "epoch",
        )

    def before_training_exp(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        if self.reset_optimizer_state:
            strategy.optimizer.state.clear()
        peak = self.peak(strategy.clock.train_exp_counter)
        first = self.warmup_start_lr if self.warmup_epochs > 0 else peak
        for group in strategy.optimizer.param_groups:
            group["initial_lr"] = peak  # timm's base value of the group
            group["lr"] = first * group.get("lr_scale", 1.0)  # before any other plugin's first iteration
        self._scheduler = None

    def before_training_epoch(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        if self._scheduler is None and not in_finetuning(strategy):
            self._scheduler = self._build(strategy)

    def before_training_iteration(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        if self.step == "iteration" and self._scheduler is not None and not in_finetuning(strategy):
            self._scheduler.step_update(num_updates=strategy.clock.train_exp_iterations)

    def after_training_epoch(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        # The clock (the last plugin) counts this epoch only after us: train_exp_epochs is its index.
        if self.step == "epoch" and self._scheduler is not None and not in_finetuning(strategy):
            self._scheduler.step(strategy.clock.train_exp_epochs)

    def after_training_exp(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        # Holds the optimizer; nothing of it is needed between experiences. A checkpoint taken inside an
        # experience pickles it (with the optimizer it steps), so a resumed epoch gets the very same lr.
        self._scheduler = None


class ExperienceEpochsPlugin(SupervisedPlugin, supports_distributed=True):
    """Trains the first experience for ``epochs_first`` epochs and later ones for ``epochs``.

    Avalanche strategies have one ``train_epochs``; the authors train task 1 for 500 epochs and later tasks
    for 600. The strategy reads ``train_epochs`` after ``before_training_exp``, so setting it there is enough.

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
