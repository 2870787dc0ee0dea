"""``build_strategy``: an Avalanche strategy, by name, from plain config values.

Every strategy is one of Avalanche's own classes; the LPA recipe is Avalanche's ``Naive`` template plus this
package's plugins on Avalanche's storage policies. Options are flat keyword arguments (what a YAML file
holds); :func:`strategy_options` lists the valid ones and their defaults for a name.

The names and what each builds are the registry (:mod:`~avalanche_lpa.training.registry`: one entry per name,
Avalanche class, options with defaults, the head and model it needs, how it takes our model apart and how the
trained network comes back: :func:`strategy_entry`); ``lpa`` and
``lpa_warmup`` build the authors' recipe (:mod:`~avalanche_lpa.training.recipe`): ``Naive`` + ``RepeatedAugmentationPlugin`` + ``ConcatReplayPlugin``
(``herding_memory``) + ``BalancedFinetuningPlugin`` + ``OldSampleDistillationPlugin`` +
``ExperienceEpochsPlugin`` / ``ExperienceLRSchedulePlugin`` + ``SeenClassesBCE`` (mixup 0.8, label smoothing
0.1); use it with per-experience heads (``LocalityViT(head_type="per_experience")``); ``lpa_warmup`` adds our
LPA content warm-up (``LPAWarmupPlugin``), not part of the authors' recipe; ``dytox`` builds the LPA authors' DyTox
on it, ``dytox_douillard`` / ``dytox_plus_douillard`` DyTox / DyTox+ as Douillard's code trains them.

Options that build one plugin are that plugin's own keyword arguments (:mod:`~avalanche_lpa.training.sections`):
``lr_schedule=False`` or ``lr_schedule={"lr_first": 2.5e-4, "min_lr": 1e-5}`` (merged into the preset's), so
switching the schedule off takes its ``lr_first`` with it. Presets compose: switching a part off resets the
options that only mean something with it (:data:`~avalanche_lpa.training.recipe.DEPENDENT_OPTIONS`:
``loss="ce"`` drops the preset's mixup, ``replay_mode="balanced_batches"`` its repeated augmentation) unless the
caller set them too.

Strategies that need parts of the model take them from :class:`~avalanche_lpa.models.LocalityViT`:
``model.feature_extractor`` (images to CLS features ``[B, embed_dim]``), ``model.classifier`` (the head) and
``model.embed_dim``. :func:`needs_fixed_head` says which names need ``num_classes=int``.

The schedule, warm-up and loss switches are common options, so any baseline can be trained with the
recipe's schedule (``lr_schedule=True``, ``lpa_warmup={"start_factor": 0.1}``, ``loss="bce"``, ...).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import torch
from avalanche.core import SupervisedPlugin
from avalanche.distributed import DistributedHelper
from avalanche.models import DynamicModule
from avalanche.training.plugins import EvaluationPlugin
from torch import nn

from ..models import PerExperienceHeads
from ..plugins import DivergenceGuardPlugin, SeenClassesBCE, WeightDecayGroupsPlugin
from .optim import build_optimizer
from .options import OptionTypeError, StrategyOptions, check_options, plain_values
from .recipe import (
    RECIPES, STRATEGY_DEFAULTS, check_recipe, check_recipe_model, common_plugins, compose_options, recipe_plugins,
)
from .registry import HEADS, SPECS, Spec, head_width
from .sections import MOVED_OPTIONS, SECTIONS

__all__ = [
    "STRATEGIES",
    "RECIPES",
    "HEADS",
    "COMMON_OPTIONS",
    "strategy_options",
    "strategy_class",
    "strategy_entry",
    "head_requirement",
    "needs_fixed_head",
    "trains_on_logits",
    "build_strategy",
    "divergence_hint",
    "resolve_options",
]

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
    # plugin sections (training/sections.py): false, or a mapping of the plugin's own keyword arguments
    lr_schedule=False,  # ExperienceLRSchedulePlugin: per-experience warm-up + cosine (timm's), lr_first, ...
    lpa_warmup=False,  # LPAWarmupPlugin: our LPA content warm-up
    # forward passes under torch.autocast (AutocastPlugin): "fp32" (off) | "bf16" | "fp16" (the loss scaled)
    precision="fp32",
    # classification loss: "ce" (cross-entropy) | "bce" (SeenClassesBCE, needed for mixup / cutmix)
    loss="ce",
    label_smoothing=0.0,
    mixup=0.0,
    cutmix=0.0,
)

#: Every name of :func:`build_strategy`.
STRATEGIES = tuple(SPECS)


def _spec(name: str) -> Spec:
    if name not in SPECS:
        raise ValueError(f"unknown strategy {name!r}; valid names: {', '.join(STRATEGIES)}")
    return SPECS[name]


def strategy_entry(name: str) -> Spec:
    """The registry entry of ``name``: what the runner asks about a strategy (the model family and head it needs,
    how the trained network comes back from it, whether it trains on the whole stream at once, ...).

    Raises:
        ValueError: an unknown name (the message lists the valid ones).
    """
    return _spec(name)


def strategy_options(name: str, given: Optional[Dict[str, Any]] = None, prefix: str = "") -> Dict[str, Any]:
    """Valid options of strategy ``name`` and their values: with ``given`` (options the caller sets) composed
    with the preset's (plugin sections merged and completed with their plugins' defaults, a switched-off part's
    dependents reset, see :func:`~avalanche_lpa.training.recipe.compose_options`).

    Raises:
        ValueError: an unknown name; :class:`~.options.OptionTypeError`: a section's value is invalid (``prefix``
            is shown before its name).
    """
    defaults = {**COMMON_OPTIONS, **STRATEGY_DEFAULTS.get(name, {}), **_spec(name).options}
    return compose_options(defaults, dict(given or {}), prefix)


def strategy_class(name: str) -> type:
    """The Avalanche strategy class ``name`` builds (``BiC``, ``EWC``, ``MAS``: our subclasses of Avalanche's, see
    :mod:`avalanche_lpa.compat.avalanche_strategies`)."""
    return _spec(name).cls


def head_requirement(name: str) -> str:
    """The head strategy ``name`` needs: ``"any"``, ``"fixed"`` or ``"single"`` (see :data:`HEADS`)."""
    return _spec(name).head


def trains_on_logits(name: str) -> bool:
    """Whether ``name``'s training outputs are class logits, so that a training accuracy means something."""
    return _spec(name).logits


def needs_fixed_head(name: str) -> bool:
    """Whether ``name`` needs a fixed head (``num_classes=<total classes>``); the runner asks this."""
    return _spec(name).head == "fixed"


#: Options that count something and must be at least 1 (``None`` allowed where it is the default).
POSITIVE_OPTIONS = ("train_mb_size", "eval_mb_size", "batch_size_mem", "train_epochs", "epochs_first", "mem_size",
                    "patterns_per_exp")


def _unknown(name: str, unknown: List[str], valid: Dict[str, Any], prefix: str) -> str:
    moved = [f"{key} is now {MOVED_OPTIONS[key][0]}={{{MOVED_OPTIONS[key][1]!r}: ...}}" for key in unknown
             if key in MOVED_OPTIONS and MOVED_OPTIONS[key][0] in valid]
    note = f" ({'; '.join(moved)})" if moved else ""
    if prefix:  # a config's section: the config's words
        return (f"unknown config key(s) {', '.join(unknown)} in {prefix.rstrip('.')!r}{note}; valid keys: "
                f"{', '.join(sorted(['name', *valid]))}")
    return f"unknown option(s) {', '.join(unknown)} for strategy {name!r}{note}; valid options: {', '.join(sorted(valid))}"


#: Options that are numbers above 0, and numbers of at least 0 (weights, rates), where a strategy takes them.
POSITIVE_NUMBERS = ("lr", "temperature", "base_temperature", "stage_2_lr")
NONNEGATIVE_NUMBERS = ("weight_decay", "momentum", "mixup", "cutmix", "alpha", "beta", "ewc_lambda", "si_lambda",
                       "lambda_reg", "lambda_e", "memory_strength", "divergence_weight", "gamma")
#: Options that are fractions: ``(low, high, high included)``.
FRACTIONS = {"label_smoothing": (0.0, 1.0, False), "val_percentage": (0.0, 1.0, False),
             "decay_factor": (0.0, 1.0, True)}


def _check_ranges(config: Dict[str, Any], prefix: str) -> None:
    for key in POSITIVE_OPTIONS:
        value = config.get(key)
        if value is not None and value < 1:
            raise OptionTypeError(f"{prefix}{key}: must be an integer of at least 1, got {value!r}")
    for keys, holds, meaning in ((POSITIVE_NUMBERS, lambda v: v > 0, "a number above 0"),
                                 (NONNEGATIVE_NUMBERS, lambda v: v >= 0, "a number of at least 0")):
        for key in keys:
            value = config.get(key)
            if isinstance(value, (int, float)) and not holds(value):
                raise OptionTypeError(f"{prefix}{key}: must be {meaning}, got {value!r}")
    for key, (low, high, closed) in FRACTIONS.items():
        value = config.get(key)
        if isinstance(value, (int, float)) and not (low <= value and (value <= high if closed else value < high)):
            bound = "]" if closed else ")"
            raise OptionTypeError(f"{prefix}{key}: must lie in [{low:g}, {high:g}{bound}, got {value!r}")
    if "ewc_mode" in config and (config["ewc_mode"] == "online") != (config.get("decay_factor") is not None):
        raise OptionTypeError(f"{prefix}ewc_mode: 'online' needs {prefix}decay_factor (e.g. 0.9), and a "
                              f"{prefix}decay_factor needs 'online'; got {config['ewc_mode']!r} and {config.get('decay_factor')!r}")


def _check_combinations(name: str, spec: Spec, config: Dict[str, Any]) -> None:
    if config["loss"] not in ("ce", "bce"):
        raise ValueError(f"loss must be 'ce' or 'bce', got {config['loss']!r}")
    if config["loss"] == "ce" and (config["mixup"] or config["cutmix"]):
        raise ValueError("mixup / cutmix need loss='bce' (soft targets)")
    if name in RECIPES:
        check_recipe(config)
    if spec.loss and (config["loss"] != "ce" or config["label_smoothing"]):
        raise ValueError(f"{name} uses {spec.loss}; leave loss, label_smoothing, mixup and cutmix unset")
    if not spec.trains and config["lr_schedule"]:
        raise ValueError(f"{name} trains no weights (no optimizer); leave lr_schedule unset")
    # The plugins that need no model, built once and dropped: their own checks of their arguments (a memory of -5
    # exemplars, a temperature of 0, ...) refuse a config here, where it is validated, not when the run starts.
    common_plugins(config)
    if name in RECIPES:
        recipe_plugins(config)


def resolve_options(name: str, given: Optional[Mapping[str, Any]] = None, *, prefix: str = "") -> StrategyOptions:
    """The options of strategy ``name``, resolved and checked once: ``given`` composed with the preset (plugin
    sections merged and completed with their plugins' defaults, a switched-off part's dependents reset), every
    type, range and combination checked. ``build_strategy`` takes the result as it is; a config holds it.

    Args:
        name: one of :data:`STRATEGIES`.
        given: the options the caller sets.
        prefix: shown before an option's name in errors (``"strategy."`` for a config's section).

    Raises:
        ValueError: an unknown name or option, or options that do not go together (:class:`~.options.OptionTypeError`
            for a value of the wrong type or range); one line.
    """
    spec = _spec(name)
    valid = strategy_options(name)
    given = dict(given or {})
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise ValueError(_unknown(name, unknown, valid, prefix))
    config = compose_options(valid, check_options(given, valid, prefix=prefix, skip=tuple(SECTIONS)), prefix)
    _check_ranges(config, prefix)
    _check_combinations(name, spec, config)
    return StrategyOptions(name, plain_values(config))


def divergence_hint(options: Mapping[str, Any], prefix: str = "") -> str:
    """What to lower when training with ``options`` diverges (the learning rates, by their names in ``prefix``)."""
    first = (options.get("lr_schedule") or {}).get("lr_first")
    if first is not None:
        return (f"lower {prefix}lr_schedule.lr_first / {prefix}lr (now {first:g} / {options['lr']:g}) or check the "
                "data for NaN/inf")
    return f"lower {prefix}lr (now {options['lr']:g}) or check the data for NaN/inf"


def _processes() -> int:
    """How many processes train together: torchrun's process group, 1 without one."""
    return DistributedHelper.world_size


def _criterion(config: Dict[str, Any]) -> Callable:
    if config["loss"] == "bce":
        return SeenClassesBCE(config["label_smoothing"], mixup_alpha=config["mixup"], cutmix_alpha=config["cutmix"])
    return nn.CrossEntropyLoss(label_smoothing=config["label_smoothing"])


def _check_head(name: str, spec: Spec, model: nn.Module) -> None:
    if spec.head == "fixed" and any(isinstance(m, DynamicModule) for m in model.modules()):
        raise ValueError(
            f"strategy {name!r} needs a fixed classifier ({spec.why}), but the model has a growing (Avalanche "
            "dynamic) head; build it with num_classes=<total number of classes>"
        )
    if spec.head == "single" and isinstance(getattr(model, "classifier", None), PerExperienceHeads):
        raise ValueError(
            f"strategy {name!r} needs one head over all classes ({spec.why}), not per-experience heads; build the "
            "model with head_type='incremental' or num_classes=<total number of classes>"
        )


def build_strategy(
    name: Union[str, StrategyOptions],
    model: nn.Module,
    *,
    optimizer: Optional[Union[torch.optim.Optimizer, str]] = None,
    plugins: Optional[Sequence[SupervisedPlugin]] = None,
    evaluator: Optional[Union[EvaluationPlugin, Callable[[], EvaluationPlugin]]] = None,
    device: Optional[Union[str, torch.device]] = None,
    num_classes: Optional[int] = None,
    divergence_guard: bool = True,
    **options: Any,
):
    """Builds the Avalanche strategy ``name`` around ``model``.

    Args:
        name: one of :data:`STRATEGIES`, or the :class:`~.options.StrategyOptions` of :func:`resolve_options` (a
            config's ``strategy``), taken as they are (then no ``**options``).
        model: the network; names whose :func:`head_requirement` is ``"fixed"`` need a fixed head
            (``num_classes=int``), ``"single"`` one head over all classes (not per-experience heads); names
            that take the model apart need ``feature_extractor``,
            ``classifier``, ``embed_dim``, ``img_size`` and ``in_chans`` (as
            :class:`~avalanche_lpa.models.LocalityViT` has).
        optimizer: an optimizer over ``model``, or the name of one to build (``"adamw"`` or ``"sgd"``; ``None``: the
            options' ``optimizer``, ``"adamw"`` by default) from
            the ``lr`` (the schedule's ``lr_first`` if set), ``weight_decay``, ``momentum`` and ``param_groups`` options
            (SCR's over its model: our feature extractor plus its projection; an optimizer you pass for SCR
            must cover that projection too, so prefer the name there).
        plugins: extra plugins, run after the recipe's own.
        evaluator: Avalanche evaluation plugin (or factory); ``None`` keeps Avalanche's default.
        device: ``None`` picks CUDA when available.
        num_classes: classes of the whole stream, when known (the runner passes it; a fixed head's width is
            used otherwise): lets checks that depend on it (ER_AML's memory) refuse before training.
        divergence_guard: add a :class:`~avalanche_lpa.plugins.DivergenceGuardPlugin` (last, after ``plugins``),
            so a non-finite loss or parameter raises :class:`~avalanche_lpa.plugins.DivergenceError` instead of
            training on NaNs; not added twice when ``plugins`` already holds one (the runner's, with its hint).
        **options: see :func:`strategy_options` (common options plus those of ``name``).

    Raises:
        ValueError: unknown name or option (the message lists the valid ones), or an invalid combination.
    """
    if isinstance(name, StrategyOptions):  # resolved once, where the config was validated
        if options:
            raise ValueError(f"build_strategy takes resolved options or keyword options, not both: {', '.join(options)}")
        resolved = name
    else:
        if isinstance(optimizer, str):  # a name is an option like the others (checked, and kept in the options)
            options["optimizer"] = optimizer
        resolved = resolve_options(name, options)
    name, config = resolved.name, dict(resolved)
    if optimizer is None:
        optimizer = config["optimizer"]
    spec = _spec(name)
    _check_head(name, spec, model)
    n_classes = num_classes or head_width(model)
    problem = spec.check(config, n_classes) if spec.check else None
    if problem:
        raise ValueError(problem)
    if spec.torchrun and _processes() > 1:
        raise ValueError(f"{name} does not train under torchrun ({_processes()} processes): {spec.torchrun}; "
                         "run it in one process")
    parts = spec.parts(model, config, n_classes)
    if name in RECIPES:
        check_recipe_model(config, parts.get("model", model))
    own: List[SupervisedPlugin] = spec.plugins()
    if isinstance(optimizer, str) and spec.trains:
        trained = parts.get("model", model)
        optimizer = build_optimizer(
            trained,
            optimizer,
            lr=config["lr"],  # the lr schedule, when on, sets the lr before every iteration
            weight_decay=config["weight_decay"],
            momentum=config["momentum"],
            param_groups=config["param_groups"],
            decay_embeddings=config["decay_embeddings"],
        )
        if len(optimizer.param_groups) > 1:  # keep new head parameters in the right group (avalanche-lib 0.6)
            skip = () if config["decay_embeddings"] else getattr(trained, "no_weight_decay", lambda: ())()
            own.append(WeightDecayGroupsPlugin(skip))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    recipe = recipe_plugins(config) if name in RECIPES else []
    all_plugins = own + common_plugins(config) + recipe + list(plugins or [])
    if divergence_guard and not any(isinstance(p, DivergenceGuardPlugin) for p in all_plugins):
        # Last: it checks the loss after every plugin has added its terms, and the parameters after finetuning.
        all_plugins.append(DivergenceGuardPlugin(hint=divergence_hint(config)))
    kwargs: Dict[str, Any] = dict(
        train_mb_size=config["train_mb_size"],
        train_epochs=config["train_epochs"],
        eval_mb_size=config["eval_mb_size"] or config["train_mb_size"],
        device=device,
        plugins=all_plugins,
        eval_every=config["eval_every"],
    )
    if spec.trains:
        kwargs["optimizer"] = optimizer
    if spec.loss is None:
        kwargs["criterion"] = _criterion(config)
    if evaluator is not None:
        kwargs["evaluator"] = evaluator
    for option in spec.options:
        argument = spec.rename.get(option, option)
        if argument is not None:
            kwargs[argument] = config[option]
    return spec.cls(**kwargs, **parts)
