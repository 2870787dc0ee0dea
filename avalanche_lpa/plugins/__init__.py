"""Avalanche plugins of the LPA training recipe; each works with any Avalanche ``SupervisedTemplate``."""
from .criterion import SeenClassesBCE
from .distillation import WeightedLwFPlugin, distillation_weight
from .divergence import DivergenceError, DivergenceGuardPlugin
from .finetune import BalancedFinetuningPlugin
from .herding import ScopedHerdingSelection, find_module, herding_buffer
from .precision import PRECISIONS, AutocastPlugin
from .lr_schedule import ExperienceEpochsPlugin, ExperienceLRSchedulePlugin, scheduled_lr
from .warmup import LPAWarmupPlugin, lpa_layers, set_warmup_factor, warmup_factor

__all__ = [
    "AutocastPlugin",
    "BalancedFinetuningPlugin",
    "DivergenceError",
    "DivergenceGuardPlugin",
    "ExperienceEpochsPlugin",
    "ExperienceLRSchedulePlugin",
    "LPAWarmupPlugin",
    "PRECISIONS",
    "ScopedHerdingSelection",
    "SeenClassesBCE",
    "WeightedLwFPlugin",
    "distillation_weight",
    "find_module",
    "herding_buffer",
    "lpa_layers",
    "scheduled_lr",
    "set_warmup_factor",
    "warmup_factor",
]
