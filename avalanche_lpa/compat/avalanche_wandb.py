"""Avalanche's WandBLogger on current wandb (avalanche-lib 0.5 / 0.6 with wandb 0.31).

* ``before_run`` calls ``wandb.util.generate_id()`` and ``log_single_metric`` reads ``wandb.viz.CustomChart``;
  wandb 0.31 has neither (``CustomChart`` moved to ``wandb.plot``), so the logger fails at its start or at the
  first metric with ``AttributeError``. :class:`CompatWandBLogger` gives it the module with both names back.
* Unpickling the logger (Avalanche's checkpoints pickle the strategy and its loggers) calls ``wandb.init``, and
  the logger never finishes its W&B run. :class:`CompatWandBLogger` unpickles inert (a resumed run logs through
  a fresh logger) and finishes its run in ``close()``.
"""
from __future__ import annotations

import types
import uuid
from typing import Any

from avalanche.logging import WandBLogger

__all__ = ["CompatWandBLogger"]


class _WandbModule:
    """The ``wandb`` module with the two names Avalanche's logger reads from older wandb releases."""

    def __init__(self, module: Any) -> None:
        self._module = module
        self.viz = types.SimpleNamespace(CustomChart=module.plot.CustomChart)
        self.util = types.SimpleNamespace(generate_id=lambda: uuid.uuid4().hex[:8])

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


class CompatWandBLogger(WandBLogger):
    """Avalanche's ``WandBLogger`` (same arguments), working on current wandb (see the module docstring)."""

    def import_wandb(self) -> None:
        super().import_wandb()
        if not hasattr(self.wandb, "viz"):
            self.wandb = _WandbModule(self.wandb)

    def __setstate__(self, state: dict) -> None:
        self.__dict__ = state
        self.wandb = None

    def close(self) -> None:
        """Finishes the W&B run (flushes an offline run's files)."""
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None
