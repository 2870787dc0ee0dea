"""The configuration reference: every config key and strategy option with its type, default and meaning.

Generated from the schema (:mod:`~.schema`'s typed sections, :func:`~avalanche_lpa.training.strategy_options`), so it
cannot drift: ``tests/test_reference.py`` fails when a key has no meaning here or when ``docs/config-reference.md``
differs from :func:`config_reference`. Options of Avalanche's own strategies take their meaning from Avalanche's
docstrings. Regenerate with ``python -m avalanche_lpa.config.reference > docs/config-reference.md``.
"""
from __future__ import annotations

import inspect
import re
import typing
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

from ..data import DATASETS
from ..training import STRATEGIES, strategy_class, strategy_options
from ..training.recipe import RECIPES
from ..training.sections import SECTIONS
from ..training.options import NULLABLE_TYPES
from .validation import DEFAULTS, LOGGERS
from .schema import field_types

__all__ = ["CONFIG_HELP", "OPTION_HELP", "STRATEGY_OPTION_HELP", "config_keys", "option_help", "config_reference"]

_NAMES = [f"`{name}`" for name in DATASETS]

#: The meaning of every key outside ``strategy`` (dotted names).
CONFIG_HELP: Dict[str, str] = {
    "name": "run name; `{model}`, `{strategy}`, `{seed}` are filled in (the output folder uses it)",
    "seed": "seed of everything (class order when none is given, model init, data order, probes)",
    "device": "`auto` (CUDA if available), `cpu`, `cuda`, `cuda:N` or `mps`",
    "data.dataset": f"{', '.join(_NAMES[:-1])} or {_NAMES[-1]}",  # the dataset table's names
    "data.root": "dataset folder; null: `$AVALANCHE_LPA_DATA`, else Avalanche's `~/.avalanche/data/<name>`",
    "data.download": f"download a missing {' / '.join(i.title for i in DATASETS.values() if i.download_size)} into "
                     "the root (`--no-download`: false)",
    "data.n_experiences": "experiences (steps); must divide the number of classes (or, with "
                          "`initial_classes`, the classes after the first experience)",
    "data.initial_classes": "classes of the first experience, the rest shared equally by the others (a B50 split: "
                            "half of them); null: every experience the same number",
    "data.class_order": "original class ids in arrival order (null: a permutation drawn from the seed)",
    "data.class_list": "ImageNet-100: a file with one WordNet id per line (null: the authors' 100 classes)",
    "data.augment": "random crop + flip on training images",
    "data.auto_augment": "timm auto-augment policy, e.g. `rand-m9-mstd0.5-inc1` (the authors'); null: none",
    "data.max_train_per_class": "keep at most this many training images per class (null: all)",
    "data.max_test_per_class": "keep at most this many test images per class (null: all)",
    "data.num_workers": "DataLoader worker processes (0: load in the main process)",
    "data.sample_order": "`seeded`: training batches drawn from the seed, experience and epoch, the same global "
                         "batches under any number of processes; `avalanche`: in one process the strategy's "
                         "Avalanche loader shuffles (runs made before this key existed; torchrun draws seeded)",
    "data.synthetic.img_size": "synthetic images: side in pixels",
    "data.synthetic.in_chans": "synthetic images: channels",
    "data.synthetic.train_per_class": "synthetic images: training images per class",
    "data.synthetic.test_per_class": "synthetic images: test images per class",
    "data.synthetic.noise": "synthetic images: noise around each class's pattern",
    "data.folder.img_size": "image folder: side the images are brought to (null: the shorter side of the most "
                            "common training image size, computed once and cached in the root)",
    "data.folder.in_chans": "image folder: 1 (grey) or 3 (RGB)",
    "data.folder.mean": "image folder: per-channel normalisation mean (null: the training images')",
    "data.folder.std": "image folder: per-channel standard deviation (null: the training images')",
    "data.folder.test_fraction": "image folder of class folders alone (ImageNet-R as distributed): the share of "
                                 "each class kept for testing, a fixed draw (e.g. 0.2); null: train/ and test/ "
                                 "folders or CUB's split files",
    "model.attn_type": "`lpa`, `gpsa` or `mhsa` (`--model`)",
    "model.preset": "`cifar`, `imagenet` or `tiny` (sizes of the LocalityViT family)",
    "model.head": "`incremental` (Avalanche's growing head) or `per_experience` (the authors' heads)",
    "model.overrides": "LocalityViT keywords over the preset, e.g. `{embed_dim: 72, drop_path_rate: 0.1}`",
    "model.name": "a timm model instead: `timm:<name>` (`--model timm:<name>`)",
    "model.kwargs": "`timm.create_model` keywords of a timm model (img_size, in_chans default to the data's)",
    "model.lpa_convert": "timm ViT / DeiT models (`model.name`): make every block's attention LPA, keeping the "
                         "(pretrained) query/key/value weights; it computes what the ViT did until its position "
                         "weights learn (the LocalityViT family ignores it)",
    "model.compile": "`torch.compile` the backbone (GPU runs)",
    "strategy.name": "the strategy (`--strategy`); its options are listed below",
    "evaluation.locality_probe_size": "test images of the locality probe (class-balanced, fixed by the seed)",
    "evaluation.attention_maps": "probe images of the per-image attention figure (0: off)",
    "evaluation.loggers": f"file loggers: any of {', '.join(f'`{name}`' for name in LOGGERS)}",
    "evaluation.verbose": "console: every metric (`--verbose`) instead of one line per epoch and per experience",
    "evaluation.progress_bar": "console progress bars, labelled with the experience, phase and epoch (on a terminal; a job's log file gets one line per epoch)",
    "output.dir": "run folder; `{name}`, `{model}`, `{strategy}`, `{seed}` are filled in (`--output`)",
    "output.checkpoint": "write `checkpoint.pkl` (after each experience and inside it, see `checkpoint.*`)",
    "output.save_model": "write `model.pt` at the end",
    "output.plots": "write the PNG figures",
    "checkpoint.every_epochs": "also checkpoint after every N epochs inside an experience (null: off)",
    "checkpoint.every_minutes": "also checkpoint at the first epoch end after M minutes (null: off)",
}

#: The meaning of every option our strategies add to Avalanche's (common and recipe options).
OPTION_HELP: Dict[str, str] = {
    "optimizer": "`adamw` or `sgd`",
    "lr": "learning rate (the recipe: the peak of each later experience's schedule)",
    "weight_decay": "weight decay of the multi-dimensional parameters",
    "momentum": "SGD momentum",
    "param_groups": "no decay on 1-D parameters and `no_weight_decay()` (null: where the strategy allows)",
    "decay_embeddings": "decay `no_weight_decay()` too (position embedding, CLS token), as the authors",
    "train_mb_size": "training batch (per process under torchrun)",
    "train_epochs": "epochs of each experience",
    "epochs_first": "epochs of the first experience (null: `train_epochs`)",
    "eval_mb_size": "evaluation batch (null: `train_mb_size`)",
    "eval_every": "Avalanche's periodic evaluation during training (-1: off)",
    "lr_schedule": "per-experience warm-up + cosine (`ExperienceLRSchedulePlugin`): `false`, `true` or its arguments",
    "lpa_warmup": "our LPA content warm-up (`LPAWarmupPlugin`): `false`, `true` or its arguments",
    "precision": "`fp32`, `bf16` or `fp16` (forward passes under `torch.autocast`; `fp16` with loss scaling, "
                 "`GradScaler`)",
    "loss": "`ce` (cross-entropy) or `bce` (BCE over the seen classes; needed for mixup / cutmix)",
    "label_smoothing": "label smoothing",
    "mixup": "mixup alpha (0: off; needs `loss: bce`)",
    "cutmix": "cutmix alpha (0: off; needs `loss: bce`)",
    "mem_size": "exemplars in total (the recipe: `mem_size // n_seen_classes` per class, iCaRL herding)",
    "memory_scope": "under DDP: `global` (one memory), `rank_shard` (one per rank, herded from the rank's shard: "
                    "Douillard's DyTox runs) or `rank_augmented` (one per rank, herded from the whole experience on "
                    "the rank's own augmentations: the LPA authors' 2-GPU runs); `per_rank` reads as `rank_shard`",
    "replay_mode": "`concat` (memory added to the experience's data) or `balanced_batches` (Avalanche's Replay)",
    "batch_size_mem": "memory part of every batch (`balanced_batches` only; per process under torchrun)",
    "herding_layer": "the module whose output herding reads",
    "repeated_aug": "DeiT's repeated augmentation: copies of each image per epoch (1: off)",
    "distillation": "distillation from the previous model (`OldSampleDistillationPlugin`; the authors' on old "
                    "samples, `all_samples: true` Douillard's): `false`, `true` or its arguments",
    "weighted_lwf": "Avalanche's LwF weighted by old / seen classes instead (`WeightedLwFPlugin`): `false`, `true` or "
                    "its arguments",
    "finetune": "class-balanced finetuning on the memory after each experience t > 0 (`BalancedFinetuningPlugin`): "
                "`false`, `true` or its arguments",
    "divergence_weight": "DyTox's divergence-head loss weight (0: off)",
}


#: Options of Avalanche strategies whose docstrings do not describe them (or that we add for them).
STRATEGY_OPTION_HELP: Dict[Tuple[str, str], str] = {
    ("ewc", "ewc_mode"): "`separate` (one penalty per experience) or `online` (Avalanche)",
    ("bic", "stage_2_lr"): "learning rate of the bias-correction stage (Avalanche)",
    ("scr", "projection_dim"): "width of the projection head SCR trains on (ours: built from the model)",
    ("scr", "augment"): "SCR's own augmentation of the two views (ours: switch it off for pre-augmented data)",
    ("gss", "mem_strength"): "samples drawn to score a candidate's gradient (Avalanche)",
    ("er_aml", "base_temperature"): "base temperature of the asymmetric metric-learning loss (Avalanche)",
    ("er_aml", "temperature"): "temperature of the asymmetric metric-learning loss (Avalanche)",
    ("icarl", "mem_size"): "exemplars in total, split evenly over the seen classes (Avalanche's `memory_size`)",
    ("bic", "temperature"): "distillation temperature of BiC (Avalanche's `T`)",
    ("feature_replay", "mem_size"): "replayed feature vectors in total (Avalanche)",
    ("feature_replay", "batch_size_mem"): "replayed features in every batch (Avalanche; per process under torchrun)",
    ("der", "batch_size_mem"): "memory samples in every batch, null: `train_mb_size` (Avalanche; per process under "
                               "torchrun)",
    ("er_ace", "batch_size_mem"): "memory samples in every batch (Avalanche; per process under torchrun)",
    ("agem", "sample_size"): "memory samples of the reference gradient, spread over the experiences seen (Avalanche; "
                             "per process under torchrun)",
    ("cope", "temperature"): "temperature of CoPE's pseudo-prototypical proxy loss (Avalanche's `T`)",
}


def config_keys(section: Optional[Dict[str, Any]] = None, prefix: str = "") -> Iterator[Tuple[str, Any]]:
    """``(dotted key, default)`` of every key of the schema outside ``strategy``."""
    for key, default in (DEFAULTS if section is None else section).items():
        dotted = f"{prefix}{key}"
        if isinstance(default, dict) and dotted not in ("model.overrides", "model.kwargs"):
            yield from config_keys(default, dotted + ".")
        else:
            yield dotted, default


_PARAM = re.compile(r":param (\w+):\s*(.*?)(?=\n\s*:param |\n\s*:return|\n\s*\n|$)", re.S)


def _avalanche_help(strategy: str) -> Dict[str, str]:
    cls = strategy_class(strategy)
    found: Dict[str, str] = {}
    for klass in cls.__mro__:
        doc = inspect.getdoc(klass.__init__) or ""
        for name, text in _PARAM.findall(doc):
            found.setdefault(name, " ".join(text.split()))
    return found


_ARG = re.compile(r"^ {8}(\w+): (.*?)(?=^ {8}\w+: |\Z)", re.S | re.M)


def section_help(option: str, key: str) -> Optional[str]:
    """The meaning of ``key`` of plugin section ``option``: the plugin's docstring (its ``Args:``)."""
    doc = SECTIONS[option].plugin.__doc__ or ""
    args = doc.partition("Args:\n")[2]
    found = {name: " ".join(text.split()).replace(":data:`", "`").replace("``", "`").rstrip(".") for name, text in _ARG.findall(args)}
    return found.get(key)


def option_help(strategy: str, option: str) -> Optional[str]:
    """The meaning of ``option`` of ``strategy``: ours for the common and recipe options, else the first
    sentence of Avalanche's docstring of that strategy."""
    if strategy in RECIPES or option in strategy_options("naive"):
        return OPTION_HELP.get(option)
    if (strategy, option) in STRATEGY_OPTION_HELP:
        return STRATEGY_OPTION_HELP[(strategy, option)]
    text = _avalanche_help(strategy).get(option)
    if not text:
        return None
    sentence = text.split(". ")[0].rstrip(".")
    return f"{sentence} (Avalanche)"


def _type(default: Any) -> str:
    if default is None:
        return "any (null)"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", tuple: "list",
            dict: "mapping"}.get(type(default), type(default).__name__)


def _option_type(key: str, defaults: List[Any]) -> str:
    """A strategy option's type in words, from its first default that is not null (else :data:`NULLABLE_TYPES`)."""
    default = next((value for value in defaults if value is not None), None)
    if default is not None:
        return _type(default)
    return f"{_hint(NULLABLE_TYPES[key])} or null" if key in NULLABLE_TYPES else "any (null)"


def _hint(hint: Any) -> str:
    """A schema annotation in words: ``Optional[List[int]]`` -> "list of integers or null"."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:
        (inner,) = [a for a in args if a is not type(None)]
        return f"{_hint(inner)} or null"
    if origin in (list, List):
        return f"list of {_hint(args[0])}s" if args else "list"
    if origin in (dict, Dict):
        return "mapping"
    return {bool: "boolean", int: "integer", float: "number", str: "string"}.get(hint, str(hint))


def _value(default: Any) -> str:
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if default is None:
        return "`null`"
    if isinstance(default, tuple):
        default = list(default)
    return f"`{default}`"


def _section_rows(option: str, recipes: List[str], recipe_options: Dict[str, Dict[str, Any]]) -> List[str]:
    """A plugin section's row (on or off) and one row per argument of its plugin (the plugin's defaults)."""
    section = SECTIONS[option]
    on = [_value(bool(recipe_options[name][option])) for name in recipes]
    rows = [f"| `{option}` | `false` or mapping | `false` | " + " | ".join(on) + f" | {OPTION_HELP[option]} |"]
    for key, default in section.defaults().items():
        cells = [_value(recipe_options[name][option][key]) if recipe_options[name][option] else "–" for name in recipes]
        kind = _type(default) if default is not None else _hint(section.types()[key])
        rows.append(f"| `{option}.{key}` | {kind} | {_value(default)} | " + " | ".join(cells)
                    + f" | {section_help(option, key)} |")
    return rows


def config_reference() -> str:
    """The Markdown reference (``docs/config-reference.md``)."""
    out: List[str] = [
        "# Configuration reference",
        "",
        "Generated from the schema by `python -m avalanche_lpa.config.reference` (a test checks it is current).",
        "Every key can be set in a YAML config or with `--set key.sub=value`; `avalanche-lpa --print-config` prints",
        "the resolved config of a run.",
        "",
        "## Run, data, model, evaluation, output and checkpoints",
        "",
        "| key | type | default | meaning |",
        "|---|---|---|---|",
    ]
    types = field_types()
    for key, default in config_keys():
        kind = _hint(types[key]) if key in types else _type(default)  # strategy.name: a string
        out.append(f"| `{key}` | {kind} | {_value(default)} | {CONFIG_HELP[key]} |")
    recipes = [name for name in STRATEGIES if name in RECIPES]
    common = strategy_options("naive")
    out += ["", "## Strategy options", "",
            "`strategy.<option>`, or `build_strategy(name, model, <option>=...)`. Every strategy takes the common",
            "options; the defaults of the recipe presets differ where the table says. An option that builds one",
            "plugin (`lr_schedule`, `lpa_warmup`, `finetune`, `distillation`, ...) is `false` or a mapping of that plugin's own arguments, merged",
            "into the preset's (`--set strategy.lr_schedule.min_lr=0`); `true` takes the preset's (or the plugin's",
            "defaults). Its rows list the plugin's arguments with the plugin's defaults (`–`: the preset has it off).",
            "",
            "| option | type | default | " + " | ".join(f"`{name}`" for name in recipes) + " | meaning |",
            "|---|---|---|" + "---|" * len(recipes) + "---|"]
    recipe_options = {name: strategy_options(name) for name in recipes}
    keys = list(common) + [k for k in recipe_options[recipes[0]] if k not in common]
    keys += [k for name in recipes for k in recipe_options[name] if k not in keys]
    for key in dict.fromkeys(keys):
        if key in SECTIONS:
            out += _section_rows(key, recipes, recipe_options)
            continue
        base = common.get(key, None)
        cells = [_value(recipe_options[name][key]) if key in recipe_options[name] else "–" for name in recipes]
        given = [base] if key in common else [recipe_options[name].get(key) for name in recipes]
        out.append(f"| `{key}` | {_option_type(key, given)} | "
                   f"{_value(base) if key in common else '–'} | " + " | ".join(cells) + f" | {OPTION_HELP[key]} |")
    out += ["", "## Options of Avalanche's strategies", "",
            "Besides the common options, each Avalanche strategy takes its own arguments:", "",
            "| strategy | option | default | meaning |", "|---|---|---|---|"]
    for name in STRATEGIES:
        if name in RECIPES:
            continue
        for key, default in strategy_options(name).items():
            if key in common:
                continue
            out.append(f"| `{name}` | `{key}` | {_value(default)} | {option_help(name, key)} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(config_reference(), end="")
