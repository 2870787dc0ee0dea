"""``build_strategy``: an Avalanche strategy, by name, from plain config values.

Every strategy is one of Avalanche's own classes; the LPA recipe is Avalanche's ``Naive`` template plus this
package's plugins on Avalanche's storage policies. Options are flat keyword arguments (what a YAML file
holds); :func:`strategy_options` lists the valid ones and their defaults for a name.

The names and what each builds are the registry :data:`_SPECS` below (one entry per name: Avalanche
class, options with defaults, the head it needs, how it takes our model apart); ``lpa`` and ``lpa_warmup``
build the authors' recipe: ``Naive`` + ``RepeatedAugmentationPlugin`` + ``ConcatReplayPlugin``
(``herding_memory``) + ``BalancedFinetuningPlugin`` + ``OldSampleDistillationPlugin`` +
``ExperienceEpochsPlugin`` / ``ExperienceLRSchedulePlugin`` + ``SeenClassesBCE`` (mixup 0.8, label smoothing
0.1); use it with per-experience heads (``LocalityViT(head_type="per_experience")``); ``lpa_warmup`` adds our
LPA content warm-up (``LPAWarmupPlugin``), not part of the authors' recipe.

Strategies that need parts of the model take them from :class:`~avalanche_lpa.models.LocalityViT`:
``model.feature_extractor`` (images to CLS features ``[B, embed_dim]``), ``model.classifier`` (the head) and
``model.embed_dim``. :func:`needs_fixed_head` says which names need ``num_classes=int``.

The schedule, warm-up and loss switches are common options, so any baseline can be trained with the
recipe's schedule (``lr_schedule=True``, ``lpa_warmup=True``, ``loss="bce"``, ...).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch
from avalanche.core import SupervisedPlugin
from avalanche.models import DynamicModule, IncrementalClassifier, SCRModel
from avalanche.training import (
    AGEM,
    DER,
    ER_ACE,
    ER_AML,
    EWC,
    GEM,
    LFL,
    MAS,
    MER,
    MIR,
    SCR,
    CoPE,
    Cumulative,
    CWRStar,
    FeatureReplay,
    FromScratchTraining,
    GDumb,
    GSS_greedy,
    ICaRL,
    JointTraining,
    LwF,
    Naive,
    Replay,
    StreamingLDA,
    SynapticIntelligence,
)
from avalanche.training.losses import MaskedCrossEntropy
from avalanche.training.plugins import EvaluationPlugin, ReplayPlugin
from torch import nn
from torchvision.transforms import Compose, RandomHorizontalFlip, RandomResizedCrop

from ..models import PerExperienceHeads
from ..plugins import (
    DISTILLATIONS,
    DYTOX_FINETUNE_FROZEN,
    FINETUNE_FROZEN,
    LR_STEPS,
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
    SeenClassesBCE,
    WeightDecayGroupsPlugin,
    WeightedLwFPlugin,
    herding_memory,
)
from .fixes import REPLAY_LOADER_MEM_BATCH, BiC, MemoryGuard
from .optim import build_optimizer

__all__ = [
    "STRATEGIES",
    "RECIPES",
    "HEADS",
    "COMMON_OPTIONS",
    "strategy_options",
    "strategy_class",
    "head_requirement",
    "needs_fixed_head",
    "build_strategy",
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

#: DyTox's recipe: the same, plus the divergence head's loss, and a finetuning that freezes only the encoder
#: (the authors' DyTox config: ``freeze_ft: [sab]``; the divergence head is off in finetuning, ``head_div_mode: tr``).
_DYTOX_OPTIONS: Dict[str, Any] = dict(
    _RECIPE_OPTIONS,
    divergence_weight=0.1,  # the authors' head_div (0: off)
    finetune_frozen=DYTOX_FINETUNE_FROZEN,
)

#: Head requirements of the registry: ``any`` (growing or fixed), ``fixed`` (``num_classes=int``: a plain
#: ``nn.Linear``), ``single`` (one head over all classes: fixed or ``head_type="incremental"``, not
#: per-experience heads).
HEADS = ("any", "fixed", "single")

Parts = Callable[[nn.Module, Dict[str, Any], Optional[int]], Dict[str, Any]]
Check = Callable[[Dict[str, Any], Optional[int]], Optional[str]]


def _model(model: nn.Module, config: Dict[str, Any], n_classes: Optional[int]) -> Dict[str, Any]:
    return {"model": model}


@dataclass(frozen=True)
class _Spec:
    """How ``build_strategy`` builds one name.

    Attributes:
        cls: the Avalanche strategy class.
        options: the name's own options and defaults (passed to ``cls`` under the same name unless ``rename``
            maps them to another argument, or to ``None``: used by ``parts`` only).
        head: the head it needs (:data:`HEADS`).
        why: why it needs that head (for the error message).
        parts: the arguments taken from the model and the stream's class count, when known (default
            ``model=model``); a ``"model"`` entry is also what the optimizer is built over.
        loss: the strategy's own loss, when it ignores ours (``loss``, ``label_smoothing``, ... are refused).
        trains: whether it optimises weights (StreamingLDA does not: no optimizer, no lr schedule).
        check: the one-line problem of a config (and the stream's class count, when known), or ``None``.
        plugins: plugins the name always adds.
    """

    cls: type
    options: Dict[str, Any] = field(default_factory=dict)
    head: str = "any"
    why: str = ""
    rename: Dict[str, Optional[str]] = field(default_factory=dict)
    parts: Parts = _model
    loss: Optional[str] = None
    trains: bool = True
    check: Optional[Check] = None
    plugins: Callable[[], List[SupervisedPlugin]] = list


def _dytox_model(model: nn.Module, config: Dict[str, Any], n_classes: Optional[int]) -> Dict[str, Any]:
    if not hasattr(model, "divergence_logits"):
        raise ValueError(
            "strategy 'dytox' needs a DyTox model: timm.create_model('dytox_lpa_cifar') (DyTox+LPA), "
            "'dytox_gpsa_cifar' (DyTox) or avalanche_lpa.models.DyTox(...)"
        )
    return {"model": model}


def _part(model: nn.Module, name: str, attribute: str) -> Any:
    if not hasattr(model, attribute):
        raise ValueError(
            f"strategy {name!r} needs model.{attribute}; build the model as a LocalityViT (which has "
            "feature_extractor, classifier and embed_dim) or use another strategy"
        )
    return getattr(model, attribute)


def _head_width(model: nn.Module) -> Optional[int]:
    """Classes of a fixed linear head (``None`` for growing or missing heads)."""
    head = getattr(model, "classifier", None)
    return head.out_features if isinstance(head, nn.Linear) else None


def _icarl(model: nn.Module, config: Dict[str, Any], n_classes: Optional[int]) -> Dict[str, Any]:
    return dict(
        feature_extractor=_part(model, "icarl", "feature_extractor"),
        classifier=_part(model, "icarl", "classifier"),
        buffer_transform=None,
    )


def _cwr(model: nn.Module, config: Dict[str, Any], n_classes: Optional[int]) -> Dict[str, Any]:
    # CWR* rewrites rows of one linear layer by class id: a fixed head's, or the Linear inside the growing
    # IncrementalClassifier (looked up by name each time, so it follows the head as it grows).
    head = _part(model, "cwr", "classifier")
    if isinstance(head, nn.Linear):
        return dict(model=model, cwr_layer_name="classifier")
    if isinstance(head, IncrementalClassifier):
        return dict(model=model, cwr_layer_name="classifier.classifier")
    raise ValueError(
        f"strategy 'cwr' needs a head whose rows are the class ids, got {type(head).__name__}; build the model "
        "with num_classes=<total classes> or head_type='incremental'"
    )


def _scr(model: nn.Module, config: Dict[str, Any], n_classes: Optional[int]) -> Dict[str, Any]:
    # SCR trains the backbone through a projection MLP (contrastive loss) and classifies by nearest class mean.
    width = _part(model, "scr", "embed_dim")
    projection = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, config["projection_dim"]))
    size = tuple(_part(model, "scr", "img_size"))
    # Applied to the whole batch tensor: a second, augmented view of every image (SCR's positive pairs).
    views = Compose([RandomResizedCrop(size, scale=(0.2, 1.0), antialias=True), RandomHorizontalFlip()])
    return dict(
        model=SCRModel(_part(model, "scr", "feature_extractor"), projection),
        augmentations=views if config["augment"] else Compose([]),
    )


def _slda(model: nn.Module, config: Dict[str, Any], n_classes: Optional[int]) -> Dict[str, Any]:
    # SLDA never uses the head: it fits class means and a shared covariance on the feature extractor's output.
    if not n_classes:
        raise ValueError(
            "strategy 'slda' needs the number of classes of the stream: pass build_strategy(..., num_classes=<total "
            "classes>) or build the model with num_classes=<total classes>"
        )
    return dict(
        slda_model=_part(model, "slda", "feature_extractor"),
        input_size=_part(model, "slda", "embed_dim"),
        num_classes=n_classes,
        criterion=nn.CrossEntropyLoss(),  # only reported: SLDA fits class means and a shared covariance
    )


def _gss(model: nn.Module, config: Dict[str, Any], n_classes: Optional[int]) -> Dict[str, Any]:
    return dict(model=model, input_size=[_part(model, "gss", "in_chans"), *_part(model, "gss", "img_size")])


def _er_aml(model: nn.Module, config: Dict[str, Any], n_classes: Optional[int]) -> Dict[str, Any]:
    return dict(model=model, feature_extractor=_part(model, "er_aml", "feature_extractor"))


def _cope(model: nn.Module, config: Dict[str, Any], n_classes: Optional[int]) -> Dict[str, Any]:
    # CoPE turns the fixed head into an L2-normalised embedding of its width, one prototype per class.
    if not _head_width(model):
        raise ValueError("strategy 'cope' needs a fixed linear head (model.classifier); build the model with "
                         "num_classes=<total number of classes>")
    width = _head_width(model)
    return dict(model=model, n_classes=width, p_size=width, criterion=nn.CrossEntropyLoss())  # replaced by its loss


def _feature_replay(model: nn.Module, config: Dict[str, Any], n_classes: Optional[int]) -> Dict[str, Any]:
    # A fresh MaskedCrossEntropy per strategy: FeatureReplay's default is one instance made at import
    # (avalanche-lib 0.5.0, 0.6.0) that remembers the classes it has seen, so a second FeatureReplay in the same
    # process would mask columns its new head does not have yet (IndexError).
    return dict(model=model, criterion=MaskedCrossEntropy())


def _check_gss(config: Dict[str, Any], n_classes: Optional[int]) -> Optional[str]:
    # GSS_greedy scores a batch against memory subsets of the batch's size: a batch larger than the memory gets
    # none and fails with "max() arg is an empty sequence". Later batches hold train_mb_size images plus the
    # replay loader's memory batch of 32 (GSS leaves it unset).
    least = config["train_mb_size"] + REPLAY_LOADER_MEM_BATCH
    if config["mem_size"] < least:
        return (
            f"gss needs mem_size >= train_mb_size + {REPLAY_LOADER_MEM_BATCH} = {least} (its batches hold "
            f"train_mb_size images plus a memory batch of {REPLAY_LOADER_MEM_BATCH}), got mem_size="
            f"{config['mem_size']}; raise mem_size or lower train_mb_size"
        )
    return None


def _check_er_aml(config: Dict[str, Any], n_classes: Optional[int]) -> Optional[str]:
    # See MemoryGuard: every class needs train_mb_size images in the class-balanced memory.
    if n_classes is not None and config["mem_size"] // n_classes < config["train_mb_size"]:
        return (
            f"er_aml needs mem_size >= train_mb_size x classes = {config['train_mb_size'] * n_classes} (a batch of "
            f"every class from its class-balanced memory; it hangs otherwise), got mem_size={config['mem_size']}; "
            "raise mem_size or lower train_mb_size"
        )
    return None


def _check_feature_replay(config: Dict[str, Any], n_classes: Optional[int]) -> Optional[str]:
    # FeatureReplay cycles a drop_last loader of batch_size_mem over its memory: a smaller memory never yields.
    batch = config["batch_size_mem"] or config["train_mb_size"]
    if config["mem_size"] < batch:
        return (
            f"feature_replay needs mem_size >= batch_size_mem = {batch} (it hangs otherwise), got mem_size="
            f"{config['mem_size']}; raise mem_size or lower batch_size_mem"
        )
    return None


_SPECS: Dict[str, _Spec] = {
    # -- the original names (their options, defaults and behaviour are unchanged) ----------------------------
    "naive": _Spec(Naive),
    "replay": _Spec(Replay, dict(mem_size=2000)),
    "lwf": _Spec(LwF, dict(alpha=1.0, temperature=2.0)),
    # Avalanche's ICaRL also trains with a growing head (avalanche-lib 0.5.0, 0.6.0: tests/test_strategies.py);
    # build_strategy keeps the paper's fixed output layer, as it always has.
    "icarl": _Spec(
        ICaRL, dict(mem_size=2000, fixed_memory=True), head="fixed", why="the paper's fixed output layer",
        rename=dict(mem_size="memory_size"), parts=_icarl, loss="its own BCE loss",
    ),
    "der": _Spec(
        DER, dict(mem_size=2000, batch_size_mem=None, alpha=0.1, beta=0.5), head="fixed",
        why="its memory stores logits of the head's width",
    ),
    "ewc": _Spec(EWC, dict(ewc_lambda=1.0, ewc_mode="separate", decay_factor=None), rename=dict(ewc_mode="mode")),
    "gem": _Spec(GEM, dict(patterns_per_exp=200, memory_strength=0.5)),
    "er_ace": _Spec(ER_ACE, dict(mem_size=2000, batch_size_mem=10)),
    "lpa": _Spec(Naive, _RECIPE_OPTIONS, rename={key: None for key in _RECIPE_OPTIONS}),
    "lpa_warmup": _Spec(Naive, _RECIPE_OPTIONS, rename={key: None for key in _RECIPE_OPTIONS}),
    "dytox": _Spec(Naive, _DYTOX_OPTIONS, rename={key: None for key in _DYTOX_OPTIONS}, parts=_dytox_model),
    # -- the rest of avalanche.training ------------------------------------------------------------------
    "agem": _Spec(AGEM, dict(patterns_per_exp=200, sample_size=64)),
    "si": _Spec(SynapticIntelligence, dict(si_lambda=1.0, eps=1e-7)),
    "mas": _Spec(MAS, dict(lambda_reg=1.0, alpha=0.5)),
    "mir": _Spec(
        MIR, dict(mem_size=2000, subsample=50, batch_size_mem=10), head="single",
        why="it differentiates every parameter, and per-experience heads freeze the old ones",
    ),
    "gdumb": _Spec(
        GDumb, dict(mem_size=2000), head="single",
        why="it retrains from the initial weights, where per-experience heads keep the old heads frozen",
    ),
    "cumulative": _Spec(Cumulative),
    "joint": _Spec(
        JointTraining, head="single",
        why="it adapts the model to every experience first, and per-experience heads would freeze all but the last",
    ),
    # FromScratchTraining takes the common option reset_optimizer (default True here, as Avalanche's).
    "from_scratch": _Spec(FromScratchTraining, parts=lambda model, config, n_classes: dict(
        model=model, reset_optimizer=config["reset_optimizer"])),
    "bic": _Spec(
        BiC, dict(mem_size=2000, val_percentage=0.1, temperature=2.0, stage_2_epochs=200, lamb=-1.0, stage_2_lr=0.1),
        rename=dict(temperature="T", stage_2_lr="lr"),
    ),
    "lfl": _Spec(LFL, dict(lambda_e=1.0)),
    "cwr": _Spec(CWRStar, head="single", why="it rewrites the rows of one linear layer by class id", parts=_cwr),
    "scr": _Spec(
        SCR, dict(mem_size=2000, batch_size_mem=100, temperature=0.1, projection_dim=128, augment=True),
        rename=dict(projection_dim=None, augment=None), parts=_scr,
        loss="its own supervised contrastive loss (and a nearest-class-mean classifier)",
    ),
    "slda": _Spec(
        StreamingLDA, dict(shrinkage_param=1e-4, streaming_update_sigma=True), parts=_slda,
        loss="no loss (it fits class means on the frozen features)", trains=False,
    ),
    "gss": _Spec(
        GSS_greedy, dict(mem_size=2000, mem_strength=1), parts=_gss, check=_check_gss,
        plugins=lambda: [MemoryGuard("gss")],
    ),
    "er_aml": _Spec(
        ER_AML, dict(mem_size=2000, batch_size_mem=10, temperature=0.1, base_temperature=0.07, same_task_neg=True),
        rename=dict(temperature="temp", base_temperature="base_temp"), parts=_er_aml, check=_check_er_aml,
        plugins=lambda: [MemoryGuard("er_aml")],
    ),
    "feature_replay": _Spec(
        FeatureReplay, dict(mem_size=2000, batch_size_mem=10), parts=_feature_replay,
        loss="its own masked cross-entropy", check=_check_feature_replay,
        plugins=lambda: [MemoryGuard("feature_replay")],
    ),
    "cope": _Spec(
        CoPE, dict(mem_size=2000, alpha=0.99, temperature=0.1), head="fixed", rename=dict(temperature="T"),
        why="its prototypes have the head's width",
        parts=_cope, loss="its own pseudo-prototypical proxy loss",
    ),
    "mer": _Spec(MER, dict(mem_size=2000, batch_size_mem=10, n_inner_steps=5, beta=0.1, gamma=0.1)),
}

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
_STRATEGY_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "lpa": _AUTHORS,
    "lpa_warmup": {**_AUTHORS, "lpa_warmup": True},
    "dytox": _AUTHORS,  # the authors' DyTox+LPA config trains with the same hyper-parameters
    "from_scratch": dict(reset_optimizer=True),  # Avalanche's default: a fresh optimizer with the fresh weights
}

#: Names that build the recipe (and take its options).
RECIPES = ("lpa", "lpa_warmup", "dytox")

#: Every name of :func:`build_strategy`.
STRATEGIES = tuple(_SPECS)


def _spec(name: str) -> _Spec:
    if name not in _SPECS:
        raise ValueError(f"unknown strategy {name!r}; valid names: {', '.join(STRATEGIES)}")
    return _SPECS[name]


def strategy_options(name: str) -> Dict[str, Any]:
    """Valid options of strategy ``name`` and their defaults."""
    return {**COMMON_OPTIONS, **_STRATEGY_DEFAULTS.get(name, {}), **_spec(name).options}


def strategy_class(name: str) -> type:
    """The Avalanche strategy class ``name`` builds (``BiC``: our fix of Avalanche's, a subclass of it)."""
    return _spec(name).cls


def head_requirement(name: str) -> str:
    """The head strategy ``name`` needs: ``"any"``, ``"fixed"`` or ``"single"`` (see :data:`HEADS`)."""
    return _spec(name).head


def needs_fixed_head(name: str) -> bool:
    """Whether ``name`` needs a fixed head (``num_classes=<total classes>``); the runner asks this."""
    return _spec(name).head == "fixed"


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
    spec = _SPECS[name]
    if spec.loss and (config["loss"] != "ce" or config["label_smoothing"]):
        raise ValueError(f"{name} uses {spec.loss}; leave loss, label_smoothing, mixup and cutmix unset")
    if not spec.trains and config["lr_schedule"]:
        raise ValueError(f"{name} trains no weights (no optimizer); leave lr_schedule unset")
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
    if config.get("divergence_weight"):
        plugins.append(DivergenceHeadPlugin(config["divergence_weight"], loss=config["loss"]))
    return plugins


def _check_head(name: str, spec: _Spec, model: nn.Module) -> None:
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
    name: str,
    model: nn.Module,
    *,
    optimizer: Union[torch.optim.Optimizer, str] = "adamw",
    plugins: Optional[Sequence[SupervisedPlugin]] = None,
    evaluator: Optional[Union[EvaluationPlugin, Callable[[], EvaluationPlugin]]] = None,
    device: Optional[Union[str, torch.device]] = None,
    num_classes: Optional[int] = None,
    **options: Any,
):
    """Builds the Avalanche strategy ``name`` around ``model``.

    Args:
        name: one of :data:`STRATEGIES`.
        model: the network; names whose :func:`head_requirement` is ``"fixed"`` need a fixed head
            (``num_classes=int``), ``"single"`` one head over all classes (not per-experience heads); names
            that take the model apart need ``feature_extractor``,
            ``classifier``, ``embed_dim``, ``img_size`` and ``in_chans`` (as
            :class:`~avalanche_lpa.models.LocalityViT` has).
        optimizer: an optimizer over ``model``, or the name of one to build (``"adamw"`` or ``"sgd"``) from
            the ``lr`` (``lr_first`` if set), ``weight_decay``, ``momentum`` and ``param_groups`` options
            (SCR's over its model: our feature extractor plus its projection; an optimizer you pass for SCR
            must cover that projection too, so prefer the name there).
        plugins: extra plugins, run after the recipe's own.
        evaluator: Avalanche evaluation plugin (or factory); ``None`` keeps Avalanche's default.
        device: ``None`` picks CUDA when available.
        num_classes: classes of the whole stream, when known (the runner passes it; a fixed head's width is
            used otherwise): lets checks that depend on it (ER_AML's memory) refuse before training.
        **options: see :func:`strategy_options` (common options plus those of ``name``).

    Raises:
        ValueError: unknown name or option (the message lists the valid ones), or an invalid combination.
    """
    spec = _spec(name)
    config = _resolve(name, options)
    _check_head(name, spec, model)
    n_classes = num_classes or _head_width(model)
    problem = spec.check(config, n_classes) if spec.check else None
    if problem:
        raise ValueError(problem)
    parts = spec.parts(model, config, n_classes)
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
    recipe = _lpa_plugins(config) if name in RECIPES else []
    all_plugins = own + _recipe_plugins(config) + recipe + list(plugins or [])
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
