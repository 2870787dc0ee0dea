"""Avalanche's deprecation warnings, each shown once per run (avalanche-lib 0.5 / 0.6)."""
from __future__ import annotations

import contextlib
import warnings
from typing import Iterator

__all__ = ["each_deprecation_once"]


@contextlib.contextmanager
def each_deprecation_once() -> Iterator[None]:
    """Shows every distinct ``DeprecationWarning`` once while the block runs.

    Avalanche's ``@deprecated`` calls ``warnings.simplefilter("once"|"always")`` before each warning; changing
    the filters resets the registry that "once" relies on, so a filter cannot stop the repeats (one per
    experience). This wraps ``warnings.showwarning`` for the block instead.
    """
    shown = set()
    original = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, DeprecationWarning):
            key = (str(message), category)
            if key in shown:
                return
            shown.add(key)
        original(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = original
