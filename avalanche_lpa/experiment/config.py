"""Experiment configuration: YAML files plus ``--set key.sub=value`` overrides, validated against a schema.

A config is a nested dict with the sections of :data:`DEFAULTS`, the typed schema of :mod:`~.schema` (one
dataclass per section). Every key is checked, once, where the config enters: an unknown key or a value of the
wrong type is a :class:`ConfigError` whose one-line message names the key and lists the valid ones. The ``strategy`` section is checked against the options of the chosen strategy
(:func:`avalanche_lpa.training.strategy_options`) and ``model.overrides`` against the model constructor;
``model.name`` (``timm:<name>``) against timm's registry, its ``model.kwargs`` by timm when the model is built.
"""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Union

import yaml

from ..configs import config_names, resolve_config
from ..data import DATASETS, dataset_info
from ..models import ATTN_TYPES, HEAD_TYPES, PRESETS, timm_model_name
from ..training import strategy_entry, strategy_options
from ..training.options import OptionTypeError, check_option
from ..training.sections import DISTILLATION_NAMES, MOVED_OPTIONS, is_section
from .schema import CHECKED_ELSEWHERE, check_value, field_types, schema_defaults

__all__ = [
    "ConfigError", "ValidConfig", "DEFAULTS", "DATASETS", "HARMLESS_KEYS", "LOGGERS", "load_config", "load_yaml", "apply_overrides", "read_yaml",
    "leaves", "set_value", "switch_strategy", "upgrade_config", "validate", "dump_config", "config_differences",
]

# DATASETS (re-exported here) is the data room's table: data.dataset is any of its names.

#: The schema's defaults, as the nested mapping a YAML file mirrors: built from the typed schema
#: (:class:`~.schema.RunConfig`, one dataclass per section), where every key's type and default is declared.
#: ``strategy`` holds the options of the chosen strategy (avalanche_lpa.training.strategy_options).
DEFAULTS: Dict[str, Any] = schema_defaults()
#: Every key's annotation (``data.root``: ``Optional[str]``), what values are checked against.
_TYPES = field_types()

# Sections whose keys are not fixed by the schema (checked separately).
_FREE_FORM = {("model", "overrides"), ("model", "kwargs")}

#: Keys that may differ between a run's ``config.yaml`` and a ``--resume`` / ``--eval-only`` of it: they change
#: where and how a run is shown or read, never what it computes.
HARMLESS_KEYS = (
    "device",
    "data.root",
    "data.download",
    "data.num_workers",
    "evaluation.progress_bar",
    "evaluation.loggers",
    "evaluation.verbose",
    "output.dir",
    "checkpoint.every_epochs",
    "checkpoint.every_minutes",
)

#: The loggers ``evaluation.loggers`` may list (Avalanche's TextLogger, TensorboardLogger, CSVLogger, WandBLogger).
LOGGERS = ("text", "tensorboard", "csv", "wandb")

#: Strategy options that must be at least 1 (``None`` allowed where it is the default).
_POSITIVE_OPTIONS = ("train_mb_size", "eval_mb_size", "batch_size_mem", "train_epochs", "epochs_first")


# -- YAML ------------------------------------------------------------------------------------------------------
class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader that also reads ``1e-3``, ``1e6``, ``1.0e6``, ``1E+6`` as numbers.

    PyYAML follows YAML 1.1, whose floats need a dot and a signed exponent (``1.0e+6``); YAML 1.2 and every
    programming language accept the other spellings too, and they are what people type.
    """


_Loader.add_implicit_resolver(  # copies the inherited resolvers first: yaml.SafeLoader is unchanged
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """Parses YAML like ``yaml.safe_load``, with numbers in every common spelling (``1e-3``, ``-2.5E+4``, ``.5``)."""
    return yaml.load(text, Loader=_Loader)


def _yaml_problem(error: yaml.YAMLError) -> str:
    """PyYAML's multi-line message as one line: the problem and where."""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    mark = getattr(error, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"


class ConfigError(ValueError):
    """An invalid configuration (unknown key, wrong type, bad value)."""


def _check_type(key: str, value: Any, default: Any) -> Any:
    try:
        if key.startswith("strategy."):  # the strategy's options: typed by their defaults (training/options.py)
            return check_option(key, value, default, option=key.rpartition(".")[2])
        if key in CHECKED_ELSEWHERE:  # range and type refused together, below
            return value
        return check_value(key, value, _TYPES[key])
    except OptionTypeError as error:
        raise ConfigError(str(error)) from None


def _validate_section(prefix: str, values: Mapping[str, Any], schema: Mapping[str, Any]) -> Dict[str, Any]:
    if not isinstance(values, Mapping):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {values!r}")
    unknown = sorted(set(values) - set(schema))
    if unknown:
        where = f"in {prefix!r}" if prefix else "at the top level"
        raise ConfigError(f"unknown config key(s) {', '.join(unknown)} {where}; valid keys: {', '.join(sorted(schema))}")
    out = {}
    for key, default in schema.items():
        path = f"{prefix}.{key}" if prefix else key
        value = values.get(key, copy.deepcopy(default))
        if prefix == "strategy" and is_section(key):  # a plugin's arguments: checked as the strategy is composed
            out[key] = value
        elif isinstance(default, dict) and tuple(path.split(".")) not in _FREE_FORM:
            out[key] = _validate_section(path, value, default)
        else:
            out[key] = _check_type(path, value, default)
    return out


def _model_keywords(strategy: str) -> Iterable[str]:
    # The keywords of the strategy's model family (DyTox's has no head ones); attn_type and head_type have keys
    # of their own (model.attn_type, model.head).
    return [p for p in strategy_entry(strategy).model.keywords() if p not in ("attn_type", "head_type")]


class ValidConfig(dict):
    """A config as :func:`validate` returned it: validating it again is free while nobody has changed it.

    So a config is checked once, where it enters (the command line, a YAML file, ``load_config``), and the
    runner's own ``validate`` of what it is handed costs a comparison; a changed copy is checked again.
    """

    def unchanged(self) -> bool:
        """Whether the config still holds what was validated."""
        return getattr(self, "_fingerprint", None) == _fingerprint(self)


def _fingerprint(config: Mapping[str, Any]) -> str:
    return json.dumps(_plain(config), sort_keys=True, default=repr)


def validate(config: Mapping[str, Any]) -> ValidConfig:
    """Checks a config against the schema and returns it completed with defaults.

    A :class:`ValidConfig` that nobody changed since it was validated is returned as it is.

    Raises:
        ConfigError: with a one-line message naming the bad key and the valid alternatives.
    """
    if isinstance(config, ValidConfig) and config.unchanged():
        return config
    out = ValidConfig(_check_config(config))
    out._fingerprint = _fingerprint(out)
    return out


def _check_config(config: Mapping[str, Any]) -> Dict[str, Any]:
    """The work of :func:`validate`: every key checked, defaults filled in."""
    config = upgrade_config(config)
    strategy = dict(config.get("strategy") or {})
    name = strategy.pop("name", DEFAULTS["strategy"]["name"])
    try:
        strategy_schema = {"name": "", **strategy_options(name)}
    except ValueError as error:
        raise ConfigError(f"strategy.name: {error}") from None
    schema = {**DEFAULTS, "strategy": strategy_schema}
    out = _validate_section("", {**config, "strategy": {"name": name, **strategy}}, schema)
    # Composed with the preset: plugin sections merged into the preset's and completed with the plugin's defaults,
    # the dependents of a switched-off part reset (loss: ce drops the preset's mixup, ...).
    given = {key: out["strategy"][key] for key in strategy}
    try:
        # In YAML's types (a preset's tuple as a list): the config reads back equal to what was written.
        out["strategy"] = _plain({"name": name, **strategy_options(name, given, prefix="strategy.")})
    except OptionTypeError as error:
        raise ConfigError(str(error)) from None

    data, model = out["data"], out["model"]
    try:
        dataset_info(data["dataset"])
    except ValueError as error:  # one line naming the datasets of the table
        raise ConfigError(f"data.dataset: {error}") from None
    if model["attn_type"] not in ATTN_TYPES:
        raise ConfigError(f"model.attn_type: unknown {model['attn_type']!r}; valid: {', '.join(ATTN_TYPES)}")
    if model["preset"] not in PRESETS:
        raise ConfigError(f"model.preset: unknown {model['preset']!r}; valid: {', '.join(PRESETS)}")
    if model["head"] not in HEAD_TYPES:
        raise ConfigError(f"model.head: unknown {model['head']!r}; valid: {', '.join(HEAD_TYPES)}")
    keywords = _model_keywords(out["strategy"]["name"])
    unknown = sorted(set(model["overrides"]) - set(keywords))
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(unknown)} in 'model.overrides'; valid keys: {', '.join(sorted(keywords))}"
        )
    _validate_timm(model)
    if out["evaluation"]["attention_maps"] < 0:
        raise ConfigError(f"evaluation.attention_maps: must be 0 (off) or more, got {out['evaluation']['attention_maps']}")
    if data["n_experiences"] < 1:
        raise ConfigError(f"data.n_experiences: must be at least 1, got {data['n_experiences']}")
    if data["num_workers"] < 0:
        raise ConfigError(f"data.num_workers: must be 0 (load in the main process) or more, got {data['num_workers']}")
    for key in _POSITIVE_OPTIONS:
        value = out["strategy"].get(key)
        if isinstance(value, float) and value.is_integer():  # None-default options are not type-checked
            value = out["strategy"][key] = int(value)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ConfigError(f"strategy.{key}: must be an integer of at least 1, got {value!r}")
    _validate_checkpoint(out["checkpoint"])
    if out["evaluation"]["locality_probe_size"] < 1:
        raise ConfigError(
            f"evaluation.locality_probe_size: must be at least 1, got {out['evaluation']['locality_probe_size']}"
        )
    loggers = out["evaluation"]["loggers"]
    unknown = [name for name in loggers if name not in LOGGERS]
    if unknown or not all(isinstance(name, str) for name in loggers):
        raise ConfigError(f"evaluation.loggers: unknown logger(s) {', '.join(map(str, unknown))}; valid: {', '.join(LOGGERS)}")
    out["evaluation"]["loggers"] = list(dict.fromkeys(loggers))
    return out


def upgrade_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """A config written by an older version in today's keys, so that older run folders still resume and evaluate.

    Reads the logger switches of configs written before ``evaluation.loggers`` (``text_log``, ``tensorboard``), and
    the flat strategy options written before the plugin sections (``lr_first``, ``lr_warmup_epochs``, ...,
    ``lpa_warmup_start``, ...: :data:`~avalanche_lpa.training.sections.MOVED_OPTIONS`) into their sections, and the
    names ``distillation`` took (``old_samples``, ``all_samples``, ``weighted_lwf``, ``none``).
    """
    return _upgrade_strategy(_upgrade_loggers(config))


def _upgrade_loggers(config: Mapping[str, Any]) -> Mapping[str, Any]:
    evaluation = config.get("evaluation")
    if not isinstance(evaluation, Mapping) or not {"text_log", "tensorboard"} & set(evaluation):
        return config
    evaluation = dict(evaluation)
    loggers = list(evaluation.get("loggers") or ["text"])
    if evaluation.pop("text_log", True) is False:
        loggers = [name for name in loggers if name != "text"]
    if evaluation.pop("tensorboard", False) is True and "tensorboard" not in loggers:
        loggers.append("tensorboard")
    return {**config, "evaluation": {**evaluation, "loggers": loggers}}


def _upgrade_strategy(config: Mapping[str, Any]) -> Mapping[str, Any]:
    strategy = config.get("strategy")
    named = isinstance(strategy, Mapping) and isinstance(strategy.get("distillation"), str)
    if not isinstance(strategy, Mapping) or not (set(strategy) & set(MOVED_OPTIONS) or named):
        return config
    try:
        own = strategy_options(strategy.get("name", DEFAULTS["strategy"]["name"]))
    except ValueError:  # an unknown name is reported where the config is validated
        return config
    strategy = dict(strategy)
    if named and strategy["distillation"] in DISTILLATION_NAMES and "distillation" in own:
        # distillation: old_samples | all_samples | weighted_lwf | none, the temperature of whichever was on
        sections = copy.deepcopy(DISTILLATION_NAMES[strategy.pop("distillation")])
        if sections["weighted_lwf"] is not False and "temperature" in strategy:
            sections["weighted_lwf"]["temperature"] = strategy.pop("temperature")
        strategy.update(sections)
    moved = {key: strategy.pop(key) for key in list(strategy)
             if key in MOVED_OPTIONS and key not in own and MOVED_OPTIONS[key][0] in own}
    for section in {section for section, _ in MOVED_OPTIONS.values()}:
        parts = {MOVED_OPTIONS[key][1]: value for key, value in moved.items() if MOVED_OPTIONS[key][0] == section}
        switch = strategy.get(section, True if parts else None)
        if switch is True:
            strategy[section] = parts
        elif isinstance(switch, Mapping):
            strategy[section] = {**parts, **switch}
        # false (or absent without parts): the plugin is off, and its arguments meant nothing
    return {**config, "strategy": strategy}


def _validate_checkpoint(section: Dict[str, Any]) -> None:
    """``checkpoint.every_epochs`` is null or an integer >= 1, ``checkpoint.every_minutes`` null or a number > 0."""
    epochs, minutes = section["every_epochs"], section["every_minutes"]
    if isinstance(epochs, float) and epochs.is_integer():
        epochs = section["every_epochs"] = int(epochs)
    if epochs is not None and (not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1):
        raise ConfigError(f"checkpoint.every_epochs: must be null (off) or an integer of at least 1, got {epochs!r}")
    if minutes is not None and (not isinstance(minutes, (int, float)) or isinstance(minutes, bool) or minutes <= 0):
        raise ConfigError(f"checkpoint.every_minutes: must be null (off) or a number above 0, got {minutes!r}")


def _validate_timm(model: Dict[str, Any]) -> None:
    """``model.name`` is ``None`` or ``timm:<a timm model>``; ``model.kwargs`` never sets the head.

    ``model.kwargs`` is used by timm models only, as ``model.overrides`` by the LocalityViT family only (but its
    ``patch_size``), so one config can compare both (``--compare --models lpa timm:<name>``). timm checks the
    keywords when it builds the model, before the run folder is touched.
    """
    model["kwargs"] = model["kwargs"] or {}  # `kwargs: null` in YAML means none
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


def _parse_override(item: str):
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {item!r}: expected key.sub=value, e.g. --set strategy.lr=0.001")
    try:
        value = load_yaml(raw) if raw.strip() else None
    except (yaml.YAMLError, ValueError) as error:
        problem = _yaml_problem(error) if isinstance(error, yaml.YAMLError) else str(error)
        raise ConfigError(f"--set {item!r}: cannot parse the value ({problem})") from None
    return key.strip().split("."), value


def set_value(config: Dict[str, Any], dotted_key: str, value: Any) -> None:
    """Sets ``config["a"]["b"] = value`` for ``dotted_key == "a.b"``, creating sections as needed."""
    _set(config, dotted_key.split("."), value, dotted_key)


def _set(config: Dict[str, Any], keys, value: Any, item: str) -> None:
    node = config
    for depth, key in enumerate(keys[:-1]):
        child = node.setdefault(key, {})
        if child is None or isinstance(child, bool):  # a switch (lr_schedule: false) given one of its arguments
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {item!r}: {'.'.join(keys[: depth + 1])} is not a section")
        node = child
    node[keys[-1]] = value


def apply_overrides(config: Dict[str, Any], overrides: Iterable[str]) -> Dict[str, Any]:
    """Applies ``key.sub=value`` strings (values parsed as YAML) to a copy of ``config``."""
    config = copy.deepcopy(config)
    for item in overrides:
        keys, value = _parse_override(item)
        _set(config, keys, value, item)
    return config


def load_config(
    path: Optional[Union[str, Path]] = None,
    overrides: Iterable[str] = (),
    values: Optional[Mapping[str, Any]] = None,
    *,
    base: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """Loads a YAML config (or the defaults when ``path`` is None) and validates it.

    Args:
        path: YAML file.
        overrides: ``key.sub=value`` strings (``--set``), applied last.
        values: ``{"key.sub": value}`` set before the overrides (dedicated command-line flags).
        base: a config to start from instead of ``path`` (a run's own ``config.yaml`` for ``--resume``).
    """
    if base is not None:
        raw = copy.deepcopy(base)  # a ValidConfig stays one: unchanged by flags, it is not checked again
    else:
        raw = read_yaml(resolve_config(path)) if path is not None else {}
    values = dict(values or {})
    if "strategy.name" in values:
        raw["strategy"] = switch_strategy(raw.get("strategy") or {}, values.pop("strategy.name"))
    for key, value in values.items():
        set_value(raw, key, value)
    return validate(apply_overrides(raw, overrides))


def _merge(base: Dict[str, Any], update: Mapping[str, Any]) -> Dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), dict) else value
    return out


def read_yaml(path: Path, _seen: tuple = ()) -> Dict[str, Any]:
    """Reads a config file; a top-level ``base: other.yaml`` (relative to the file) is merged in first."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass --config with a YAML file or the name of a shipped "
                          f"config ({', '.join(config_names())})")
    if path.resolve() in _seen:
        raise ConfigError(f"config file {path} includes itself through 'base'")
    try:
        raw = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {_yaml_problem(error)}") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ConfigError(f"cannot read config file {path} ({error}); pass --config with a readable YAML file") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(raw).__name__}")
    base = raw.pop("base", None)
    if base is None:
        return raw
    parent = read_yaml(path.parent / base, _seen + (path.resolve(),))
    # A strategy section that names another strategy replaces the base's instead of merging into it.
    if "name" in raw.get("strategy", {}) and raw["strategy"]["name"] != parent.get("strategy", {}).get("name"):
        parent["strategy"] = switch_strategy(parent.get("strategy", {}), raw["strategy"]["name"])
    return _merge(parent, raw)


def switch_strategy(section: Mapping[str, Any], name: str) -> Dict[str, Any]:
    """A ``strategy`` section for strategy ``name`` that keeps the options ``name`` also takes.

    Lets ``--strategy naive`` reuse a recipe's training budget (epochs, batch size, lr, ...) while dropping
    what only the recipe understands (memory size, distillation, ...). A value equal to the old strategy's
    default is not kept: in a validated section it is only that default filled in, and ``name`` gets its own
    (``lpa`` -> ``lpa_warmup`` turns the warm-up on; ``lpa`` -> ``dytox`` freezes DyTox's finetuning set). Within a
    plugin section the same holds per argument (``finetune: {epochs: 10}`` keeps 10 epochs, not ``lpa``'s frozen set).
    """
    try:
        valid = strategy_options(name)
    except ValueError as error:
        raise ConfigError(f"strategy.name: {error}") from None
    old_name = section.get("name")
    try:
        old = strategy_options(old_name) if old_name is not None else {}
    except ValueError:  # an unknown old name is reported where it is validated
        old = {}
    unchanged = {k for k, v in section.items() if k in old and _plain(old[k]) == _plain(v)}
    kept = {k: v for k, v in section.items() if k in valid and k not in unchanged and k != "name"}
    for key, value in kept.items():  # a plugin section keeps only the arguments set away from the old preset's
        if is_section(key) and isinstance(value, Mapping) and isinstance(old.get(key), Mapping):
            kept[key] = {k: v for k, v in value.items() if _plain(old[key].get(k)) != _plain(v)}
    return {"name": name, **kept}


def dump_config(config: Mapping[str, Any]) -> str:
    """The config as YAML text (what a run folder keeps as ``config.yaml``)."""
    return yaml.safe_dump(_plain(config), sort_keys=False)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def leaves(value: Any, prefix: str = "") -> Dict[str, Any]:
    """The config as ``{"dotted.key": value}`` (an empty section as ``{}``)."""
    if isinstance(value, Mapping):
        out: Dict[str, Any] = {}
        for key, sub in value.items():
            out.update(leaves(sub, f"{prefix}.{key}" if prefix else str(key)))
        return out or {prefix: {}}
    return {prefix: list(value) if isinstance(value, tuple) else value}


def config_differences(
    old: Mapping[str, Any], new: Mapping[str, Any], ignore: Iterable[str] = (), common_only: bool = False
) -> List[str]:
    """Dotted keys whose values differ between two configs, as ``key (old -> new)``, skipping ``ignore``
    (and, with ``common_only``, keys that only one of them has: a schema of another version)."""
    a, b = leaves(old), leaves(new)
    skip = set(ignore)

    def short(value: Any) -> str:
        text = "unset" if value is _MISSING else repr(value)
        return text if len(text) <= 40 else text[:37] + "..."

    return [
        f"{key} ({short(a.get(key, _MISSING))} -> {short(b.get(key, _MISSING))})"
        for key in sorted(set(a) & set(b) if common_only else set(a) | set(b))
        if key not in skip and a.get(key, _MISSING) != b.get(key, _MISSING)
    ]


_MISSING = object()
