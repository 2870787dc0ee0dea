"""The shipped run configurations (``*.yaml`` beside this file), installed with the package.

A config is addressed by name (``cifar100_b0_10steps``, with or without ``.yaml``) or by a path to any YAML
file; ``avalanche-lpa configs`` lists the names with the first sentence of each file's leading comment.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Union

__all__ = ["CONFIG_DIR", "config_names", "config_path", "describe", "resolve_config"]

#: The folder that holds the shipped configs (inside the installed package).
CONFIG_DIR = Path(__file__).resolve().parent


def config_names() -> List[str]:
    """Names of the shipped configs, sorted."""
    return sorted(path.stem for path in CONFIG_DIR.glob("*.yaml"))


def config_path(name: str) -> Path:
    """The file of the shipped config ``name`` (``KeyError`` naming the valid ones if there is none)."""
    path = CONFIG_DIR / f"{name[:-5] if name.endswith('.yaml') else name}.yaml"
    if not path.is_file():
        raise KeyError(f"no shipped config named {name!r}; shipped: {', '.join(config_names())}")
    return path


def resolve_config(value: Union[str, Path]) -> Path:
    """A ``--config`` value as a file: an existing path as it is, else the shipped config of that name.

    A value that is neither is returned unchanged, so that the reader reports the missing file.
    """
    path = Path(value)
    if path.is_file() or len(path.parts) != 1:
        return path
    try:
        return config_path(str(value))
    except KeyError:
        return path


def describe(path: Path, width: int = 100) -> str:
    """The first sentence of the comment block that opens a config file, cut to ``width`` characters."""
    lines: List[str] = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    text = " ".join(lines)
    end = text.find(". ")
    sentence = text[: end + 1] if end >= 0 else text
    return sentence if len(sentence) <= width else sentence[: width - 1].rstrip() + "…"


def descriptions() -> Dict[str, str]:
    """``{name: description}`` of every shipped config."""
    return {name: describe(config_path(name)) for name in config_names()}
