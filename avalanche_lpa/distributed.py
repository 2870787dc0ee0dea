"""The process group of a ``torchrun`` job (PyTorch DDP) for Avalanche strategies, on Avalanche's ``DistributedHelper``.

Usage (the experiment runner does this)::

    info = init_distributed()                       # reads torchrun's env; a no-op in a plain ``python`` run
    strategy = build_strategy(name, model, device=info.device, plugins=[DistributedPlugin()], ...,
                              evaluator=cil_evaluator(loggers=main_process_loggers(make_loggers)))
    for exp in benchmark.train_stream:
        strategy.train(exp)
        strategy.eval(benchmark.test_stream)
    on_main(write_results, path, summarize(strategy))  # rank 0 writes, every rank waits for it
    shutdown_distributed()

This module joins and leaves the group and runs work on rank 0; :class:`~avalanche_lpa.plugins.DistributedPlugin`
makes a strategy train with DDP, and :mod:`avalanche_lpa.data.sharding` deals each process its part of the data.
For the rest, use Avalanche's ``DistributedHelper`` (``is_main_process``, ``unwrap_model``, ``barrier``, ...).
Which plugins and metrics of this package are distributed-safe: docs/distributed.md.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, TypeVar, Union

import torch
import torch.distributed as dist
from avalanche.distributed import DistributedHelper

__all__ = [
    "DistInfo",
    "dist_info",
    "init_distributed",
    "main_process_loggers",
    "on_main",
    "shutdown_distributed",
]

T = TypeVar("T")


# -- process group ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the job.

    Attributes:
        rank: global rank (0 in a single-process run).
        world_size: number of processes (1 in a single-process run).
        local_rank: rank on this node; the CUDA device index when training on GPUs.
        device: the device this process trains on (pass it to ``build_strategy``).
        backend: ``"nccl"``, ``"gloo"``, ...; ``None`` without a process group.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: Optional[str] = None

    @property
    def is_main(self) -> bool:
        """True in the process that writes files and logs (rank 0)."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        """True when a process group with more than one process is running."""
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


def _default_device(local_rank: int) -> torch.device:
    return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")


def dist_info() -> DistInfo:
    """The current :class:`DistInfo`, without initialising anything."""
    local_rank = _env_int("LOCAL_RANK", 0)
    device = _default_device(local_rank)
    if DistributedHelper.use_cuda:
        device = torch.device("cuda", torch.cuda.current_device())
    elif DistributedHelper.is_distributed:
        device = torch.device("cpu")
    if not DistributedHelper.is_distributed:
        return DistInfo(0, 1, local_rank, device)
    return DistInfo(DistributedHelper.rank, DistributedHelper.world_size, local_rank, device, DistributedHelper.backend)


def init_distributed(
    backend: Optional[str] = None,
    *,
    device: Optional[Union[str, torch.device]] = None,
    seed: Optional[int] = None,
    timeout: Optional[datetime.timedelta] = None,
    single_process_group: bool = False,
) -> DistInfo:
    """Joins the process group that ``torchrun`` describes in the environment; a no-op without one.

    Reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. Without ``WORLD_SIZE``
    (a plain ``python`` run) or with ``WORLD_SIZE=1`` (unless ``single_process_group``) nothing is initialised
    and a single-process :class:`DistInfo` is returned. Calling it again returns the running group's info.

    Avalanche's ``DistributedHelper.init_distributed`` is not used on purpose: in avalanche-lib 0.6 it selects
    ``cuda:{global rank}``, a device that does not exist on the second node of a multi-node job. Here the
    device comes from ``LOCAL_RANK``, and ``DistributedHelper`` (which reads rank and world size from
    ``torch.distributed``) is told about it, so its helpers and Avalanche's loaders work as usual.

    Args:
        backend: ``None`` picks ``"nccl"`` when training on CUDA, else ``"gloo"``.
        device: ``None`` picks ``cuda:<LOCAL_RANK>`` when CUDA is available, else the CPU.
        seed: seeds Python, NumPy and torch identically in every process (Avalanche's ``RNGManager``).
            ``None`` broadcasts a random seed from rank 0. Processes must agree on random draws made
            outside the sharded data (replay-memory selection, new head units).
        timeout: collective-operation timeout (PyTorch's default when ``None``).
        single_process_group: also create the group when ``WORLD_SIZE=1`` (under ``torchrun``), so that a
            backend's collectives run on a machine with one device: one GPU can host only one NCCL rank.

    Returns:
        This process's :class:`DistInfo`.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", 0)
    target = torch.device(device) if device is not None else _default_device(local_rank)
    if target.type == "cuda" and target.index is None:
        target = torch.device("cuda", local_rank)
    if DistributedHelper.is_distributed:
        return dist_info()
    if world_size <= 1 and not (single_process_group and "MASTER_ADDR" in os.environ):
        if seed is not None:
            DistributedHelper.set_random_seeds(seed)
        return DistInfo(0, 1, local_rank, target)

    use_cuda = target.type == "cuda"
    if use_cuda:
        torch.cuda.set_device(target)
    backend = backend or ("nccl" if use_cuda else "gloo")
    kwargs: Dict[str, Any] = {} if timeout is None else {"timeout": timeout}
    dist.init_process_group(backend=backend, **kwargs)
    # DistributedHelper keeps these two itself when it initialises; avalanche-lib 0.6 has no setter for the
    # unpickling device map (used by gather_all_objects for CUDA tensors), hence the private attribute.
    DistributedHelper.use_cuda = use_cuda
    DistributedHelper._dev_map = DistributedHelper._make_map(target)
    if seed is not None:
        DistributedHelper.set_random_seeds(seed)
    else:
        DistributedHelper.align_seeds()
    return DistInfo(DistributedHelper.rank, DistributedHelper.world_size, local_rank, target, backend)


def shutdown_distributed() -> None:
    """Leaves the process group (after a final barrier); a no-op in a single-process run."""
    if DistributedHelper.is_distributed:
        DistributedHelper.barrier()
        dist.destroy_process_group()



def on_main(fn: Callable[..., T], *args: Any, **kwargs: Any) -> Optional[T]:
    """Runs ``fn(*args, **kwargs)`` in rank 0 only (writing results, checkpoints, plots); call it in every process.

    The other processes wait until rank 0 is done, so a file written here can be read right after the call.
    If ``fn`` fails in rank 0 it raises there, and the others raise a ``RuntimeError`` naming the error instead
    of waiting forever.

    Returns:
        ``fn``'s result in rank 0 (and in a single-process run), ``None`` in the other processes.
    """
    if not DistributedHelper.is_distributed:
        return fn(*args, **kwargs)
    result: Optional[T] = None
    error: Optional[BaseException] = None
    if DistributedHelper.is_main_process:
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:  # reported to the other ranks below, then re-raised
            error = exc
    status = DistributedHelper.broadcast_object(None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    if status is not None:
        raise RuntimeError(f"rank 0 failed in {getattr(fn, '__qualname__', fn)!s}: {status}")
    return result


def main_process_loggers(factory: Callable[[], Sequence[Any]]) -> List[Any]:
    """``factory()`` in rank 0, ``[]`` elsewhere: Avalanche loggers raise when created in another process.

    Use it for the ``loggers`` of ``EvaluationPlugin`` / ``cil_evaluator`` (where ``None`` would create an
    ``InteractiveLogger`` in every process).
    """
    return list(factory()) if DistributedHelper.is_main_process else []
