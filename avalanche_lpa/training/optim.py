"""Optimizers for Avalanche strategies, with timm's weight-decay exclusions."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..compat.avalanche_optimizer import multiple_param_groups_supported
from ..compat.timm_optim import param_groups_weight_decay

__all__ = ["OPTIMIZERS", "multiple_param_groups_supported", "build_optimizer"]

OPTIMIZERS = ("adamw", "sgd")


def build_optimizer(
    model: nn.Module,
    name: str = "adamw",
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    param_groups: Optional[bool] = None,
    decay_embeddings: bool = False,
) -> torch.optim.Optimizer:
    """AdamW or SGD over ``model``; with param groups, no decay on 1-D params and ``model.no_weight_decay()``.

    Args:
        model: the model to optimise.
        name: ``"adamw"`` or ``"sgd"`` (with ``momentum``).
        lr: learning rate.
        weight_decay: decoupled (AdamW) or L2 (SGD) weight decay.
        momentum: SGD momentum.
        param_groups: split decay / no-decay params into two groups; ``None`` does so only where the
            installed Avalanche supports several groups (otherwise every param is decayed).
        decay_embeddings: decay the parameters ``model.no_weight_decay()`` names (position embedding, CLS
            token) too, as timm's ``create_optimizer`` does for the authors' model, which has no such method.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    if param_groups is None:
        param_groups = multiple_param_groups_supported()
    if param_groups and weight_decay > 0:
        skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") and not decay_embeddings else ()
        params = param_groups_weight_decay(model, weight_decay, no_weight_decay_list=skip)
    else:
        params = [{"params": list(model.parameters()), "weight_decay": weight_decay}]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum)
    return torch.optim.AdamW(params, lr=lr)
