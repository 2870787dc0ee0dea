"""The authors' recipe as options and plugins: ``lpa`` / ``lpa_warmup`` (method ``raw``) and ``dytox``.

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
    DISTILLATIONS,
    DYTOX_FINETUNE_FROZEN,
    FINETUNE_FROZEN,
    REPLAY_MODES,
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
    herding_memory,
)

__all__ = [
    "RECIPES",
    "RECIPE_OPTIONS",
    "DYTOX_OPTIONS",
    "STRATEGY_DEFAULTS",
    "check_recipe",
    "common_plugins",
    "dytox_model",
    "recipe_plugins",
]

#: The recipe's own options, with the authors' values (``main.py``, ``cifar_raw_lpa.yaml``).
RECIPE_OPTIONS: Dict[str, Any] = dict(
    mem_size=2000,  # exemplars in total, mem_size // n_seen_classes per class, iCaRL herding on CLS features
    replay_mode="concat",  # "concat" (memory added to the task's data) | "balanced_batches" (Avalanche's Replay)
    batch_size_mem=None,  # memory part of every batch (balanced_batches only)
    herding_layer="backbone",
    repeated_aug=3,  # DeiT's repeated augmentation (1: off)
    distillation="old_samples",  # "old_samples" (the authors') | "weighted_lwf" | "none"
    temperature=1.0,
    finetune_epochs=20,  # class-balanced finetuning on the memory after each task t > 0 (0: off)
    finetune_lr=5e-5,
    finetune_weight_decay=1e-6,
    finetune_frozen=FINETUNE_FROZEN,  # the authors' freeze_ft: [sab, tab]
)

#: DyTox's recipe: the same, plus the divergence head's loss, and a finetuning that freezes only the encoder
#: (the authors' DyTox config: ``freeze_ft: [sab]``; the divergence head is off in finetuning, ``head_div_mode: tr``).
DYTOX_OPTIONS: Dict[str, Any] = dict(
    RECIPE_OPTIONS,
    divergence_weight=0.1,  # the authors' head_div (0: off)
    finetune_frozen=DYTOX_FINETUNE_FROZEN,
)

#: Common options whose defaults a name overrides. ``lpa`` is the authors' recipe: global batch 256 = their 128
#: per GPU x 2; peak lr = their lr / 2; cosine of 600 epochs stepped per epoch, a fresh optimizer per task (the
#: README's fidelity table lists every element and the two small differences: herding's transform, repeated
#: augmentation's seeds); ``lpa_warmup`` adds our content warm-up to it.
AUTHORS = dict(
    lr=4e-4,
    lr_first=2.5e-4,
    weight_decay=1e-6,
    decay_embeddings=True,
    train_mb_size=256,
    train_epochs=600,
    epochs_first=500,
    lr_schedule=True,
    lr_warmup_epochs=5.0,
    lr_warmup_start=1e-6,
    min_lr=1e-5,
    schedule_epochs=600.0,
    lr_step="epoch",
    reset_optimizer=True,
    loss="bce",
    label_smoothing=0.1,
    mixup=0.8,
    lpa_warmup=False,
)
STRATEGY_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "lpa": AUTHORS,
    "lpa_warmup": {**AUTHORS, "lpa_warmup": True},
    "dytox": AUTHORS,  # the authors' DyTox+LPA config trains with the same hyper-parameters
    "from_scratch": dict(reset_optimizer=True),  # Avalanche's default: a fresh optimizer with the fresh weights
}

#: Names that build the recipe (and take its options).
RECIPES = ("lpa", "lpa_warmup", "dytox")

def dytox_model(model: nn.Module, config: Dict[str, Any], n_classes: Optional[int]) -> Dict[str, Any]:
    """The registry's ``parts`` of ``dytox``: the model itself, which must be a DyTox model."""
    if not hasattr(model, "divergence_logits"):
        raise ValueError(
            f"strategy 'dytox' needs a DyTox model, got {type(model).__name__}: timm.create_model('dytox_lpa_cifar') "
            "(DyTox+LPA), 'dytox_gpsa_cifar' (DyTox) or avalanche_lpa.models.DyTox(...); in the runner use --model "
            "lpa, gpsa or mhsa (its encoder's attention), not a timm model"
        )
    return {"model": model}


def check_recipe(config: Dict[str, Any]) -> None:
    """Raises ``ValueError`` (one line) for recipe options that do not go together."""
    for key, valid in (("distillation", DISTILLATIONS), ("replay_mode", REPLAY_MODES)):
        if config[key] not in valid:
            raise ValueError(f"{key} must be one of {', '.join(valid)}, got {config[key]!r}")
    if config["repeated_aug"] < 1:
        raise ValueError(f"repeated_aug must be at least 1 (1 = off), got {config['repeated_aug']}")
    if config["repeated_aug"] > 1 and config["replay_mode"] != "concat":
        raise ValueError("repeated_aug > 1 installs its own loader; it needs replay_mode='concat'")


def common_plugins(config: Dict[str, Any]) -> List[SupervisedPlugin]:
    """Schedule plugins, in the order they must run (epochs before the lr schedule that depends on them)."""
    plugins: List[SupervisedPlugin] = []
    if config["epochs_first"] is not None:
        plugins.append(ExperienceEpochsPlugin(config["train_epochs"], config["epochs_first"]))
    if config["lr_schedule"]:
        plugins.append(
            ExperienceLRSchedulePlugin(
                config["lr"],
                lr_first=config["lr_first"],
                warmup_epochs=config["lr_warmup_epochs"],
                min_lr=config["min_lr"],
                warmup_start_lr=config["lr_warmup_start"],
                schedule_epochs=config["schedule_epochs"],
                step=config["lr_step"],
                reset_optimizer_state=config["reset_optimizer"],
            )
        )
    if config["precision"] != "fp32":
        plugins.append(AutocastPlugin(config["precision"]))
    if config["lpa_warmup"]:
        plugins.append(
            LPAWarmupPlugin(
                start_factor=config["lpa_warmup_start"],
                epochs=config["lpa_warmup_epochs"],
                iterations=config["lpa_warmup_iters"],
                schedule=config["lpa_warmup_schedule"],
                skip_first_experience=config["lpa_warmup_skip_first"],
            )
        )
    return plugins


def recipe_plugins(config: Dict[str, Any]) -> List[SupervisedPlugin]:
    """The recipe's plugins in callback order: loader, then replay (its memory update after the experience),
    then finetuning on that memory, then distillation (its teacher is copied before the next experience)."""
    memory = herding_memory(config["mem_size"], config["herding_layer"])
    plugins: List[SupervisedPlugin] = []
    if config["replay_mode"] == "concat":
        if config["repeated_aug"] > 1:
            plugins.append(RepeatedAugmentationPlugin(config["repeated_aug"]))
        plugins.append(ConcatReplayPlugin(memory))
    else:
        plugins.append(ReplayPlugin(config["mem_size"], batch_size_mem=config["batch_size_mem"], storage_policy=memory))
    if config["finetune_epochs"] > 0:
        frozen = config["finetune_frozen"]
        plugins.append(
            BalancedFinetuningPlugin(
                memory,
                epochs=config["finetune_epochs"],
                lr=config["finetune_lr"],
                weight_decay=config["finetune_weight_decay"],
                frozen=(frozen,) if isinstance(frozen, str) else tuple(frozen),
                batch_size=config["train_mb_size"],
                repeats=config["repeated_aug"],
            )
        )
    if config["distillation"] == "old_samples":
        plugins.append(OldSampleDistillationPlugin(temperature=config["temperature"]))
    elif config["distillation"] == "weighted_lwf":
        plugins.append(WeightedLwFPlugin(temperature=config["temperature"]))
    if config.get("divergence_weight"):
        plugins.append(DivergenceHeadPlugin(config["divergence_weight"], loss=config["loss"]))
    return plugins
