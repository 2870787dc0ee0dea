"""Mixed precision for any Avalanche strategy: forward passes under ``torch.autocast``."""
from __future__ import annotations

from typing import Optional

import torch
from avalanche.core import SupervisedPlugin

__all__ = ["AutocastPlugin", "PRECISIONS"]

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class AutocastPlugin(SupervisedPlugin, supports_distributed=True):
    """Runs the model's forward passes (training and evaluation) under ``torch.autocast``.

    The loss, the backward pass and the optimizer step stay outside autocast, as PyTorch recommends. bf16
    needs no loss scaling; fp16 on CUDA would also need a ``GradScaler``, so it is offered for evaluation-only
    use and refused for training here.

    Args:
        precision: ``"bf16"`` or ``"fp16"`` (``"fp32"`` makes the plugin a no-op).
    """

    def __init__(self, precision: str = "bf16") -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        self.precision = precision
        self._context: Optional[torch.autocast] = None

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
        if self.precision == "fp16":
            raise ValueError("fp16 training needs loss scaling, which this plugin does not do; use bf16")
        device = torch.device(strategy.device)
        if self.precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError(f"bf16 autocast needs a GPU with bfloat16 (Ampere or newer); {device} has none: "
                             "use precision fp32 (--set strategy.precision=fp32)")

    def before_forward(self, strategy, **kwargs) -> None:
        self._enter(strategy)

    def after_forward(self, strategy, **kwargs) -> None:
        self._exit(strategy)

    def before_eval_forward(self, strategy, **kwargs) -> None:
        self._enter(strategy)

    def after_eval_forward(self, strategy, **kwargs) -> None:
        self._exit(strategy)

    def __getstate__(self):
        return {**self.__dict__, "_context": None}  # a live autocast context is not picklable
