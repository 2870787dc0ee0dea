"""Changes to a config before it is validated: ``--set key.sub=value`` overrides, dedicated flags, and switching
to another strategy while keeping the options both take."""
from __future__ import annotations

import copy
from typing import Any, Dict, Iterable, List, Mapping, Tuple

import yaml

from ..errors import ConfigError
from ..models import TIMM_PREFIX
from ..training import strategy_options
from ..training.options import StrategyOptions, plain_values
from ..training.sections import is_section
from .files import load_yaml, yaml_problem

__all__ = ["apply_overrides", "parse_override", "select_model", "set_value", "switch_strategy"]


def parse_override(item: str) -> Tuple[List[str], Any]:
    """``"a.b=value"`` as ``(["a", "b"], value)``, the value parsed as YAML (empty: ``None``).

    Raises:
        ConfigError: no ``=``, no key, or a value that is not YAML (one line).
    """
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {item!r}: expected key.sub=value, e.g. --set strategy.lr=0.001")
    try:
        value = load_yaml(raw) if raw.strip() else None
    except (yaml.YAMLError, ValueError) as error:
        problem = yaml_problem(error) if isinstance(error, yaml.YAMLError) else str(error)
        raise ConfigError(f"--set {item!r}: cannot parse the value ({problem})") from None
    return key.strip().split("."), value


def set_value(config: Dict[str, Any], dotted_key: str, value: Any) -> None:
    """Sets ``config["a"]["b"] = value`` for ``dotted_key == "a.b"``, creating sections as needed."""
    _set(config, dotted_key.split("."), value, dotted_key)


def _set(config: Dict[str, Any], keys: List[str], value: Any, item: str) -> None:
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
        keys, value = parse_override(item)
        _set(config, keys, value, item)
    return config


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
    section = section.as_dict() if isinstance(section, StrategyOptions) else dict(section)
    old_name = section.get("name")
    try:
        old = strategy_options(old_name) if old_name is not None else {}
    except ValueError:  # an unknown old name is reported where it is validated
        old = {}
    unchanged = {k for k, v in section.items() if k in old and plain_values(old[k]) == plain_values(v)}
    kept = {k: v for k, v in section.items() if k in valid and k not in unchanged and k != "name"}
    for key, value in kept.items():  # a plugin section keeps only the arguments set away from the old preset's
        if is_section(key) and isinstance(value, Mapping) and isinstance(old.get(key), Mapping):
            kept[key] = {k: v for k, v in value.items() if plain_values(old[key].get(k)) != plain_values(v)}
    return {"name": name, **kept}


def select_model(model: str) -> Dict[str, Any]:
    """The ``model`` keys that train ``model``: an attention type (``lpa``) or a timm spec (``timm:<name>``).

    Choosing a LocalityViT type clears ``model.name``; ``model.kwargs`` stays (only timm models read it).
    """
    if model.startswith(TIMM_PREFIX):
        return {"model.name": model}
    return {"model.attn_type": model, "model.name": None}
