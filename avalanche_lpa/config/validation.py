"""Validation: a config mapping checked once, where it enters, into the typed :class:`~.schema.RunConfig`.

Every key is checked against its declared type (:mod:`~.schema`) by the package's one type checker: an unknown key
or a value of the wrong type is a :class:`~avalanche_lpa.errors.ConfigError` whose one-line message names the key
and the valid ones. The ``strategy`` section is resolved and checked once by the strategy registry
(:func:`avalanche_lpa.training.resolve_options`: types, ranges, combinations, the plugins' own checks), exactly as
a run builds it; ``model.overrides`` is checked against the model constructor and ``model.name`` (``timm:<name>``)
against timm's registry (its ``model.kwargs`` by timm when the model is built).
"""
from __future__ import annotations

import functools
import string
import typing
from typing import Any, Dict, Iterable, Mapping, Union

from ..data import check_class_split, dataset_info
from ..data.sharding import SAMPLE_ORDERS
from ..errors import ConfigError
from ..models import ATTN_TYPES, HEAD_TYPES, PRESETS, DyTox, LocalityViT, timm_model_name
from ..models.locality_vit import LocalityViTBackbone
from ..training import resolve_options, strategy_entry
from ..training.options import OptionTypeError, check_type
from .schema import CHECKED_ELSEWHERE, RunConfig, build, field_types, schema_defaults
from .upgrade import upgrade_config

__all__ = ["DEFAULTS", "DEVICE_HINT", "LOGGERS", "check_device", "check_split", "validate"]

#: The schema's defaults, as the nested mapping a YAML file mirrors: built from the typed schema
#: (:class:`~.schema.RunConfig`, one dataclass per section), where every key's type and default is declared.
#: ``strategy`` names the default strategy; its options are the registry's (``avalanche_lpa.training``).
DEFAULTS: Dict[str, Any] = schema_defaults()
#: Every key's annotation (``data.root``: ``Optional[str]``), what values are checked against.
_TYPES = field_types()
# Sections whose keys are not fixed by the schema (checked separately).
_FREE_FORM = {"model.overrides", "model.kwargs"}

#: The loggers ``evaluation.loggers`` may list (Avalanche's TextLogger, TensorboardLogger, CSVLogger, WandBLogger).
LOGGERS = ("text", "tensorboard", "csv", "wandb")


def validate(config: Any) -> RunConfig:
    """Checks a config against the schema; returns it completed with defaults, as the typed :class:`RunConfig`.

    A :class:`RunConfig` is returned as it is: it was validated when it was made, and it is frozen.

    Raises:
        ConfigError: with a one-line message naming the bad key and the valid alternatives.
    """
    if isinstance(config, RunConfig):
        return config
    return _check_config(config)


def _check_config(config: Any) -> RunConfig:
    """The work of :func:`validate`: every key checked, defaults filled in, the typed config built."""
    if not isinstance(config, Mapping):
        raise ConfigError(f"config: expected a mapping of sections, got {type(config).__name__}")
    config = upgrade_config(config)
    if not isinstance(config.get("strategy") or {}, Mapping):
        raise ConfigError(f"strategy: expected a mapping of options (name: ..., lr: ...), got {config['strategy']!r}")
    given = dict(config.get("strategy") or {})
    name = given.pop("name", DEFAULTS["strategy"]["name"])
    checked = _check_section("", {**config, "strategy": {}}, DEFAULTS)
    try:
        checked["strategy"] = resolve_options(name, given, prefix="strategy.")
    except OptionTypeError as error:
        raise ConfigError(str(error)) from None
    except ValueError as error:
        message = str(error)
        if message.startswith("unknown strategy"):
            raise ConfigError(f"strategy.name: {message}") from None
        raise ConfigError(message if message.startswith("unknown config key") else f"strategy: {message}") from None
    _check_values(checked)
    return build(RunConfig, checked)


def _check_section(prefix: str, values: Any, schema: Mapping[str, Any]) -> Dict[str, Any]:
    if not isinstance(values, Mapping):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {values!r}")
    unknown = sorted(set(values) - set(schema))
    if unknown:
        where = f"in {prefix!r}" if prefix else "at the top level"
        raise ConfigError(f"unknown config key(s) {', '.join(unknown)} {where}; valid keys: {', '.join(sorted(schema))}")
    out = {}
    for key, default in schema.items():
        path = f"{prefix}.{key}" if prefix else key
        value = values.get(key, default)
        if path == "strategy":  # the strategy's options: resolved by the registry (resolve_options)
            out[key] = value
        elif isinstance(default, dict) and path not in _FREE_FORM:
            out[key] = _check_section(path, value, default)
        elif path in CHECKED_ELSEWHERE:  # range and type refused together, in _check_values
            out[key] = value
        else:
            try:
                out[key] = check_type(path, value, _TYPES[path])
            except OptionTypeError as error:
                raise ConfigError(str(error)) from None
    return out


def _at_least(key: str, value: int, least: int, meaning: str = "") -> None:
    if value < least:
        raise ConfigError(f"{key}: must be {meaning or f'at least {least}'}, got {value}")


def _check_values(config: Dict[str, Any]) -> None:
    """The checks of values beyond their types (names, ranges, combinations), in place."""
    data, model, evaluation = config["data"], config["model"], config["evaluation"]
    try:
        dataset_info(data["dataset"])
    except ValueError as error:  # one line naming the datasets of the table
        raise ConfigError(f"data.dataset: {error}") from None
    for key, valid in (("attn_type", ATTN_TYPES), ("preset", PRESETS), ("head", HEAD_TYPES)):
        if model[key] not in valid:
            raise ConfigError(f"model.{key}: unknown {model[key]!r}; valid: {', '.join(valid)}")
    keywords = _model_keywords(config["strategy"].name)
    unknown = sorted(set(model["overrides"]) - set(keywords))
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(unknown)} in 'model.overrides'; valid keys: {', '.join(sorted(keywords))}"
        )
    _check_override_types(model["overrides"])
    _check_timm(model)
    check_device(config["device"])
    _at_least("evaluation.attention_maps", evaluation["attention_maps"], 0, "0 (off) or more")
    _at_least("data.n_experiences", data["n_experiences"], 1)
    for key in ("max_train_per_class", "max_test_per_class"):
        if data[key] is not None:
            _at_least(f"data.{key}", data[key], 1, "null (all images) or at least 1")
    _check_images(data["synthetic"], data["folder"])
    check_split(data)
    _at_least("data.num_workers", data["num_workers"], 0, "0 (load in the main process) or more")
    if data["sample_order"] not in SAMPLE_ORDERS:
        raise ConfigError(f"data.sample_order: unknown {data['sample_order']!r}; valid: {', '.join(SAMPLE_ORDERS)}")
    _check_template("name", config["name"], ("model", "strategy", "seed"))
    _check_template("output.dir", config["output"]["dir"], ("name", "model", "strategy", "seed"))
    _check_checkpoint(config["checkpoint"])
    _at_least("evaluation.locality_probe_size", evaluation["locality_probe_size"], 1)
    loggers = evaluation["loggers"]
    unknown = [name for name in loggers if name not in LOGGERS]
    if unknown:
        raise ConfigError(f"evaluation.loggers: unknown logger(s) {', '.join(map(str, unknown))}; valid: {', '.join(LOGGERS)}")
    evaluation["loggers"] = list(dict.fromkeys(loggers))


def check_split(data: Any) -> None:
    """Raises :class:`ConfigError` if the class order, the number of experiences or ``initial_classes`` of a data
    section (a mapping or a :class:`~.schema.DataConfig`) does not fit its dataset; datasets named by a class list
    (ImageNet-100) are counted when they are loaded."""
    get = data.get if isinstance(data, Mapping) else lambda key: getattr(data, key)
    info = dataset_info(get("dataset"))
    initial = get("initial_classes")
    if initial is not None and "initial_classes" not in info.options:
        raise ConfigError(f"the loader of dataset {info.name!r} does not take data.initial_classes (its entry's "
                          "options do not name it); set it to null")
    classes = info.classes(get("n_experiences"))
    if classes is None or "class_list" in info.options:
        return
    order = get("class_order")
    if order is not None and sorted(order) != list(range(classes)):
        raise ConfigError(
            f"data.class_order must list each of the {classes} {info.name} class ids 0..{classes - 1} once "
            f"(got {len(order)} ids); fix it or set it to null"
        )
    check_class_split(info.name, classes, get("n_experiences"), initial)


def _check_template(key: str, value: str, fields: Iterable[str]) -> None:
    """``value`` names only ``fields`` in braces (``{seed}``), the ones the runner fills in."""
    try:
        named = [field for _, field, _, _ in string.Formatter().parse(value) if field is not None]
    except ValueError as error:  # a lone brace
        raise ConfigError(f"{key}: {value!r} is not a template ({error}); write {{{{ and }}}} for braces") from None
    unknown = [field or "{}" for field in named if field not in fields]
    if unknown:
        raise ConfigError(f"{key}: {value!r} names {', '.join(unknown)}; the fields filled in are "
                          f"{', '.join('{' + f + '}' for f in fields)}")


def _check_images(synthetic: Dict[str, Any], folder: Dict[str, Any]) -> None:
    """The ``data.synthetic`` and ``data.folder`` sections' sizes, channels and statistics."""
    for key in ("img_size", "in_chans", "train_per_class", "test_per_class"):
        _at_least(f"data.synthetic.{key}", synthetic[key], 1)
    if synthetic["noise"] < 0:
        raise ConfigError(f"data.synthetic.noise: must be at least 0, got {synthetic['noise']}")
    if folder["in_chans"] not in (1, 3):
        raise ConfigError(f"data.folder.in_chans: must be 1 (grey) or 3 (RGB), got {folder['in_chans']}")
    if folder["img_size"] is not None:
        _at_least("data.folder.img_size", folder["img_size"], 1, "null (the images' own) or at least 1")
    for key in ("mean", "std"):
        if folder[key] is not None and len(folder[key]) != folder["in_chans"]:
            raise ConfigError(f"data.folder.{key}: needs one value per channel (data.folder.in_chans = "
                              f"{folder['in_chans']}), got {folder[key]}; or null to compute it from the images")
    if folder["std"] is not None and min(folder["std"]) <= 0:
        raise ConfigError(f"data.folder.std: every value must be above 0, got {folder['std']}")
    fraction = folder["test_fraction"]
    if fraction is not None and not 0 < fraction < 1:
        raise ConfigError(f"data.folder.test_fraction: must lie between 0 and 1 (e.g. 0.2) or be null, got {fraction}")


#: The devices a run takes, in the words of its errors.
DEVICE_HINT = "use --device auto, cpu, cuda, cuda:N or mps"


def check_device(name: str) -> None:
    """The device's spelling (a ``ConfigError`` naming the valid ones); whether this machine has it is checked when
    the run starts (``runner.model.resolve_device``: a config printed or written here may be meant for another
    machine)."""
    import torch

    if name == "auto":
        return
    try:
        torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"device {name!r}: unknown device; {DEVICE_HINT}") from None


def _model_keywords(strategy: str) -> Iterable[str]:
    # The keywords of the strategy's model family (DyTox's has no head ones); attn_type and head_type have keys
    # of their own (model.attn_type, model.head).
    return [p for p in strategy_entry(strategy).model.keywords() if p not in ("attn_type", "head_type")]


@functools.lru_cache(maxsize=None)
def _override_types() -> Dict[str, Any]:
    """The annotations of the LocalityViT family's keywords (backbone, head, DyTox's own)."""
    hints: Dict[str, Any] = {}
    for init in (LocalityViTBackbone.__init__, LocalityViT.__init__, DyTox.__init__):
        hints.update(typing.get_type_hints(init))
    return hints


def _check_override_types(overrides: Mapping[str, Any]) -> None:
    """Each ``model.overrides`` value against its keyword's annotation (where that is one type, or optional), so a
    wrong type names its key here instead of failing inside the model's constructor."""
    hints = _override_types()
    for key, value in overrides.items():
        hint = hints.get(key)
        inner = [a for a in typing.get_args(hint) if a is not type(None)] if typing.get_origin(hint) is Union else [hint]
        if len(inner) != 1 or inner[0] not in (int, float, bool, str):
            continue  # img_size: an integer or a pair, checked by the model
        try:
            check_type(f"model.overrides.{key}", value, hint)
        except OptionTypeError as error:
            raise ConfigError(str(error)) from None


def _check_checkpoint(section: Dict[str, Any]) -> None:
    """``checkpoint.every_epochs`` is null or an integer >= 1, ``checkpoint.every_minutes`` null or a number > 0."""
    epochs, minutes = section["every_epochs"], section["every_minutes"]
    if isinstance(epochs, float) and epochs.is_integer():
        epochs = section["every_epochs"] = int(epochs)
    if epochs is not None and (not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1):
        raise ConfigError(f"checkpoint.every_epochs: must be null (off) or an integer of at least 1, got {epochs!r}")
    if minutes is not None and (not isinstance(minutes, (int, float)) or isinstance(minutes, bool) or minutes <= 0):
        raise ConfigError(f"checkpoint.every_minutes: must be null (off) or a number above 0, got {minutes!r}")
    if isinstance(minutes, int):
        section["every_minutes"] = float(minutes)


def _check_timm(model: Dict[str, Any]) -> None:
    """``model.name`` is ``None`` or ``timm:<a timm model>``; ``model.kwargs`` never sets the head.

    ``model.kwargs`` is used by timm models only, as ``model.overrides`` by the LocalityViT family only (but its
    ``patch_size``), so one config can compare both (``--compare --models lpa timm:<name>``). timm checks the
    keywords when it builds the model, before the run folder is touched.
    """
    if model["name"] is not None:
        try:
            timm_model_name(model["name"])
        except ValueError as error:
            raise ConfigError(f"model.name: {error}") from None
    if "num_classes" in model["kwargs"]:
        raise ConfigError(
            "model.kwargs.num_classes: the timm model is built as a feature extractor (num_classes=0) under the "
            "run's head (model.head); drop it"
        )
