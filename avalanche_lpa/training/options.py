"""The one type checker of the package, and the strategy's options as one resolved, typed object.

:func:`check_type` checks a value against an annotation (``int``, ``Optional[float]``, ``List[int]``,
``Sequence[str]``, ``Dict[str, Any]``): the config's keys (their dataclass fields), the strategy options (typed by
their defaults, :func:`option_hint`) and the plugin sections (the plugin's own annotations) all go through it. A
wrong type is refused in one line naming the key, the value and the type expected, before any plugin sees it.

:class:`StrategyOptions` is what resolving a strategy's options gives (``resolve_options`` in the builder): every
option of the strategy with its value, plugin sections composed with the preset's, checked once; the config holds
it and ``build_strategy`` takes it as it is.
"""
from __future__ import annotations

import collections.abc
import typing
from types import MappingProxyType
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from ..plugins import MEMORY_SCOPES, OLD_SCOPE_NAMES, PRECISIONS, REPLAY_MODES
from .optim import OPTIMIZERS

__all__ = [
    "CHOICES", "NULLABLE_TYPES", "OLD_SCOPE_NAMES", "OptionTypeError", "StrategyOptions", "check_option", "check_options",
    "check_type", "option_hint", "plain_values", "type_name",
]

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
    precision=tuple(PRECISIONS),
    optimizer=OPTIMIZERS,
    ewc_mode=("separate", "online"),  # Avalanche's EWCPlugin modes
)


class OptionTypeError(ValueError):
    """An option's value has the wrong type."""


_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
          tuple: "a list", dict: "a mapping"}


def type_name(value: Any) -> str:
    """``"a number"``, ``"a string"``, ... for the type of ``value`` (or a type, or an annotation)."""
    origin = typing.get_origin(value)
    if origin is not None and not isinstance(value, type):
        if origin in (list, tuple, collections.abc.Sequence):
            return "a list"
        if origin in (dict, collections.abc.Mapping):
            return "a mapping"
    kind = value if isinstance(value, type) else type(value)
    return _NAMES.get(kind, kind.__name__)


def _mismatch(key: str, value: Any, hint: Any) -> OptionTypeError:
    return OptionTypeError(f"{key}: expected {type_name(hint)}, got {value!r} ({type_name(value)})")


def check_type(key: str, value: Any, hint: Any) -> Any:
    """``value`` checked against the annotation ``hint``, in YAML's types (a tuple as a list).

    Numbers are taken in any spelling: an integral float for an ``int`` (``2e3``), an int for a ``float``;
    a boolean is never a number. ``Optional[X]`` allows ``None``; a mapping annotation takes ``None`` as empty.

    Raises:
        OptionTypeError: one line naming the key, the value and the type expected.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin is Union:  # Optional[X]
        if value is None:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        return check_type(key, value, hint)
    if origin in (list, tuple, collections.abc.Sequence) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise OptionTypeError(f"{key}: expected a list, got {value!r} ({type_name(value)})")
        item = args[0] if args else Any
        return [check_type(f"{key}[{index}]", element, item) for index, element in enumerate(value)]
    if origin in (dict, collections.abc.Mapping) or hint in (dict, Mapping):
        if value is None:  # `kwargs:` with nothing after it, in YAML: none
            return {}
        if not isinstance(value, Mapping):
            raise OptionTypeError(f"{key}: expected a mapping, got {value!r} ({type_name(value)})")
        return dict(value)
    if value is None:
        raise OptionTypeError(f"{key}: expected {type_name(hint)}, got null")
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif hint is int:
        if isinstance(value, float) and value.is_integer():  # 2e3 (a float in YAML) is a fine spelling of 2000
            value = int(value)
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, hint)
    if not ok:
        raise _mismatch(key, value, hint)
    return value


def option_hint(option: str, default: Any) -> Any:
    """The annotation of a strategy option: its default's type (a list for a sequence), ``Optional[...]`` of
    :data:`NULLABLE_TYPES` for one whose default is ``None`` (``Any`` if it is not listed there)."""
    if default is None:
        return Optional[NULLABLE_TYPES[option]] if option in NULLABLE_TYPES else Any
    if isinstance(default, (list, tuple)):
        return List[Any]
    return type(default)


def check_option(key: str, value: Any, default: Any, *, option: str = "") -> Any:
    """A strategy option's ``value`` checked against its default (:func:`option_hint`) or its names (:data:`CHOICES`).

    Args:
        key: the name shown in the error (``"strategy.lr"`` in a config, ``"lr"`` for ``build_strategy``).
        value: the value given.
        default: the option's default.
        option: the bare option name, when ``key`` has a prefix.

    Raises:
        OptionTypeError: the value has another type (or is not one of :data:`CHOICES`).
    """
    choices = CHOICES.get(option or key)
    if choices is not None:
        if not isinstance(value, str) or value not in choices:
            raise OptionTypeError(f"{key} must be one of {', '.join(choices)}, got {value!r}")
        return value
    if value is None:  # an option may always be unset (its default, or the preset's, applies)
        return value
    return check_type(key, value, option_hint(option or key, default))


def check_options(options: Mapping[str, Any], defaults: Mapping[str, Any], prefix: str = "",
                  skip: Sequence[str] = ()) -> Dict[str, Any]:
    """Every option of ``options`` checked against its default in ``defaults`` (unknown names and ``skip``, options
    checked elsewhere, are left alone); ``prefix`` is shown before the names in errors."""
    return {
        key: check_option(prefix + key, value, defaults[key], option=key) if key in defaults and key not in skip
        else value
        for key, value in options.items()
    }


def plain_values(value: Any) -> Any:
    """``value`` in YAML's types: mappings as dicts, tuples as lists (a config reads back equal to what was written)."""
    if isinstance(value, Mapping):
        return {k: plain_values(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_values(v) for v in value]
    return value


@dataclass(frozen=True)
class StrategyOptions(Mapping):
    """A strategy's options, resolved once: every option of strategy :attr:`name` with its value.

    Plugin sections hold ``False`` or every keyword argument of their plugin; the values are in YAML's types, so
    :meth:`as_dict` is what a config file holds. Read it as a mapping (``options["lr"]``).

    Attributes:
        name: the strategy (a name of ``build_strategy``).
        values: the options (without ``name``).
    """

    name: str
    values: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", MappingProxyType(dict(self.values)))  # read-only, as the name is

    def __reduce__(self) -> Tuple[Any, ...]:  # pickle and deepcopy: a mapping proxy is neither
        return (type(self), (self.name, dict(self.values)))

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)

    def as_dict(self) -> Dict[str, Any]:
        """``{"name": ..., **options}``: the ``strategy`` section of a config file."""
        return {"name": self.name, **self.values}
