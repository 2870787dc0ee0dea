"""Strategy builder, optimizer and augmentation helpers for the LPA training recipe."""
from .builder import COMMON_OPTIONS, STRATEGIES, build_strategy, strategy_options
from .optim import OPTIMIZERS, build_optimizer, multiple_param_groups_supported

__all__ = [
    "COMMON_OPTIONS",
    "OPTIMIZERS",
    "STRATEGIES",
    "build_optimizer",
    "build_strategy",
    "multiple_param_groups_supported",
    "strategy_options",
]
