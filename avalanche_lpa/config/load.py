"""A run's config from where it comes from: a YAML file (``base:`` includes merged in) or the defaults, the command
line's flags and ``--set`` overrides, or a run folder's own ``config.yaml``; validated once, into a
:class:`~.schema.RunConfig`; and a config with some keys changed (:func:`updated`)."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Union

import yaml

from ..errors import ConfigError, one_line
from .files import load_yaml, yaml_problem
from .overrides import apply_overrides, set_value, switch_strategy
from .schema import RunConfig
from .shipped import config_names, config_path, resolve_config
from .validation import validate

__all__ = ["load_config", "read_yaml", "updated"]


def _merge(base: Dict[str, Any], update: Mapping[str, Any]) -> Dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), dict) else value
    return out


def read_yaml(path: Path, _seen: tuple = ()) -> Dict[str, Any]:
    """Reads a config file; a top-level ``base: other.yaml`` (relative to the file, else a shipped config by its
    name) is merged in first.

    Raises:
        ConfigError: the file is missing, unreadable, not YAML or not a mapping (one line naming it).
    """
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass --config with a YAML file or the name of a shipped "
                          f"config ({', '.join(config_names())})")
    if path.resolve() in _seen:
        raise ConfigError(f"config file {path} includes itself through 'base'")
    try:
        raw = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {yaml_problem(error)}") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ConfigError(f"cannot read config file {path} ({one_line(error)}); pass --config with a readable YAML "
                          "file") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(raw).__name__}")
    base = raw.pop("base", None)
    if base is None:
        return raw
    # A base beside the file, else a shipped config by its name or file name (base: fashion_mnist.yaml).
    parent_path = path.parent / str(base)
    if not parent_path.is_file():  # a shipped config by its name, never a file of the working directory
        try:
            parent_path = config_path(str(base))
        except KeyError:
            raise ConfigError(f"config file {path}: base {base!r} is neither a file beside it nor a shipped config "
                              f"({', '.join(config_names())})") from None
    parent = read_yaml(parent_path, _seen + (path.resolve(),))
    # A strategy section that names another strategy replaces the base's instead of merging into it.
    if "name" in raw.get("strategy", {}) and raw["strategy"]["name"] != parent.get("strategy", {}).get("name"):
        parent["strategy"] = switch_strategy(parent.get("strategy", {}), raw["strategy"]["name"])
    return _merge(parent, raw)


def load_config(
    path: Optional[Union[str, Path]] = None,
    overrides: Iterable[str] = (),
    values: Optional[Mapping[str, Any]] = None,
    *,
    base: Optional[Mapping[str, Any]] = None,
) -> RunConfig:
    """Loads a YAML config (or the defaults when ``path`` is None) and validates it.

    Args:
        path: a YAML file, or the name of a shipped config.
        overrides: ``key.sub=value`` strings (``--set``), applied last.
        values: ``{"key.sub": value}`` set before the overrides (dedicated command-line flags); ``strategy.name``
            switches the strategy and keeps the options the new one takes.
        base: a config mapping to start from instead of ``path`` (a run's own ``config.yaml`` for ``--resume``).

    Raises:
        ConfigError: the file cannot be read, or the config is invalid (one line).
    """
    if base is not None:
        raw = copy.deepcopy(dict(base.as_dict() if isinstance(base, RunConfig) else base))
    else:
        raw = read_yaml(resolve_config(path)) if path is not None else {}
    values = dict(values or {})
    if "strategy.name" in values:
        raw["strategy"] = switch_strategy(raw.get("strategy") or {}, values.pop("strategy.name"))
    for key, value in values.items():
        set_value(raw, key, value)
    return validate(apply_overrides(raw, overrides))


def updated(config: RunConfig, values: Mapping[str, Any]) -> RunConfig:
    """A new config: ``config`` with ``{"dotted.key": value}`` set (``{"seed": 1994, "output.dir": "runs/b"}``),
    validated; ``config`` itself is frozen and stays as it was.

    Raises:
        ConfigError: the new config is invalid (one line).
    """
    raw = config.as_dict()
    for key, value in values.items():
        set_value(raw, key, value)
    return validate(raw)
