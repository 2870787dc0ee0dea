"""Strategy options that are one plugin each: ``false`` (off) or a mapping of that plugin's own keyword arguments.

``lr_schedule: {lr_first: 2.5e-4, min_lr: 1e-5}`` builds ``ExperienceLRSchedulePlugin(lr, lr_first=2.5e-4,
min_lr=1e-5)``; the keys, their types and their defaults are read from the plugin's signature, so a default is
stated once, where the plugin is written. Presets are partial mappings that compose: a mapping merges into the
preset's, ``true`` takes the preset's (or the plugin's defaults), ``false`` turns the plugin off with everything
in it (``lr_first`` lives inside ``lr_schedule``, so turning the schedule off cannot leave it behind).
"""
from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Sequence, Tuple, Union

from ..plugins import (
    FINETUNE_SAMPLINGS,
    FROZEN_MODES,
    LR_STEPS,
    BalancedFinetuningPlugin,
    ExperienceLRSchedulePlugin,
    LPAWarmupPlugin,
    OldSampleDistillationPlugin,
    WeightedLwFPlugin,
)
from ..plugins.warmup import SCHEDULES
from .options import OptionTypeError, check_type

__all__ = ["PluginSection", "SECTIONS", "MOVED_OPTIONS", "DISTILLATION_NAMES", "is_section", "resolve_section"]

#: A resolved section: ``False`` (off) or every keyword argument of the plugin.
Section = Union[bool, Dict[str, Any]]


@dataclass(frozen=True)
class PluginSection:
    """One strategy option that builds one plugin from its own keyword arguments.

    Args:
        plugin: the plugin class; its ``__init__`` keywords (less ``bound``) are the section's keys.
        bound: arguments the builder passes from other options (``lr`` of the lr schedule).
        choices: keys that take one of a few names.
        hint: added to the error for a value that is not false, true or a mapping (an older spelling's new one).
    """

    plugin: type
    bound: Tuple[str, ...] = ()
    choices: Mapping[str, Sequence[str]] = field(default_factory=dict)
    hint: str = ""

    def parameters(self) -> Dict[str, inspect.Parameter]:
        """The plugin's keyword arguments of the section, in signature order."""
        signature = inspect.signature(self.plugin.__init__)
        return {name: p for name, p in signature.parameters.items()
                if name != "self" and name not in self.bound and p.kind is p.POSITIONAL_OR_KEYWORD}

    def defaults(self) -> Dict[str, Any]:
        """Every key with the plugin's default."""
        return {name: p.default for name, p in self.parameters().items()}

    def types(self) -> Dict[str, Any]:
        """Every key's annotation, from the plugin's signature (``Optional[float]``, ``Sequence[str]``, ...)."""
        hints = typing.get_type_hints(self.plugin.__init__)
        return {name: hints[name] for name in self.parameters()}


#: The sections, by option name.
SECTIONS: Dict[str, PluginSection] = {
    "lr_schedule": PluginSection(ExperienceLRSchedulePlugin, bound=("lr",), choices={"step": LR_STEPS}),
    "lpa_warmup": PluginSection(LPAWarmupPlugin, choices={"schedule": SCHEDULES}),
    # The recipe's finetuning: the memory, batch and repeats come from the recipe (its memory, train_mb_size,
    # repeated_aug).
    "finetune": PluginSection(
        BalancedFinetuningPlugin, bound=("storage_policy", "batch_size", "repeats", "seed"),
        choices={"frozen_mode": FROZEN_MODES, "sampling": FINETUNE_SAMPLINGS},
    ),
    # The recipe's distillation from the previous model, or Avalanche's LwF weighted by old / seen classes.
    "distillation": PluginSection(
        OldSampleDistillationPlugin,
        hint="old_samples is true, all_samples is {all_samples: true}, none is false, weighted_lwf is weighted_lwf: true",
    ),
    "weighted_lwf": PluginSection(WeightedLwFPlugin),
}

#: The flat options of earlier versions and where they live now (``lr_first`` -> ``lr_schedule.lr_first``):
#: :func:`~avalanche_lpa.config.upgrade_config` reads old run folders' ``config.yaml`` with it.
MOVED_OPTIONS: Dict[str, Tuple[str, str]] = {
    "lr_first": ("lr_schedule", "lr_first"),
    "lr_warmup_epochs": ("lr_schedule", "warmup_epochs"),
    "lr_warmup_start": ("lr_schedule", "warmup_start_lr"),
    "min_lr": ("lr_schedule", "min_lr"),
    "schedule_epochs": ("lr_schedule", "schedule_epochs"),
    "lr_step": ("lr_schedule", "step"),
    "reset_optimizer": ("lr_schedule", "reset_optimizer_state"),
    "lpa_warmup_start": ("lpa_warmup", "start_factor"),
    "lpa_warmup_epochs": ("lpa_warmup", "epochs"),
    "lpa_warmup_iters": ("lpa_warmup", "iterations"),
    "lpa_warmup_schedule": ("lpa_warmup", "schedule"),
    "lpa_warmup_skip_first": ("lpa_warmup", "skip_first_experience"),
    "finetune_epochs": ("finetune", "epochs"),
    "finetune_lr": ("finetune", "lr"),
    "finetune_weight_decay": ("finetune", "weight_decay"),
    "finetune_frozen": ("finetune", "frozen"),
    "finetune_frozen_mode": ("finetune", "frozen_mode"),
    "finetune_sampling": ("finetune", "sampling"),
    "temperature": ("distillation", "temperature"),
    "finetune_teacher": ("distillation", "finetuning"),
}
#: The names ``distillation`` took before it was a plugin section: each one's sections.
DISTILLATION_NAMES: Dict[str, Dict[str, Any]] = {
    "old_samples": {"distillation": {"all_samples": False}, "weighted_lwf": False},
    "all_samples": {"distillation": {"all_samples": True}, "weighted_lwf": False},
    "weighted_lwf": {"distillation": False, "weighted_lwf": {}},
    "none": {"distillation": False, "weighted_lwf": False},
}


def is_section(option: str) -> bool:
    """Whether strategy option ``option`` is a plugin section."""
    return option in SECTIONS


def resolve_section(option: str, value: Any, preset: Any = False, prefix: str = "") -> Section:
    """``value`` given for section ``option`` composed with the preset's and completed with the plugin's defaults.

    Args:
        option: the section's name (``"lr_schedule"``).
        value: ``False`` / ``None`` (off), ``True`` (the preset's mapping, else the plugin's defaults) or a
            mapping of some of the plugin's keyword arguments (merged into the preset's mapping).
        preset: the preset's value of the option (``False`` or a partial mapping).
        prefix: shown before the key in errors (``"strategy."`` in a config).

    Raises:
        OptionTypeError: a value of another type, an unknown key (the message lists the valid ones).
    """
    section = SECTIONS[option]
    name = f"{prefix}{option}"
    if value is None or value is False:
        return False
    base = dict(preset) if isinstance(preset, Mapping) else {}
    if value is True:
        given: Dict[str, Any] = {}
    elif isinstance(value, Mapping):
        given = dict(value)
    else:
        raise OptionTypeError(
            f"{name}: expected false, true or a mapping of {section.plugin.__name__}'s arguments, got {value!r}"
            + (f" ({section.hint})" if section.hint else "")
        )
    defaults, types = section.defaults(), section.types()
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise OptionTypeError(
            f"unknown key(s) {', '.join(map(str, unknown))} in {name!r} ({section.plugin.__name__}'s arguments); "
            f"valid keys: {', '.join(defaults)}"
        )
    out = {**defaults, **base, **given}
    for key, choices in section.choices.items():
        if not isinstance(out[key], str) or out[key] not in choices:
            raise OptionTypeError(f"{name}.{key} must be one of {', '.join(choices)}, got {out[key]!r}")
    return {key: out[key] if key in section.choices else check_type(f"{name}.{key}", out[key], types[key])
            for key in defaults}
