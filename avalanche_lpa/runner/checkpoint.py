"""Atomic, resumable checkpoints on top of Avalanche's ``save_checkpoint`` / ``maybe_load_checkpoint``.

avalanche-lib 0.5 / 0.6 pickle the whole strategy with ``dill``, which fails on current torch's optimizers and on
the memory-loader generators of some replay strategies: ``compat.dill_pickling`` registers the reducers, called
here right before each save and load. And:

* Avalanche writes the file in place: a run killed while saving leaves a truncated checkpoint. We write to a
  temporary file in the same folder and ``os.replace`` it, and turn a corrupt file into a clear error.
* Avalanche's loader prints a line per device it maps (``Mapping cpu to cpu``) on the console: read silently.
* Checkpoints of version 0.1.0 before the runner had a package of its own name our classes by their old modules
  (``avalanche_lpa.experiment.midway``, ``.console``): they load under today's names.
"""
from __future__ import annotations

import contextlib
import errno
import importlib
import io
import os
import sys
from typing import Any, Iterator, Optional, Sequence, Tuple, TypeVar, Union

from avalanche.checkpointing import maybe_load_checkpoint, save_checkpoint

from ..compat.dill_pickling import register_generator_reducer, register_optimizer_reducers
from ..errors import one_line
from ..files import atomic_path
from ..plugins.herding import drop_gathered_memories, gather_rank_memories

__all__ = [
    "every_rank_memory",
    "CheckpointError",
    "save_checkpoint_atomic",
    "load_checkpoint",
]

T = TypeVar("T")
PathLike = Union[str, os.PathLike]


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be read."""


def _is_write_failure(error: RuntimeError) -> bool:
    """torch's file writer reports a failed write (full disk, I/O error) as a ``RuntimeError`` of its own."""
    text = str(error)
    return "inline_container" in text or "PytorchStreamWriter" in text or "file write failed" in text


def save_checkpoint_atomic(strategy, path: PathLike, exclude: Optional[Sequence[str]] = None) -> None:
    """Saves ``strategy`` with Avalanche's ``save_checkpoint``, atomically (temp file + ``os.replace``).

    Raises:
        WriteError: the file could not be written (one line; the previous checkpoint is intact).
    """
    register_optimizer_reducers()
    register_generator_reducer()
    with atomic_path(path) as tmp:
        try:
            save_checkpoint(strategy, str(tmp), exclude=exclude)
        except RuntimeError as error:
            if not _is_write_failure(error):
                raise
            raise OSError(errno.EIO, f"torch could not write the file: {one_line(error)}") from error


@contextlib.contextmanager
def every_rank_memory(strategy: Any) -> Iterator[None]:
    """While a checkpoint is written: every rank's per-rank memory in the strategy rank 0 saves (call on every
    process at once: it gathers); :func:`~avalanche_lpa.plugins.herding.restore_rank_memory` takes each back."""
    gather_rank_memories(strategy)
    try:
        yield
    finally:
        drop_gathered_memories(strategy)


#: Modules that held pickled classes before the runner was ``avalanche_lpa.runner``, and where they are now.
_MOVED_MODULES = {
    "avalanche_lpa.experiment": "avalanche_lpa.runner",
    "avalanche_lpa.experiment.midway": "avalanche_lpa.runner.midway",
    "avalanche_lpa.experiment.console": "avalanche_lpa.runner.console",
}


@contextlib.contextmanager
def _old_module_names() -> Iterator[None]:
    added = [old for old in _MOVED_MODULES if old not in sys.modules]
    for old in added:
        sys.modules[old] = importlib.import_module(_MOVED_MODULES[old])
    try:
        yield
    finally:
        for old in added:
            sys.modules.pop(old, None)


def load_checkpoint(strategy: T, path: PathLike, map_location=None) -> Tuple[T, int]:
    """Restores ``strategy`` from ``path`` if it exists; returns ``(strategy, index of the next experience)``.

    Raises:
        CheckpointError: the file exists but is truncated, corrupt or unreadable.
    """
    register_optimizer_reducers()
    if not os.path.exists(path):
        return strategy, 0
    try:
        # avalanche-lib 0.5, 0.6 print "Mapping <device> to <device>" for every device they map
        with contextlib.redirect_stdout(io.StringIO()), _old_module_names():
            return maybe_load_checkpoint(strategy, str(path), map_location=map_location)
    except Exception as error:  # torch/dill raise many types for a damaged file
        raise CheckpointError(
            f"cannot read checkpoint {path} ({one_line(error, kind=True)}); it is corrupt "
            "or from an incompatible version: start the run afresh with --overwrite (deletes this run's files) "
            "or choose another --output"
        ) from error
