"""The authors' recipe as options and plugins: ``lpa`` / ``lpa_warmup`` (method ``raw``), ``dytox`` (the LPA authors'
DyTox) and ``dytox_douillard`` / ``dytox_plus_douillard`` (DyTox and DyTox+ as Douillard's own code trains them).

``RECIPE_OPTIONS`` are the recipe's own options with the authors' values, ``STRATEGY_DEFAULTS`` the common options
each recipe name sets to the authors' values, and :func:`recipe_plugins` composes the plugins; the common options'
plugins (lr schedule, precision, LPA warm-up) are :func:`common_plugins`, which every strategy name may use.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from avalanche.core import SupervisedPlugin
from avalanche.training.plugins import ReplayPlugin
from torch import nn

from ..plugins import (
    DYTOX_FINETUNE_FROZEN,
    AutocastPlugin,
    BalancedFinetuningPlugin,
    ConcatReplayPlugin,
    DivergenceHeadPlugin,
    ExperienceEpochsPlugin,
    ExperienceLRSchedulePlugin,
    LPAWarmupPlugin,
    OldSampleDistillationPlugin,
    RepeatedAugmentationPlugin,
    WeightedLwFPlugin,
    find_module,
    frozen_parameter_names,
    herding_memory,
)
from .sections import SECTIONS, resolve_section

__all__ = [
    "RECIPES",
    "DYTOX_NAMES",
    "RECIPE_OPTIONS",
    "DYTOX_OPTIONS",
    "DOUILLARD_OPTIONS",
    "DEPENDENT_OPTIONS",
    "PRESET_SWITCHES",
    "STRATEGY_DEFAULTS",
    "check_recipe",
    "check_recipe_model",
    "compose_options",
    "common_plugins",
    "dytox_model",
    "recipe_plugins",
]

#: The recipe's own options, with the authors' values (``main.py``, ``cifar_raw_lpa.yaml``).
RECIPE_OPTIONS: Dict[str, Any] = dict(
    mem_size=2000,  # exemplars in total, mem_size // n_seen_classes per class, iCaRL herding on CLS features
    memory_scope="global",  # under DDP: global | rank_shard (Douillard's) | rank_augmented (the authors' 2-GPU runs)
    replay_mode="concat",  # "concat" (memory added to the task's data) | "balanced_batches" (Avalanche's Replay)
    batch_size_mem=None,  # memory part of every batch (balanced_batches only)
    herding_layer="backbone",
    repeated_aug=3,  # DeiT's repeated augmentation (1: off)
    # Distillation from the previous model (OldSampleDistillationPlugin's arguments; false: off). Its defaults are
    # the authors': old samples only, temperature 1, on in finetuning; all_samples: true is Douillard's.
    distillation={},
    weighted_lwf=False,  # WeightedLwFPlugin's arguments instead (Avalanche's LwF weighted by old / seen classes)
    # Class-balanced finetuning on the memory after each task t > 0 (BalancedFinetuningPlugin's arguments; false:
    # off). Its defaults are the authors' values: 20 epochs at 5e-5, weight decay 1e-6, their freeze_ft [sab, tab]
    # frozen in training mode (their freeze sets eval, their engine's model.train() undoes it), their sampler.
    finetune={},
)

#: DyTox's recipe: the same, plus the divergence head's loss, and a finetuning that freezes only the encoder
#: (the authors' DyTox config: ``freeze_ft: [sab]``; the divergence head is off in finetuning, ``head_div_mode: tr``).
DYTOX_OPTIONS: Dict[str, Any] = dict(
    RECIPE_OPTIONS,
    divergence_weight=0.1,  # the authors' head_div (0: off)
    finetune={"frozen": DYTOX_FINETUNE_FROZEN},
)

#: Douillard's DyTox (arthurdouillard/dytox, ``options/model/cifar_dytox.yaml`` + ``main.py`` defaults): the DyTox
#: recipe with his distillation over every sample, finetuning without teacher or sampler at lr 5e-5 x 256 / 512.
DOUILLARD_OPTIONS: Dict[str, Any] = dict(
    DYTOX_OPTIONS,
    distillation={"all_samples": True, "finetuning": False},  # auto_kd (continual/engine.py); finetuning_teacher: off
    # finetuning_lr 5e-5 x batch 128 x 2 GPUs / 512 (main.py); ft_no_sampling: true (dataset order)
    finetune={"frozen": DYTOX_FINETUNE_FROZEN, "lr": 2.5e-5, "sampling": "none"},
)

#: Common options whose defaults a name overrides. ``lpa`` is the authors' recipe: global batch 256 = their 128
#: per GPU x 2; peak lr = their lr / 2; cosine of 600 epochs stepped per epoch, a fresh optimizer per task (the
#: fidelity table (docs/recipe.md) lists every element and the two small differences: herding's transform, repeated
#: augmentation's seeds); ``lpa_warmup`` adds our content warm-up to it.
AUTHORS = dict(
    lr=4e-4,
    weight_decay=1e-6,
    decay_embeddings=True,
    train_mb_size=256,
    train_epochs=600,
    epochs_first=500,
    lr_schedule=dict(  # ExperienceLRSchedulePlugin's arguments
        lr_first=2.5e-4,
        warmup_epochs=5.0,
        warmup_start_lr=1e-6,
        min_lr=1e-5,
        schedule_epochs=600.0,
        step="epoch",
        reset_optimizer_state=True,
    ),
    loss="bce",
    label_smoothing=0.1,
    mixup=0.8,
    lpa_warmup=False,
)
#: Douillard's CIFAR-100 schedule: lr = 5e-4 x batch 128 x 2 GPUs / 512 = 2.5e-4 on every task (``incremental_lr``
#: is 5e-4 too), 500 epochs on every task, timm cosine of 500 epochs (5 warm-up from 1e-6, min 1e-5), a fresh
#: AdamW (wd 1e-6) per task; BCE with hard targets (no mixup: no label smoothing either, ``bce_with_logits``).
DOUILLARD = dict(
    AUTHORS,
    lr=2.5e-4,
    lr_schedule={**AUTHORS["lr_schedule"], "lr_first": None, "schedule_epochs": 500.0},
    train_epochs=500,
    epochs_first=None,
    label_smoothing=0.0,
    mixup=0.0,
)
STRATEGY_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "lpa": AUTHORS,
    "lpa_warmup": {**AUTHORS, "lpa_warmup": {}},  # LPAWarmupPlugin's defaults
    "dytox": AUTHORS,  # the LPA authors' DyTox(+LPA) config trains with the same hyper-parameters
    "dytox_douillard": DOUILLARD,
    "dytox_plus_douillard": {**DOUILLARD, "mixup": 0.8, "label_smoothing": 0.1},  # cifar_dytox_plus.yaml: mixup 0.8
}

#: Names that build the recipe (and take its options).
RECIPES = ("lpa", "lpa_warmup", "dytox", "dytox_douillard", "dytox_plus_douillard")
#: The names that train a DyTox model (the runner builds ``dytox_<attn_type>_<preset>`` for them).
DYTOX_NAMES = ("dytox", "dytox_douillard", "dytox_plus_douillard")

#: Options that only mean something while a switch is in some state: ``(switch, resets, {dependent: value then})``.
#: A preset sets the dependents to its own values; when ``resets(switch's value)`` holds (a part switched off, or
#: ``weighted_lwf`` switched on) they are reset too, unless the caller set them (then the combination is refused
#: by the checks, naming the fix). A plugin's own arguments need no entry:
#: they live in its section (training/sections.py) and go with it.
DEPENDENT_OPTIONS = (
    ("loss", lambda value: value == "ce", {"mixup": 0.0, "cutmix": 0.0}),  # mixup needs soft targets (BCE)
    ("replay_mode", lambda value: value != "concat", {"repeated_aug": 1}),  # its sampler replaces the loader
    ("weighted_lwf", lambda value: value is not False, {"distillation": False}),  # one distillation at a time
)

#: The documented switches of the presets (``RECIPES``): each one (option, value) builds and trains on every
#: preset that has the option (tests/test_training.py). Toggles are listed both ways.
PRESET_SWITCHES = (
    ("lr_schedule", False),
    ("lr_schedule", {"step": "iteration"}),
    ("epochs_first", None),
    ("lr_schedule", {"reset_optimizer_state": False}),
    ("decay_embeddings", False),
    ("loss", "ce"),
    ("mixup", 0.0),
    ("mixup", 0.8),
    ("label_smoothing", 0.0),
    ("repeated_aug", 1),
    ("replay_mode", "balanced_batches"),
    ("memory_scope", "rank_shard"),
    ("memory_scope", "rank_augmented"),
    ("distillation", False),
    ("distillation", {"all_samples": False}),
    ("distillation", {"all_samples": True}),
    ("weighted_lwf", True),
    ("finetune", False),
    ("finetune", {"frozen_mode": "eval"}),
    ("finetune", {"frozen_mode": "train"}),
    ("distillation", {"finetuning": False}),
    ("distillation", {"finetuning": True}),
    ("finetune", {"sampling": "none"}),
    ("finetune", {"sampling": "repeated_aug"}),
    ("lpa_warmup", True),
    ("lpa_warmup", {"start_factor": 0.5, "schedule": "cosine"}),
    ("lpa_warmup", False),
    ("divergence_weight", 0.0),
)


def compose_options(defaults: Dict[str, Any], given: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    """``defaults`` updated with ``given``, every plugin section composed with the preset's and completed with its
    plugin's defaults (:func:`~.sections.resolve_section`), then every dependent of a switched-off switch reset
    unless given.

    Raises:
        OptionTypeError: a section's value or key is invalid (``prefix`` is shown before its name).
    """
    config = {**defaults, **given}
    for option in SECTIONS:
        if option in config:
            preset = defaults.get(option, False)
            config[option] = resolve_section(option, given[option] if option in given else preset, preset, prefix)
    for switch, resets, dependents in DEPENDENT_OPTIONS:
        if switch in config and resets(config[switch]):
            config.update({k: v for k, v in dependents.items() if k in config and k not in given})
    return config

def dytox_model(model: nn.Module, config: Dict[str, Any], n_classes: Optional[int]) -> Dict[str, Any]:
    """The registry's ``parts`` of the DyTox names: the model itself, which must be a DyTox model."""
    if not hasattr(model, "divergence_logits"):
        raise ValueError(
            f"the DyTox strategies ({', '.join(DYTOX_NAMES)}) need a DyTox model, got {type(model).__name__}: "
            "timm.create_model('dytox_lpa_cifar') "
            "(DyTox+LPA), 'dytox_gpsa_cifar' (DyTox) or avalanche_lpa.models.DyTox(...); in the runner use --model "
            "lpa, gpsa or mhsa (its encoder's attention), not a timm model"
        )
    return {"model": model}


def check_recipe(config: Dict[str, Any]) -> None:
    """Raises ``ValueError`` (one line) for recipe options that do not go together."""
    # The names of replay_mode, ... are checked with the option types (training/options.py).
    if config["distillation"] is not False and config["weighted_lwf"] is not False:
        raise ValueError("distillation and weighted_lwf are two distillations of one model; set one of them to false")
    if config["repeated_aug"] < 1:
        raise ValueError(f"repeated_aug must be at least 1 (1 = off), got {config['repeated_aug']}")
    if config["repeated_aug"] > 1 and config["replay_mode"] != "concat":
        raise ValueError("repeated_aug > 1 installs its own loader; it needs replay_mode='concat'")
    finetune = config["finetune"] or {}
    if finetune and finetune["epochs"] < 0:
        raise ValueError(f"finetune.epochs must be at least 0 (0 or finetune: false = off), got {finetune['epochs']}")
    if finetune and finetune["lr"] <= 0:
        raise ValueError(f"finetune.lr must be above 0, got {finetune['lr']}")


def check_recipe_model(config: Dict[str, Any], model: nn.Module) -> None:
    """The module names the recipe's options give, against the model it trains: refused when the strategy is
    built, not by herding after the first experience or by finetuning at the second.

    Raises:
        ValueError: ``herding_layer`` or a ``finetune.frozen`` prefix names nothing on ``model``.
    """
    try:
        find_module(model, config["herding_layer"])
    except ValueError as error:
        raise ValueError(f"herding_layer: {error}") from None
    if config["finetune"] and config["finetune"]["epochs"] > 0:
        frozen = config["finetune"]["frozen"]
        frozen_parameter_names(model, (frozen,) if isinstance(frozen, str) else tuple(frozen))


def common_plugins(config: Dict[str, Any]) -> List[SupervisedPlugin]:
    """Schedule plugins, in the order they must run (epochs before the lr schedule that depends on them)."""
    plugins: List[SupervisedPlugin] = []
    if config["epochs_first"] is not None:
        plugins.append(ExperienceEpochsPlugin(config["train_epochs"], config["epochs_first"]))
    if config["lr_schedule"]:
        plugins.append(ExperienceLRSchedulePlugin(config["lr"], **config["lr_schedule"]))
    if config["precision"] != "fp32":
        plugins.append(AutocastPlugin(config["precision"]))
    if config["lpa_warmup"]:
        plugins.append(LPAWarmupPlugin(**config["lpa_warmup"]))
    return plugins


def recipe_plugins(config: Dict[str, Any]) -> List[SupervisedPlugin]:
    """The recipe's plugins in callback order: loader, then replay (its memory update after the experience),
    then finetuning on that memory, then distillation (its teacher is copied before the next experience)."""
    memory = herding_memory(config["mem_size"], config["herding_layer"], scope=config["memory_scope"])
    plugins: List[SupervisedPlugin] = []
    if config["replay_mode"] == "concat":
        if config["repeated_aug"] > 1:
            plugins.append(RepeatedAugmentationPlugin(config["repeated_aug"]))
        plugins.append(ConcatReplayPlugin(memory))
    else:
        plugins.append(ReplayPlugin(config["mem_size"], batch_size_mem=config["batch_size_mem"], storage_policy=memory))
    if config["finetune"] and config["finetune"]["epochs"] != 0:  # a negative count: the plugin refuses it too
        plugins.append(BalancedFinetuningPlugin(memory, batch_size=config["train_mb_size"],
                                                repeats=config["repeated_aug"], **config["finetune"]))
    if config["distillation"] is not False:
        plugins.append(OldSampleDistillationPlugin(**config["distillation"]))
    elif config["weighted_lwf"] is not False:
        plugins.append(WeightedLwFPlugin(**config["weighted_lwf"]))
    if config.get("divergence_weight"):
        plugins.append(DivergenceHeadPlugin(config["divergence_weight"], loss=config["loss"]))
    return plugins
