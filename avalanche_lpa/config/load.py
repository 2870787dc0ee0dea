"""A run's config from where it comes from: a YAML file (or the defaults), the command line's flags and ``--set``
overrides, or a run folder's own ``config.yaml``; validated once, into a :class:`~.schema.RunConfig`."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Union

from .files import read_yaml
from .overrides import apply_overrides, set_value, switch_strategy
from .schema import RunConfig
from .shipped import resolve_config
from .validation import validate

__all__ = ["load_config"]


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
