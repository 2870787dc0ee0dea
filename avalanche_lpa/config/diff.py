"""What may change between a run's ``config.yaml`` and the config of its ``--resume`` / ``--eval-only``, and the
differences of two configs as one line."""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping

__all__ = ["HARMLESS_KEYS", "config_differences", "leaves"]

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

_MISSING = object()


def leaves(value: Any, prefix: str = "") -> Dict[str, Any]:
    """A config (a :class:`~.schema.RunConfig` or its mapping) as ``{"dotted.key": value}`` (an empty section as
    ``{}``)."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, Mapping):
        out: Dict[str, Any] = {}
        for key, sub in value.items():
            out.update(leaves(sub, f"{prefix}.{key}" if prefix else str(key)))
        return out or {prefix: {}}
    return {prefix: list(value) if isinstance(value, tuple) else value}


def config_differences(old: Any, new: Any, ignore: Iterable[str] = (), common_only: bool = False) -> List[str]:
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
