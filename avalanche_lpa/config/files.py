"""Config files in and out: YAML in every common spelling of numbers, the text a run folder keeps as
``config.yaml``, and a run folder's ``config.yaml`` as written."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Dict, Optional

import yaml

from ..errors import ConfigError, one_line
from ..training.options import plain_values
from .upgrade import run_folder_values

__all__ = ["dump_config", "load_yaml", "read_run_yaml", "yaml_problem"]


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader that also reads ``1e-3``, ``1e6``, ``1.0e6``, ``1E+6`` as numbers.

    PyYAML follows YAML 1.1, whose floats need a dot and a signed exponent (``1.0e+6``); YAML 1.2 and every
    programming language accept the other spellings too, and they are what people type. A key given twice in
    one mapping is an error (PyYAML keeps the last silently: a second ``data:`` section would drop the first).
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Dict[Any, Any]:
        seen: Dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice in one mapping (lines {seen[key].line + 1} and "
                    f"{key_node.start_mark.line + 1}); keep one")
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(  # copies the inherited resolvers first: yaml.SafeLoader is unchanged
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """Parses YAML like ``yaml.safe_load``, with numbers in every common spelling (``1e-3``, ``-2.5E+4``, ``.5``)."""
    return yaml.load(text, Loader=_Loader)


def yaml_problem(error: yaml.YAMLError) -> str:
    """PyYAML's multi-line message as one line: the problem and where."""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    mark = getattr(error, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"


def dump_config(config: Any) -> str:
    """A config (a :class:`~.schema.RunConfig` or a mapping) as YAML text: what a run folder keeps as
    ``config.yaml`` and ``--print-config`` prints."""
    mapping = config.as_dict() if hasattr(config, "as_dict") else plain_values(config)
    return yaml.safe_dump(mapping, sort_keys=False)


def read_run_yaml(folder: os.PathLike) -> Optional[Dict[str, Any]]:
    """The ``config.yaml`` of a run folder as written (not validated), ``None`` if there is none.

    Keys added after the run started are filled with the values it ran with
    (:func:`~avalanche_lpa.config.upgrade.run_folder_values`), so that it resumes and reports as it ran.

    Raises:
        ConfigError: the file cannot be read or is not YAML (one line).
    """
    path = Path(folder) / "config.yaml"
    if not path.is_file():
        return None
    fix = "fix it, or start the run afresh with --overwrite"
    try:
        raw = load_yaml(path.read_text())
    except Exception as error:  # the folder's file was edited or damaged
        raise ConfigError(f"{path} is not a valid config ({one_line(error)}); {fix}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} is not a valid config (not a mapping); {fix}")
    return dict(run_folder_values(raw))
