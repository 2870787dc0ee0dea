"""Atomic, resumable checkpoints on top of Avalanche's ``save_checkpoint`` / ``maybe_load_checkpoint``.

Three fixes live here, on our side of Avalanche:

* avalanche-lib 0.5/0.6 serialise the whole strategy with ``dill``. On torch >= 2.13 dill pickles the
  ``torch.optim`` classes by value and fails (``PicklingError: Can't pickle sentinel``) on a
  ``typing_extensions`` sentinel inside their methods. We register a reducer per optimizer class that stores
  the class by name plus the optimizer's ``__getstate__`` (hyper-parameters, state and the very parameter
  objects, so they stay shared with the model inside the pickle).
* Several of Avalanche's replay strategies (AGEM, MIR, ER_AML, FeatureReplay in avalanche-lib 0.5/0.6) keep
  endless generators over their memory loaders between experiences (``cycle(loader)``, ``iter(loader)``),
  which no pickler can save. We pickle such a generator as a fresh one over the same loader: it restarts
  the (shuffled) pass over the memory, which is all a replay batch needs.
* Avalanche writes the file in place: a run killed while saving leaves a truncated checkpoint. We write to a
  temporary file in the same folder and ``os.replace`` it, and turn a corrupt file into a clear error.
"""
from __future__ import annotations

import errno
import importlib
import os
import types
from typing import Any, Callable, Optional, Sequence, Tuple, TypeVar, Union

import dill
import torch
from avalanche.checkpointing import maybe_load_checkpoint, save_checkpoint

from ..files import atomic_path

__all__ = [
    "CheckpointError",
    "save_checkpoint_atomic",
    "load_checkpoint",
    "register_optimizer_reducers",
    "register_generator_reducer",
]

T = TypeVar("T")
PathLike = Union[str, os.PathLike]


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be read."""


def _rebuild_optimizer(module: str, qualname: str, state: dict) -> torch.optim.Optimizer:
    cls = importlib.import_module(module)
    for part in qualname.split("."):
        cls = getattr(cls, part)
    optimizer = cls.__new__(cls)
    optimizer.__setstate__(state)
    return optimizer


def _reduce_optimizer(pickler, optimizer: torch.optim.Optimizer) -> None:
    cls = type(optimizer)
    pickler.save_reduce(_rebuild_optimizer, (cls.__module__, cls.__qualname__, optimizer.__getstate__()), obj=optimizer)


def _all_subclasses(cls: type):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


def register_optimizer_reducers() -> None:
    """Registers the by-name optimizer reducer with dill for every ``torch.optim.Optimizer`` subclass loaded.

    dill dispatches on the exact type, so this walks the subclass tree; call it right before pickling so that
    optimizers defined after import (user code) are covered too.
    """
    for cls in _all_subclasses(torch.optim.Optimizer):
        if "<locals>" not in cls.__qualname__:
            dill.register(cls)(_reduce_optimizer)


def _restart(generator: types.GeneratorType) -> Optional[Tuple[Callable, Tuple[Any, ...]]]:
    """``(function, args)`` that make a fresh equivalent of ``generator``, for the two kinds Avalanche keeps."""
    frame = generator.gi_frame
    if frame is None:  # finished
        return None
    if generator.__name__ == "__iter__" and "self" in frame.f_locals:  # iter(loader) of a generator __iter__
        return iter, (frame.f_locals["self"],)
    function = frame.f_globals.get(generator.__name__)
    if generator.__name__ == "cycle" and getattr(function, "__code__", None) is generator.gi_code:
        return function, (frame.f_locals["loader"],)  # avalanche.training.utils.cycle and MIR's copy of it
    return None


def _reduce_generator(pickler, generator: types.GeneratorType) -> None:
    restart = _restart(generator)
    if restart is None:
        raise dill.PicklingError(
            f"cannot checkpoint the generator {generator.__qualname__}: only restartable loader iterators "
            "(cycle(loader), iter(loader)) can be saved; drop it from the strategy before checkpointing"
        )
    pickler.save_reduce(*restart, obj=generator)


def register_generator_reducer() -> None:
    """Registers with dill the reducer that pickles Avalanche's memory-loader generators as fresh ones."""
    dill.register(types.GeneratorType)(_reduce_generator)


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
            raise OSError(errno.EIO, f"torch could not write the file: {' '.join(str(error).split())}") from error


def load_checkpoint(strategy: T, path: PathLike, map_location=None) -> Tuple[T, int]:
    """Restores ``strategy`` from ``path`` if it exists; returns ``(strategy, index of the next experience)``.

    Raises:
        CheckpointError: the file exists but is truncated, corrupt or unreadable.
    """
    register_optimizer_reducers()
    if not os.path.exists(path):
        return strategy, 0
    try:
        return maybe_load_checkpoint(strategy, str(path), map_location=map_location)
    except Exception as error:  # torch/dill raise many types for a damaged file
        raise CheckpointError(
            f"cannot read checkpoint {path} ({type(error).__name__}: {' '.join(str(error).split())}); it is corrupt "
            "or from an incompatible version: start the run afresh with --overwrite (deletes this run's files) "
            "or choose another --output"
        ) from error
