"""Strategy builder (every Avalanche strategy by name), optimizer helper and fixes of Avalanche strategies."""
from .builder import (
    COMMON_OPTIONS,
    HEADS,
    RECIPES,
    STRATEGIES,
    build_strategy,
    divergence_hint,
    head_requirement,
    resolve_options,
    needs_fixed_head,
    trains_on_logits,
    strategy_class,
    strategy_entry,
    strategy_options,
)
from ..compat.avalanche_strategies import BiC, BiCPlugin, MemoryGuard
from .recipe import DEPENDENT_OPTIONS, DYTOX_NAMES, PRESET_SWITCHES
from .registry import DYTOX, LOCALITY_VIT, ModelFamily, Spec
from .optim import OPTIMIZERS, build_optimizer, multiple_param_groups_supported
from .options import StrategyOptions

__all__ = [
    "BiC",
    "BiCPlugin",
    "COMMON_OPTIONS",
    "DEPENDENT_OPTIONS",
    "DYTOX",
    "DYTOX_NAMES",
    "HEADS",
    "LOCALITY_VIT",
    "MemoryGuard",
    "ModelFamily",
    "OPTIMIZERS",
    "PRESET_SWITCHES",
    "RECIPES",
    "STRATEGIES",
    "Spec",
    "StrategyOptions",
    "build_optimizer",
    "build_strategy",
    "divergence_hint",
    "head_requirement",
    "multiple_param_groups_supported",
    "needs_fixed_head",
    "trains_on_logits",
    "strategy_class",
    "strategy_entry",
    "strategy_options",
    "resolve_options",
]
