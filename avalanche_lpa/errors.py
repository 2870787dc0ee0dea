"""The error of bad input that every layer above the library may raise, and the one formatter of messages.

Bad input (a config, a flag, a run folder, a file a run reads) is a :class:`ConfigError` whose message is one
line naming the problem and the fix; the command line prints it and exits with status 2. Exceptions of other
libraries are quoted inside such a line through :func:`one_line`, never as their multi-line originals.
"""
from __future__ import annotations

__all__ = ["ConfigError", "one_line", "user_message"]


class ConfigError(ValueError):
    """Bad input: an invalid config, flag, output folder or run file (one line naming the problem and the fix)."""


def one_line(error: BaseException, limit: int = 240, *, kind: bool = False) -> str:
    """``error``'s message on one line (whitespace folded), cut to ``limit`` characters.

    Args:
        error: the exception to quote.
        limit: the longest text returned; a longer message ends in ``...``.
        kind: put the exception's type in front (``OSError: ...``): for messages whose type says something.
    """
    text = " ".join(str(error).split())
    if kind:
        text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    text = text or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def user_message(error: BaseException) -> str:
    """The message a user reads for ``error``: its own, or the original one where PyTorch re-raised an error of a
    DataLoader worker with the worker's traceback in front of it (``Caught ... in DataLoader worker process 0``)."""
    text = str(error)
    if "Original Traceback" not in text:
        return text
    last = [line for line in text.strip().splitlines() if line.strip()][-1]
    name = type(error).__name__
    return last.split(f"{name}: ", 1)[1] if f"{name}: " in last else last
