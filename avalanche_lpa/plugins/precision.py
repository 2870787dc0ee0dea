"""Mixed precision for any Avalanche strategy: forward passes under ``torch.autocast``; float16 with loss scaling."""
from __future__ import annotations

from typing import Any, Optional

import torch
from avalanche.core import SupervisedPlugin

__all__ = ["AutocastPlugin", "PRECISIONS"]

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class AutocastPlugin(SupervisedPlugin, supports_distributed=True):
    """Runs the model's forward passes (training and evaluation) under ``torch.autocast``.

    The loss, the backward pass and the optimizer step stay outside autocast, as PyTorch recommends. bfloat16 needs
    no loss scaling. float16 training scales the loss with a ``torch.amp.GradScaler`` (PyTorch's automatic mixed
    precision, what the authors' ImageNet-100 runs used): the loss is multiplied before the backward pass, the
    gradients divided again before the update, an update whose gradients overflowed is skipped (its gradients
    dropped) and the scale adapted after every update. Metrics and plugins read the loss unscaled.

    Args:
        precision: ``"bf16"`` or ``"fp16"`` (``"fp32"`` makes the plugin a no-op).
        init_scale: float16's initial loss scale (PyTorch's default).
    """

    def __init__(self, precision: str = "bf16", init_scale: float = 2.0**16) -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        self.precision = precision
        self.init_scale = init_scale
        self.scaler: Optional[torch.amp.GradScaler] = None
        self._context: Optional[torch.autocast] = None
        self._loss: Optional[torch.Tensor] = None

    def _enter(self, strategy) -> None:
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return
        self._context = torch.autocast(device_type=torch.device(strategy.device).type, dtype=dtype)
        self._context.__enter__()

    def _exit(self, strategy) -> None:
        if self._context is not None:
            self._context.__exit__(None, None, None)
            self._context = None
            # The loss is computed outside autocast: give it float32 logits.
            if torch.is_tensor(strategy.mb_output):
                strategy.mb_output = strategy.mb_output.float()

    def before_training_exp(self, strategy, **kwargs) -> None:
        device = torch.device(strategy.device)
        if self.precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError(f"bf16 autocast needs a GPU with bfloat16 (Ampere or newer); {device} has none: use "
                             "precision fp16 (loss-scaled) or fp32 (--set strategy.precision=fp16)")
        if self.precision == "fp16" and getattr(self, "scaler", None) is None:
            self.scaler = torch.amp.GradScaler(device.type, init_scale=self.init_scale)

    def before_forward(self, strategy, **kwargs) -> None:
        self._enter(strategy)

    def after_forward(self, strategy, **kwargs) -> None:
        self._exit(strategy)

    def before_eval_forward(self, strategy, **kwargs) -> None:
        self._enter(strategy)

    def after_eval_forward(self, strategy, **kwargs) -> None:
        self._exit(strategy)

    # -- float16's loss scaling --------------------------------------------------------------------------------
    def before_backward(self, strategy, **kwargs) -> None:
        if getattr(self, "scaler", None) is not None:
            self._loss = strategy.loss
            strategy.loss = self.scaler.scale(strategy.loss)

    def after_backward(self, strategy, **kwargs) -> None:
        if self._loss is not None:  # the loss as the metrics and the other plugins know it
            strategy.loss, self._loss = self._loss, None

    def before_update(self, strategy, **kwargs) -> None:
        if getattr(self, "scaler", None) is None:
            return
        self.scaler.unscale_(strategy.optimizer)
        params = [p for group in strategy.optimizer.param_groups for p in group["params"] if p.grad is not None]
        if any(not torch.isfinite(p.grad).all() for p in params):
            for p in params:  # an overflowed step is skipped, as GradScaler.step does: no gradient, no update
                p.grad = None

    def after_update(self, strategy, **kwargs) -> None:
        if getattr(self, "scaler", None) is not None:
            self.scaler.update()  # halves the scale after an overflow, grows it after a run of good steps

    def __getstate__(self) -> Any:
        return {**self.__dict__, "_context": None, "_loss": None}  # a live autocast context is not picklable
