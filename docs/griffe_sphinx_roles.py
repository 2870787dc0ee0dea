"""A griffe extension for the documentation site: the Sphinx roles of our docstrings as cross-references.

The docstrings name other objects the Sphinx way (``:class:`~.schema.RunConfig```, ``:func:`build_strategy```), which
reads well in an editor and in ``help()``. mkdocstrings renders Markdown, where such a role would show as raw text;
this extension turns each into an optional autorefs link: a link where the target is on the site (the API
reference), the name in code font where it is not (another library's object, a private helper).
"""
from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|func|data|meth|mod|attr|exc|obj|const):`(?P<tilde>~?)(?P<target>[\w.]+)(?:\(\))?`")


def _module_path(obj: Any) -> str:
    module = obj if obj.is_module else obj.module
    return module.path if module.is_package or module.is_init_module else module.path.rpartition(".")[0]


def _identifier(target: str, obj: Any) -> str:
    """A role's target as a full path: ``.schema.RunConfig`` from the object's package, ``Run.train`` from its
    module, an absolute path as it is."""
    if target.startswith("."):
        return f"{_module_path(obj)}.{target.lstrip('.')}"
    if target.split(".")[0] in obj.module.members:  # a name of the object's own module (or imported into it)
        member = obj.module.members[target.split(".")[0]]
        return ".".join([member.target_path if member.is_alias else member.path, *target.split(".")[1:]])
    return target


def convert(text: str, obj: Any) -> str:
    """``text`` with every Sphinx role replaced by an optional autorefs cross-reference."""

    def link(match: "re.Match[str]") -> str:
        target = match["target"]
        title = target.rpartition(".")[2] if match["tilde"] else target.lstrip(".")
        return f'<autoref identifier="{_identifier(target, obj)}" optional><code>{title}</code></autoref>'

    return ROLE.sub(link, text)


class SphinxRoles(griffe.Extension):
    """Converts the Sphinx roles of every docstring griffe loads (see the module's docstring)."""

    def on_object(self, *, obj: Any, **kwargs: Any) -> None:
        if obj.docstring is not None and ":`" in obj.docstring.value:
            obj.docstring.value = convert(obj.docstring.value, obj)
