"""``build_strategy``: an Avalanche strategy, by name, from plain config values.

Every strategy is one of Avalanche's own classes; the LPA recipe is Avalanche's ``Naive`` template plus this
package's plugins on Avalanche's storage policies. Options are flat keyword arguments (what a YAML file
holds); :func:`strategy_options` lists the valid ones and their defaults for a name.

==========  ==================================================================================================
name        builds
==========  ==================================================================================================
naive       ``Naive`` (finetuning, the lower bound)
replay      ``Replay``: random experience-balanced memory of ``mem_size``
lwf         ``LwF``: distillation weighted ``alpha`` at ``temperature``
icarl       ``ICaRL`` on ``model.feature_extractor`` / ``model.classifier`` (fixed head), herding memory, NCM
der         ``DER``: memory of samples and logits (fixed head)
ewc         ``EWC`` with ``ewc_lambda``, ``ewc_mode``
gem         ``GEM`` with ``patterns_per_exp``, ``memory_strength``
er_ace      ``ER_ACE``: replay with asymmetric cross-entropy
lpa         the authors' recipe (``raw`` method, ``cifar_raw_lpa.yaml``): ``Naive`` + ``RepeatedAugmentationPlugin``
            + ``ConcatReplayPlugin`` (``herding_memory``) + ``BalancedFinetuningPlugin`` +
            ``OldSampleDistillationPlugin`` + ``ExperienceEpochsPlugin`` / ``ExperienceLRSchedulePlugin`` +
            ``SeenClassesBCE`` (mixup 0.8, label smoothing 0.1); use it with per-experience heads
            (``LocalityViT(head_type="per_experience")``)
lpa_warmup  ``lpa`` plus our LPA content warm-up (``LPAWarmupPlugin``), not part of the authors' recipe
==========  ==================================================================================================

The schedule, warm-up and loss switches are common options, so any baseline can be trained with the
recipe's schedule (``lr_schedule=True``, ``lpa_warmup=True``, ``loss="bce"``, ...).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch
from avalanche.core import SupervisedPlugin
from avalanche.models import DynamicModule
from avalanche.training import DER, EWC, GEM, ER_ACE, ICaRL, LwF, Naive, Replay
from avalanche.training.plugins import EvaluationPlugin, ReplayPlugin
from torch import nn

from ..plugins import (
    DISTILLATIONS,
    FINETUNE_FROZEN,
    LR_STEPS,
    REPLAY_MODES,
    AutocastPlugin,
    BalancedFinetuningPlugin,
    ConcatReplayPlugin,
    ExperienceEpochsPlugin,
    ExperienceLRSchedulePlugin,
    LPAWarmupPlugin,
    OldSampleDistillationPlugin,
    RepeatedAugmentationPlugin,
    SeenClassesBCE,
    WeightDecayGroupsPlugin,
    WeightedLwFPlugin,
    herding_memory,
)
from .optim import build_optimizer

__all__ = ["STRATEGIES", "RECIPES", "COMMON_OPTIONS", "strategy_options", "build_strategy"]

#: Options every strategy accepts, with their defaults.
COMMON_OPTIONS: Dict[str, Any] = dict(
    # optimisation; `optimizer` is bound to build_strategy's own argument (a name or an Optimizer)
    optimizer="adamw",  # "adamw" | "sgd"
    lr=1e-3,
    weight_decay=0.0,
    momentum=0.9,
    param_groups=None,  # no decay on 1-D params / model.no_weight_decay(); None: where Avalanche allows
    decay_embeddings=False,  # decay model.no_weight_decay() too (position embedding, CLS token), as the authors
    train_mb_size=32,
    train_epochs=1,
    epochs_first=None,  # epochs of the first experience (None: train_epochs)
    eval_mb_size=None,
    eval_every=-1,
    # per-experience lr schedule (ExperienceLRSchedulePlugin: timm's cosine with linear warm-up)
    lr_schedule=False,
    lr_first=None,
    lr_warmup_epochs=5.0,
    lr_warmup_start=1e-6,
    min_lr=1e-5,
    schedule_epochs=None,  # cosine length in epochs (None: the experience's epochs)
    lr_step="iteration",  # "iteration" | "epoch" (the authors')
    reset_optimizer=False,  # fresh optimizer state (Adam moments) at every experience, as the authors
    # LPA content warm-up (LPAWarmupPlugin)
    lpa_warmup=False,
    lpa_warmup_start=0.0,
    lpa_warmup_epochs=1.0,
    lpa_warmup_iters=None,
    lpa_warmup_schedule="linear",
    lpa_warmup_skip_first=False,
    # forward passes under torch.autocast: "fp32" (off) | "bf16" (AutocastPlugin)
    precision="fp32",
    # classification loss: "ce" (cross-entropy) | "bce" (SeenClassesBCE, needed for mixup / cutmix)
    loss="ce",
    label_smoothing=0.0,
    mixup=0.0,
    cutmix=0.0,
)

#: Options specific to each strategy name, with their defaults.
_NAME_OPTIONS: Dict[str, Dict[str, Any]] = {
    "naive": {},
    "replay": dict(mem_size=2000),
    "lwf": dict(alpha=1.0, temperature=2.0),
    "icarl": dict(mem_size=2000, fixed_memory=True),
    "der": dict(mem_size=2000, batch_size_mem=None, alpha=0.1, beta=0.5),
    "ewc": dict(ewc_lambda=1.0, ewc_mode="separate", decay_factor=None),
    "gem": dict(patterns_per_exp=200, memory_strength=0.5),
    "er_ace": dict(mem_size=2000, batch_size_mem=10),
}
#: The recipe's own options, with the authors' values (``main.py``, ``cifar_raw_lpa.yaml``).
_RECIPE_OPTIONS: Dict[str, Any] = dict(
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
_NAME_OPTIONS["lpa"] = _NAME_OPTIONS["lpa_warmup"] = _RECIPE_OPTIONS

#: Common options whose defaults a name overrides. ``lpa`` is exactly the authors' recipe (global batch 256 =
#: their 128 per GPU x 2; peak lr = their lr / 2; cosine of 600 epochs stepped per epoch, a fresh optimizer per
#: task); ``lpa_warmup`` adds our content warm-up to it.
_AUTHORS = dict(
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
_STRATEGY_DEFAULTS: Dict[str, Dict[str, Any]] = {"lpa": _AUTHORS, "lpa_warmup": {**_AUTHORS, "lpa_warmup": True}}

#: Names that build the recipe (and take its options).
RECIPES = ("lpa", "lpa_warmup")

STRATEGIES = tuple(_NAME_OPTIONS)


def strategy_options(name: str) -> Dict[str, Any]:
    """Valid options of strategy ``name`` and their defaults."""
    if name not in _NAME_OPTIONS:
        raise ValueError(f"unknown strategy {name!r}; valid names: {', '.join(STRATEGIES)}")
    return {**COMMON_OPTIONS, **_STRATEGY_DEFAULTS.get(name, {}), **_NAME_OPTIONS[name]}


def _resolve(name: str, options: Dict[str, Any]) -> Dict[str, Any]:
    valid = strategy_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for strategy {name!r}; valid options: {', '.join(sorted(valid))}"
        )
    config = {**valid, **options}
    if config["loss"] not in ("ce", "bce"):
        raise ValueError(f"loss must be 'ce' or 'bce', got {config['loss']!r}")
    if config["loss"] == "ce" and (config["mixup"] or config["cutmix"]):
        raise ValueError("mixup / cutmix need loss='bce' (soft targets)")
    if config["lr_first"] is not None and not config["lr_schedule"]:
        raise ValueError("lr_first is the first experience's peak of the lr schedule; set lr_schedule=True")
    if config["lr_step"] not in LR_STEPS:
        raise ValueError(f"lr_step must be one of {', '.join(LR_STEPS)}, got {config['lr_step']!r}")
    if name in RECIPES:
        for key, valid in (("distillation", DISTILLATIONS), ("replay_mode", REPLAY_MODES)):
            if config[key] not in valid:
                raise ValueError(f"{key} must be one of {', '.join(valid)}, got {config[key]!r}")
        if config["repeated_aug"] < 1:
            raise ValueError(f"repeated_aug must be at least 1 (1 = off), got {config['repeated_aug']}")
        if config["repeated_aug"] > 1 and config["replay_mode"] != "concat":
            raise ValueError("repeated_aug > 1 installs its own loader; it needs replay_mode='concat'")
    return config


def _criterion(config: Dict[str, Any]) -> Callable:
    if config["loss"] == "bce":
        return SeenClassesBCE(config["label_smoothing"], mixup_alpha=config["mixup"], cutmix_alpha=config["cutmix"])
    return nn.CrossEntropyLoss(label_smoothing=config["label_smoothing"])


def _recipe_plugins(config: Dict[str, Any]) -> List[SupervisedPlugin]:
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


def _lpa_plugins(config: Dict[str, Any]) -> List[SupervisedPlugin]:
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
    return plugins


def _require_fixed_head(name: str, model: nn.Module) -> None:
    if any(isinstance(m, DynamicModule) for m in model.modules()):
        raise ValueError(
            f"strategy {name!r} needs a fixed classifier, but the model has a growing (Avalanche dynamic) head; "
            "build it with num_classes=<total number of classes>"
        )


def build_strategy(
    name: str,
    model: nn.Module,
    *,
    optimizer: Union[torch.optim.Optimizer, str] = "adamw",
    plugins: Optional[Sequence[SupervisedPlugin]] = None,
    evaluator: Optional[Union[EvaluationPlugin, Callable[[], EvaluationPlugin]]] = None,
    device: Optional[Union[str, torch.device]] = None,
    **options: Any,
):
    """Builds the Avalanche strategy ``name`` around ``model``.

    Args:
        name: one of :data:`STRATEGIES` (``naive, replay, lwf, icarl, der, ewc, gem, er_ace, lpa, lpa_warmup``).
        model: the network; ``icarl`` and ``der`` need a fixed head, ``icarl`` also ``feature_extractor``
            and ``classifier`` attributes (as :class:`~avalanche_lpa.models.LocalityViT` has).
        optimizer: an optimizer over ``model``, or the name of one to build (``"adamw"`` or ``"sgd"``) from
            the ``lr`` (``lr_first`` if set), ``weight_decay``, ``momentum`` and ``param_groups`` options.
        plugins: extra plugins, run after the recipe's own.
        evaluator: Avalanche evaluation plugin (or factory); ``None`` keeps Avalanche's default.
        device: ``None`` picks CUDA when available.
        **options: see :func:`strategy_options` (common options plus those of ``name``).

    Raises:
        ValueError: unknown name or option (the message lists the valid ones), or an invalid combination.
    """
    config = _resolve(name, options)
    own: List[SupervisedPlugin] = []
    if isinstance(optimizer, str):
        optimizer = build_optimizer(
            model,
            optimizer,
            lr=config["lr"],  # the lr schedule, when on, sets the lr before every iteration
            weight_decay=config["weight_decay"],
            momentum=config["momentum"],
            param_groups=config["param_groups"],
            decay_embeddings=config["decay_embeddings"],
        )
        if len(optimizer.param_groups) > 1:  # keep new head parameters in the right group (avalanche-lib 0.6)
            skip = () if config["decay_embeddings"] else getattr(model, "no_weight_decay", lambda: ())()
            own.append(WeightDecayGroupsPlugin(skip))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    recipe = _lpa_plugins(config) if name in RECIPES else []
    all_plugins = own + _recipe_plugins(config) + recipe + list(plugins or [])
    base: Dict[str, Any] = dict(
        optimizer=optimizer,
        train_mb_size=config["train_mb_size"],
        train_epochs=config["train_epochs"],
        eval_mb_size=config["eval_mb_size"] or config["train_mb_size"],
        device=device,
        plugins=all_plugins,
        eval_every=config["eval_every"],
    )
    if evaluator is not None:
        base["evaluator"] = evaluator

    if name == "icarl":
        _require_fixed_head(name, model)
        if config["loss"] != "ce" or config["label_smoothing"]:
            raise ValueError("icarl uses its own BCE loss; leave loss, label_smoothing, mixup and cutmix unset")
        if not (hasattr(model, "feature_extractor") and hasattr(model, "classifier")):
            raise ValueError("icarl needs a model with feature_extractor and classifier attributes (LocalityViT)")
        return ICaRL(
            feature_extractor=model.feature_extractor,
            classifier=model.classifier,
            memory_size=config["mem_size"],
            buffer_transform=None,
            fixed_memory=config["fixed_memory"],
            **base,
        )
    base.update(model=model, criterion=_criterion(config))
    if name in ("naive",) + RECIPES:
        return Naive(**base)
    if name == "replay":
        return Replay(mem_size=config["mem_size"], **base)
    if name == "lwf":
        return LwF(alpha=config["alpha"], temperature=config["temperature"], **base)
    if name == "ewc":
        return EWC(
            ewc_lambda=config["ewc_lambda"], mode=config["ewc_mode"], decay_factor=config["decay_factor"], **base
        )
    if name == "gem":
        return GEM(patterns_per_exp=config["patterns_per_exp"], memory_strength=config["memory_strength"], **base)
    if name == "der":
        _require_fixed_head(name, model)
        return DER(
            mem_size=config["mem_size"],
            batch_size_mem=config["batch_size_mem"],
            alpha=config["alpha"],
            beta=config["beta"],
            **base,
        )
    return ER_ACE(mem_size=config["mem_size"], batch_size_mem=config["batch_size_mem"], **base)
