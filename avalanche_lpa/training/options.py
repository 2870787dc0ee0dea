"""The type of every strategy option, checked where options enter: ``build_strategy`` and the config's ``strategy``.

An option's type is its default's (``lr=1e-3``: a number); an option whose default is ``None`` takes ``None`` or
the type in :data:`NULLABLE_TYPES`. A wrong type is refused in one line naming the option, the value and the
type expected, before any plugin sees it (``finetune={"lr": "1e-3"}`` used to reach ``BalancedFinetuningPlugin`` and
fail there with a ``TypeError``).
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Sequence

from ..plugins import MEMORY_SCOPES, REPLAY_MODES

__all__ = ["CHOICES", "NULLABLE_TYPES", "OptionTypeError", "check_option", "check_options", "type_name"]

#: Types of the options whose default is ``None`` (``None`` is allowed too).
NULLABLE_TYPES: Dict[str, type] = dict(
    param_groups=bool,
    epochs_first=int,
    eval_mb_size=int,
    batch_size_mem=int,
    decay_factor=float,
)


#: Options that take one of a few names: a value outside them (of any type) is refused with the list.
CHOICES: Dict[str, Sequence[str]] = dict(
    replay_mode=REPLAY_MODES,
    memory_scope=MEMORY_SCOPES,
)


class OptionTypeError(ValueError):
    """An option's value has the wrong type."""


def type_name(value: Any) -> str:
    """``"a number"``, ``"a string"``, ... for the type of ``value`` (or a type)."""
    kind = value if isinstance(value, type) else type(value)
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
             tuple: "a list", dict: "a mapping"}
    return names.get(kind, kind.__name__)


def check_option(key: str, value: Any, default: Any, *, option: str = "") -> Any:
    """``value`` in the type of ``default`` (an integral number for an int, an int as float for a float).

    Args:
        key: the name shown in the error (``"strategy.lr"`` in a config, ``"lr"`` for ``build_strategy``).
        value: the value given.
        default: the option's default; ``None`` looks ``option`` (or ``key``) up in :data:`NULLABLE_TYPES`.
        option: the bare option name, when ``key`` has a prefix.

    Raises:
        OptionTypeError: the value has another type (or is not one of :data:`CHOICES`).
    """
    choices = CHOICES.get(option or key)
    if choices is not None:
        if not isinstance(value, str) or value not in choices:
            raise OptionTypeError(f"{key} must be one of {', '.join(choices)}, got {value!r}")
        return value
    if value is None:
        return value
    if default is None:
        expected = NULLABLE_TYPES.get(option or key)
        if expected is None:
            return value
        default = expected(1)
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        # 2e3 (a float in YAML) is a fine spelling of 2000; 2.5 is not an integer.
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, (list, tuple))
        value = list(value) if ok else value  # what YAML holds: a config reads back equal to what was written
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise OptionTypeError(f"{key}: expected {type_name(default)}, got {value!r} ({type_name(value)})")
    return value


def check_options(options: Mapping[str, Any], defaults: Mapping[str, Any], prefix: str = "",
                  skip: Sequence[str] = ()) -> Dict[str, Any]:
    """Every option of ``options`` checked against its default in ``defaults`` (unknown names and ``skip``, options
    checked elsewhere, are left alone)."""
    return {
        key: check_option(prefix + key, value, defaults[key], option=key) if key in defaults and key not in skip
        else value
        for key, value in options.items()
    }
