"""What avalanche-lib 0.5 / 0.6 checkpoints need from ``dill`` that it does not do by itself.

* Avalanche serialises the whole strategy with ``dill``. On torch >= 2.13 dill pickles the ``torch.optim``
  classes by value and fails (``PicklingError: Can't pickle sentinel``) on a ``typing_extensions`` sentinel
  inside their methods: :func:`register_optimizer_reducers` stores each optimizer class by name plus the
  optimizer's ``__getstate__`` (hyper-parameters, state and the very parameter objects, so they stay shared
  with the model inside the pickle).
* AGEM, MIR, ER_AML and FeatureReplay keep endless generators over their memory loaders between experiences
  (``cycle(loader)``, ``iter(loader)``), which no pickler can save: :func:`register_generator_reducer` pickles
  such a generator as a fresh one over the same loader (it restarts the shuffled pass over the memory, which is
  all a replay batch needs).
"""
from __future__ import annotations

import importlib
import types
from typing import Any, Callable, Optional, Tuple

import dill
import torch

__all__ = ["register_generator_reducer", "register_optimizer_reducers"]


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
