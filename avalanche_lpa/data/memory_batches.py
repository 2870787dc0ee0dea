"""Memory batches drawn from the seed and dealt over the processes, for the Avalanche strategies that read their
memory through loaders of their own.

Avalanche's DER, ER-ACE and FeatureReplay read their replay batches from ``cycle(DataLoader(memory, batch_size_mem,
shuffle=True, drop_last=True))``, and A-GEM its reference samples from a ``GroupBalancedInfiniteDataLoader`` over
the memory of each experience (avalanche-lib 0.5.0, 0.6.0). Under ``torchrun`` each process shuffles those from its
own random state (A-GEM: a ``DistributedSampler`` of seed 0 under torchrun, no shuffle at all in one process), so
another number of processes reads other memory batches and trains another model, although DDP averages the
gradients. Here every process draws the same global memory batch from the seed and reads its part of it, as
:mod:`~avalanche_lpa.data.sharding` deals the training batches: ``W`` processes with memory batch ``b`` read, step by
step, what one process with ``W b`` reads. :class:`~avalanche_lpa.plugins.DistributedPlugin` installs them.

Both are plain iterators with their position inside, so a checkpoint taken mid-experience pickles them and a resumed
run goes on with the next batch.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence

import torch
from torch.utils.data import default_collate

__all__ = ["MemoryBatches", "MemoryStream", "ReferenceSamples", "memory_loader"]


class MemoryStream:
    """The indices of a memory of ``size`` samples as one endless stream: successive permutations, each drawn from
    ``(seed, pass)``. :meth:`take` goes on where the last call stopped; every process draws the same stream."""

    def __init__(self, size: int, seed: int) -> None:
        if size <= 0:
            raise ValueError(f"a memory stream needs at least one sample, got {size}")
        self.size, self.seed = size, seed
        self.position = 0  # indices taken so far
        self._pass, self._order = -1, []  # the permutation in use (rebuilt from the seed after unpickling too)

    def take(self, count: int) -> List[int]:
        """The next ``count`` indices (a count above ``size`` runs into the next permutation)."""
        taken: List[int] = []
        while len(taken) < count:
            number, offset = divmod(self.position, self.size)
            if number != self._pass:
                generator = torch.Generator().manual_seed(self.seed + 7919 * number)
                self._pass, self._order = number, torch.randperm(self.size, generator=generator).tolist()
            part = self._order[offset:offset + count - len(taken)]
            taken += part
            self.position += len(part)
        return taken


def _collate(dataset: Any, samples: Sequence[Any]) -> Any:
    collate = getattr(dataset, "collate_fn", None) or default_collate
    return collate(list(samples))


class MemoryBatches:
    """One process's endless memory batches: each step the next ``batch_size * world_size`` indices of a
    :class:`MemoryStream` over ``dataset`` form the global memory batch, of which process ``rank`` reads the
    ``rank``-th ``batch_size`` (collated as the dataset collates)."""

    def __init__(self, dataset: Any, batch_size: int, *, rank: int, world_size: int, seed: int) -> None:
        self.dataset, self.batch_size, self.rank, self.world_size = dataset, batch_size, rank, world_size
        self.stream = MemoryStream(len(dataset), seed)

    def __iter__(self) -> "MemoryBatches":
        return self

    def __next__(self) -> Any:
        indices = self.stream.take(self.batch_size * self.world_size)
        mine = indices[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
        return _collate(self.dataset, [self.dataset[i] for i in mine])


def memory_loader(dataset: Any, batch_size: int, *, rank: int, world_size: int, seed: int) -> Optional[MemoryBatches]:
    """:class:`MemoryBatches` over ``dataset`` in place of the memory loader of Avalanche's DER, ER-ACE or
    FeatureReplay; ``None`` (no replay yet, as theirs) while the memory holds less than one global memory batch."""
    if len(dataset) < batch_size * world_size:
        return None
    return MemoryBatches(dataset, batch_size, rank=rank, world_size=world_size, seed=seed)


class ReferenceSamples:
    """One process's endless A-GEM reference samples: each step a global batch of ``sample_size * world_size``
    samples from the memories of the experiences seen (``datasets``, one :class:`MemoryStream` each), spread over
    them as evenly as possible (the first ``total % len(datasets)`` give one more), of which process ``rank`` reads
    the ``rank``-th ``sample_size``.

    Avalanche's A-GEM takes ``sample_size // len(datasets)`` of each; here the global batch always holds
    ``sample_size * world_size``, so that equal parts of it make the processes' mean losses average to its mean.
    """

    def __init__(self, datasets: Sequence[Any], sample_size: int, *, rank: int, world_size: int, seed: int) -> None:
        self.datasets, self.sample_size, self.rank, self.world_size = list(datasets), sample_size, rank, world_size
        self.streams = [MemoryStream(len(d), seed + 1009 * k) for k, d in enumerate(self.datasets)]

    def __iter__(self) -> "ReferenceSamples":
        return self

    def __next__(self) -> Any:
        total, groups = self.sample_size * self.world_size, len(self.datasets)
        pairs = [(k, i) for k, stream in enumerate(self.streams)
                 for i in stream.take(total // groups + (k < total % groups))]
        mine = pairs[self.rank * self.sample_size:(self.rank + 1) * self.sample_size]
        return _collate(self.datasets[0], [self.datasets[k][i] for k, i in mine])
