"""Divergence guard for any Avalanche strategy: stop at the first non-finite loss or parameter."""
from __future__ import annotations

from typing import List

import torch
from avalanche.core import SupervisedPlugin

__all__ = ["DivergenceError", "DivergenceGuardPlugin"]


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss or non-finite parameters; the message is one line."""


class DivergenceGuardPlugin(SupervisedPlugin, supports_distributed=True):
    """Raises :class:`DivergenceError` as soon as training diverges, instead of training on NaNs.

    Checks the loss before every backward pass, the parameters after every ``param_check_every``-th update
    (one max-abs reduction per tensor, so the check costs a fraction of a training step) and all parameters
    after each training experience (plugins such as head finetuning train outside the iteration loop).
    Raising stops the strategy before anything after the failing step runs, so a runner that checkpoints
    after each experience keeps the last good checkpoint.

    Args:
        hint: the likely fix, appended to the message (e.g. ``"lower strategy.lr"``).
        param_check_every: check the parameters after every n-th update (1: every update).
    """

    def __init__(self, hint: str = "lower the learning rate", param_check_every: int = 1) -> None:
        super().__init__()
        if param_check_every < 1:
            raise ValueError(f"param_check_every must be at least 1, got {param_check_every}")
        self.hint = hint
        self.param_check_every = param_check_every

    @staticmethod
    def _where(strategy) -> str:
        # Avalanche's numbering (experience ids and iterations from 0), as its loggers print them.
        clock = strategy.clock
        return (
            f"experience {strategy.experience.current_experience}, epoch {clock.train_exp_epochs}, "
            f"iteration {clock.train_exp_iterations} (iteration {clock.train_iterations} of the run)"
        )

    def _fail(self, strategy, what: str) -> None:
        raise DivergenceError(f"training diverged at {self._where(strategy)}: {what}; {self.hint}")

    @staticmethod
    def _bad_parameters(model: torch.nn.Module) -> List[str]:
        named = [(n, p) for n, p in model.named_parameters() if p.numel()]
        if not named:
            return []
        with torch.no_grad():
            # inf-norm (max |x|): NaN/inf propagate, finite values never overflow into a false alarm.
            peaks = torch.stack([torch.linalg.vector_norm(p.detach().float(), ord=float("inf")) for _, p in named])
            if bool(torch.isfinite(peaks).all()):
                return []
            return [n for (n, _), ok in zip(named, torch.isfinite(peaks).tolist()) if not ok]

    def _check_parameters(self, strategy) -> None:
        bad = self._bad_parameters(strategy.model)
        if bad:
            total = sum(1 for _ in strategy.model.parameters())
            self._fail(strategy, f"{len(bad)} of {total} parameter tensors hold NaN/inf (first: {bad[0]})")

    def before_backward(self, strategy, **kwargs) -> None:
        loss = strategy.loss
        if torch.is_tensor(loss):
            finite = torch.isfinite(loss.detach())
            if not bool(finite.all()):
                self._fail(strategy, f"the loss is {loss.detach()[~finite].flatten()[0].item()}")

    def after_update(self, strategy, **kwargs) -> None:
        if strategy.clock.train_exp_iterations % self.param_check_every == 0:
            self._check_parameters(strategy)

    def after_training_exp(self, strategy, **kwargs) -> None:
        self._check_parameters(strategy)
