"""Avalanche plugins of the LPA training recipe; each works with any Avalanche ``SupervisedTemplate``."""
from ..compat.avalanche_optimizer import WeightDecayGroupsPlugin
from ._sampling import RepeatedAugmentationSampler
from .criterion import SeenClassesBCE
from .distributed import DistributedModel, DistributedPlugin
from .distillation import (
    OldSampleDistillationPlugin,
    WeightedLwFPlugin,
    distillation_weight,
    old_sample_distillation,
)
from .divergence import DivergenceError, DivergenceGuardPlugin
from .divergence_head import DivergenceHeadPlugin, divergence_loss, divergence_targets
from .finetune import (
    DYTOX_FINETUNE_FROZEN,
    FINETUNE_FROZEN,
    FINETUNE_SAMPLINGS,
    FROZEN_MODES,
    BalancedFinetuningPlugin,
    balanced_indices,
    frozen_parameter_names,
    in_finetuning,
)
from .herding import (
    MEMORY_SCOPES,
    OLD_SCOPE_NAMES,
    HerdingMemory,
    ScopedHerdingSelection,
    find_module,
    herding_buffer,
    herding_memory,
    icarl_herding_order,
)
from .memory_census import MemoryCensusPlugin, exemplar_digests, memory_buffer
from .lr_schedule import LR_STEPS, ExperienceEpochsPlugin, ExperienceLRSchedulePlugin
from .phase_timer import PhaseTimerPlugin, install_phase_timer
from .precision import PRECISIONS, AutocastPlugin
from .replay import REPLAY_MODES, ConcatReplayPlugin, RepeatedAugmentationPlugin, update_memory
from .warmup import LPAWarmupPlugin, content_warmup, set_content_factor

__all__ = [
    "MemoryCensusPlugin",
    "exemplar_digests",
    "memory_buffer",
    "AutocastPlugin",
    "BalancedFinetuningPlugin",
    "ConcatReplayPlugin",
    "DistributedModel",
    "DistributedPlugin",
    "DYTOX_FINETUNE_FROZEN",
    "DivergenceError",
    "DivergenceHeadPlugin",
    "DivergenceGuardPlugin",
    "ExperienceEpochsPlugin",
    "ExperienceLRSchedulePlugin",
    "FINETUNE_FROZEN",
    "FINETUNE_SAMPLINGS",
    "FROZEN_MODES",
    "HerdingMemory",
    "MEMORY_SCOPES",
    "OLD_SCOPE_NAMES",
    "LPAWarmupPlugin",
    "LR_STEPS",
    "OldSampleDistillationPlugin",
    "PhaseTimerPlugin",
    "PRECISIONS",
    "REPLAY_MODES",
    "RepeatedAugmentationPlugin",
    "RepeatedAugmentationSampler",
    "ScopedHerdingSelection",
    "SeenClassesBCE",
    "WeightDecayGroupsPlugin",
    "WeightedLwFPlugin",
    "balanced_indices",
    "content_warmup",
    "distillation_weight",
    "divergence_loss",
    "divergence_targets",
    "find_module",
    "frozen_parameter_names",
    "herding_buffer",
    "herding_memory",
    "icarl_herding_order",
    "in_finetuning",
    "install_phase_timer",
    "old_sample_distillation",
    "set_content_factor",
    "update_memory",
]
