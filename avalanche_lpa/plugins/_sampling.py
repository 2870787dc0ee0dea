"""Repeated augmentation: the sampler of DeiT's ``RASampler`` semantics, shared by the training and finetuning plugins."""
from __future__ import annotations

import math
from typing import Any, Dict, Iterator, Optional, Tuple

import torch
from avalanche.distributed import DistributedHelper
from torch.utils.data import Sampler

__all__ = ["RepeatedAugmentationSampler", "distributed_rank", "worker_options"]


def distributed_rank() -> Tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` outside a process group."""
    if DistributedHelper.is_distributed:
        return DistributedHelper.rank, DistributedHelper.world_size
    return 0, 1


def worker_options(loader: Any) -> Dict[str, Any]:
    """Worker options for a loader of ours from the loader a strategy built (a ``DataLoader`` or an Avalanche
    multi-dataset loader): its ``num_workers`` and ``pin_memory``, and persistent workers when it has workers.

    Our loaders (training with repeated augmentation, finetuning) live for all the epochs of an experience, so
    their workers start once per experience instead of every epoch (Avalanche's default: 500-600 starts of
    every worker per experience in the authors' recipe). On the project's 2-core CPU the difference was within
    the noise of ``benchmarks/input_pipeline.py`` (its ``restart`` candidate).
    """
    source = getattr(loader, "loader_kwargs", None) or {
        k: getattr(loader, k) for k in ("num_workers", "pin_memory") if hasattr(loader, k)
    }
    options = {k: source[k] for k in ("num_workers", "pin_memory") if k in source}
    if options.get("num_workers"):
        options["persistent_workers"] = True
    return options


class RepeatedAugmentationSampler(Sampler[int]):
    """Each drawn index ``repeats`` times in a row (so each copy gets its own augmentation), sharded over ranks.

    The semantics of DeiT's ``RASampler``, which the authors use (``modules/samplers.py``): per epoch, shuffle
    the indices, repeat each one ``repeats`` times, pad to a multiple of ``num_replicas`` and deal the list to
    the ranks round-robin (the copies of one image land on different ranks), then keep only an epoch of the
    usual length: ``len(dataset)`` truncated to a multiple of ``multiple_of`` (the global batch), split over
    the ranks. An epoch therefore sees about ``1 / repeats`` of the distinct images, each ``repeats`` times.
    At least one global batch is drawn, also from a dataset smaller than one (DeiT would draw nothing).

    Rank-aware itself, like ``DistributedSampler``: ``DistributedPlugin`` leaves it alone. Call
    :meth:`set_epoch` before each epoch for a new order (seeded with ``seed + epoch``).

    Args:
        data_len: size of the dataset.
        repeats: copies of each drawn index (1: a plain shuffled, truncated epoch).
        num_replicas: number of processes.
        rank: this process's rank.
        seed: base seed of the shuffles.
        shuffle: shuffle the indices (else dataset order).
        multiple_of: the epoch's total length is a multiple of this (the global batch); ``None``: 1.
    """

    def __init__(
        self,
        data_len: int,
        repeats: int = 3,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        multiple_of: Optional[int] = None,
    ) -> None:
        if repeats < 1 or num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"need repeats >= 1 and 0 <= rank < num_replicas, got {repeats}, {rank}, {num_replicas}")
        self.data_len = data_len
        self.repeats = repeats
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        step = max(1, multiple_of or 1)
        total = max(data_len // step, 1 if data_len else 0) * step
        self.num_samples = total // num_replicas  # per rank, what the loader draws in one epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if self.data_len == 0:
            return iter([])
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.data_len, generator=generator)
        else:
            order = torch.arange(self.data_len)
        repeated = order.repeat_interleave(self.repeats)
        padded = math.ceil(len(repeated) / self.num_replicas) * self.num_replicas
        # A dataset smaller than a global batch needs more than one round of copies.
        rounds = math.ceil(max(padded, self.num_samples * self.num_replicas) / len(repeated))
        repeated = repeated.repeat(rounds)[: max(padded, self.num_samples * self.num_replicas)]
        return iter(repeated[self.rank :: self.num_replicas][: self.num_samples].tolist())

    def __len__(self) -> int:
        return self.num_samples
