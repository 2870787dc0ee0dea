"""Each process's part of a training loader (plain ``DataLoader`` or Avalanche's multi-dataset loaders), drawn from
a seed so that the global batches are the same under any number of processes.

:class:`~avalanche_lpa.plugins.DistributedPlugin` calls :func:`shard_loader` before every training epoch (in one
process too, unless ``data.sample_order`` is ``avalanche``) and :func:`whole_loader` before every evaluated
experience. Why the plugin re-shards at all: in avalanche-lib 0.5 / 0.6 the train loader of a benchmark of the new
API (experiences without ``task_labels``) has no distributed sampler, the multi-dataset loaders build a fresh
``DistributedSampler`` at epoch 0 on every pass (each epoch the same order), and the evaluation loaders are sharded
while no metric is reduced (listed in ``compat``).

Why the batches match: every dataset of a loader is drawn in one permutation of its indices (seed, epoch), dealt to
the processes round-robin as ``DistributedSampler`` deals it. Process ``r`` of ``W`` reads positions ``r, r + W,
...``, so its ``k``-th batch of ``b`` holds the permutation's positions ``[k W b, (k + 1) W b)`` of its own
residue, and the ``W`` processes' ``k``-th batches together are the ``k``-th batch of ``W b`` that one process
reads. DDP averages the processes' mean losses' gradients, which is the gradient of the mean over the global batch
whenever the processes' batches are the same size (a dataset whose size is a multiple of ``W``).
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

from avalanche.benchmarks.utils.data_loader import MultiDatasetDataLoader
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, RandomSampler, SequentialSampler

__all__ = ["SAMPLE_ORDERS", "SeededBatchSamplers", "rebuild_multi_loader", "shard_indices", "shard_loader", "whole_loader"]

#: How a run draws its training batches (``data.sample_order``): from the seed (the same under any number of
#: processes), or, in one process, as the strategy's Avalanche loader shuffles (from the global random state).
SAMPLE_ORDERS = ("seeded", "avalanche")


def shard_indices(
    size: int,
    rank: int,
    world_size: int,
    *,
    seed: int = 0,
    epoch: int = 0,
    shuffle: bool = True,
    drop_last: bool = False,
) -> List[int]:
    """The indices of ``range(size)`` that process ``rank`` reads in ``epoch``, as ``DistributedSampler`` draws them.

    All processes get the same number of indices (padded by repetition, or trimmed with ``drop_last``), which
    DDP needs: a process with one more batch would wait forever for the others' gradients.
    """
    if size == 0:
        return []
    sampler = DistributedSampler(
        range(size), num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
    )
    sampler.set_epoch(epoch)
    return list(sampler)


class SeededBatchSamplers:
    """The per-dataset batch samplers of an Avalanche multi-dataset loader, each drawn from a seed.

    Installed on a rebuilt loader in place of its ``_create_samplers`` (which Avalanche calls at every pass): dataset
    ``i`` is read through a ``DistributedSampler`` of this process's rank and the number of processes, seeded with
    ``seed + i`` and set to ``epoch``. Avalanche restarts a smaller dataset (the memory, when it is oversampled) at
    ``epoch + 1``, ``epoch + 2``, ...: a new permutation, the same in every process.
    """

    def __init__(self, rank: int, world_size: int, seed: int, epoch: int) -> None:
        self.rank, self.world_size, self.seed, self.epoch = rank, world_size, seed, epoch

    def __call__(self, datasets: Sequence[Any], batch_sizes: Sequence[int], distributed_sampling: bool,
                 loader_kwargs: Dict[str, Any]) -> List[BatchSampler]:
        shuffle = bool(loader_kwargs.get("shuffle", False))
        drop_last = bool(loader_kwargs.get("drop_last", False))
        samplers = []
        for index, (dataset, batch_size) in enumerate(zip(datasets, batch_sizes)):
            sampler = DistributedSampler(range(len(dataset)), num_replicas=self.world_size, rank=self.rank,
                                         shuffle=shuffle, seed=self.seed + index, drop_last=drop_last)
            sampler.set_epoch(self.epoch)
            samplers.append(BatchSampler(sampler, batch_size, drop_last))
        return samplers


def rebuild_multi_loader(
    loader: MultiDatasetDataLoader, datasets: Sequence[Any], distributed_sampling: bool
) -> MultiDatasetDataLoader:
    """The same Avalanche loader (same class, batch sizes and options) over other datasets."""
    rebuilt = type(loader).__new__(type(loader))
    # Subclasses (TaskBalanced-, Replay-, GroupBalancedDataLoader) only compute these arguments before calling
    # the base __init__, so the base __init__ on an instance of the subclass rebuilds them faithfully.
    MultiDatasetDataLoader.__init__(
        rebuilt,
        list(datasets),
        list(loader.batch_sizes),
        termination_dataset=-1 if loader.never_ending else loader.termination_dataset,
        oversample_small_datasets=loader.oversample_small_datasets,
        distributed_sampling=distributed_sampling,
        never_ending=loader.never_ending,
        ffcv_args=dict(loader.ffcv_args),
        **loader.loader_kwargs,
    )
    return rebuilt


def torch_loader_kwargs(loader: DataLoader) -> Dict[str, Any]:
    kwargs: Dict[str, Any] = dict(
        batch_size=loader.batch_size,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context,
        generator=loader.generator,
        persistent_workers=loader.persistent_workers,
        pin_memory_device=loader.pin_memory_device,
    )
    if loader.num_workers > 0:
        kwargs["prefetch_factor"] = loader.prefetch_factor
    return kwargs


def shard_loader(loader: Any, *, rank: int, world_size: int, seed: int = 0, epoch: int = 0) -> Any:
    """A loader that reads only process ``rank``'s shard of ``loader``'s data in ``epoch``.

    Call it again for every epoch: shards and their order depend on ``seed + epoch``, as with
    ``DistributedSampler.set_epoch``.

    * Avalanche multi-dataset loaders (``TaskBalancedDataLoader``, ``ReplayDataLoader``, ...): the same class
      rebuilt, each dataset (memory included) read through :class:`SeededBatchSamplers`. avalanche-lib 0.6
      creates a fresh ``DistributedSampler`` at epoch 0 on every pass, so without this every epoch would repeat
      the same shard order and the same global batches.
    * A plain ``DataLoader`` (``shuffle=True/False``): the same loader with a ``DistributedSampler``.
      avalanche-lib 0.6 builds these for benchmarks of the new API without any distributed sampler.
    * A ``DataLoader`` whose sampler shards by itself (a ``DistributedSampler``, or any sampler with
      ``num_replicas`` and ``set_epoch``, e.g. ``RepeatedAugmentationSampler``): returned as is, with its ``seed``
      (if it has one) set to ``seed`` and ``set_epoch(epoch)``, so that its order too comes from the seed given
      here (the run's, through :class:`~avalanche_lpa.plugins.DistributedPlugin`).

    Raises:
        TypeError: a loader with its own sampler or batch sampler, which cannot be sharded generically.
    """
    if isinstance(loader, MultiDatasetDataLoader):
        rebuilt = rebuild_multi_loader(loader, loader.datasets, distributed_sampling=False)
        samplers = SeededBatchSamplers(rank, world_size, seed, epoch)
        rebuilt._create_samplers = samplers  # an instance attribute: Avalanche calls it at every pass
        if not rebuilt.never_ending:  # Avalanche counted the whole datasets' batches; this process reads its share
            rebuilt.n_iterations = len(samplers(rebuilt.datasets, rebuilt.batch_sizes, False, rebuilt.loader_kwargs)
                                       [rebuilt.termination_dataset])
        return rebuilt
    if isinstance(loader, DataLoader):
        sampler = loader.sampler
        if isinstance(sampler, DistributedSampler) or (
            hasattr(sampler, "num_replicas") and hasattr(sampler, "set_epoch")
        ):
            if hasattr(sampler, "seed"):  # every training order comes from the seed given here
                sampler.seed = seed
            sampler.set_epoch(epoch)
            return loader
        default_batches = loader.batch_size is not None
        if not default_batches or not isinstance(loader.sampler, (RandomSampler, SequentialSampler)):
            raise TypeError(
                f"cannot shard a DataLoader with a custom {type(loader.sampler).__name__} / batch sampler over the "
                "processes; give it a DistributedSampler yourself (and call set_epoch) or use shuffle=True/False"
            )
        sampler = DistributedSampler(
            loader.dataset,
            num_replicas=world_size,
            rank=rank,
            shuffle=isinstance(loader.sampler, RandomSampler),
            seed=seed,
            drop_last=loader.drop_last,
        )
        sampler.set_epoch(epoch)
        return DataLoader(loader.dataset, sampler=sampler, **torch_loader_kwargs(loader))
    raise TypeError(f"do not know how to shard a {type(loader).__name__} over the processes")


def whole_loader(loader: Any) -> Any:
    """The evaluation ``loader`` reading the whole experience in every process (unchanged if it is not sharded).

    avalanche-lib 0.5 / 0.6 ``make_eval_dataloader`` shards evaluation over the processes while no metric is
    reduced, so each process would report the accuracy of a different part.
    """
    if isinstance(loader, MultiDatasetDataLoader) and loader.distributed_sampling:
        return rebuild_multi_loader(loader, loader.datasets, distributed_sampling=False)
    if isinstance(loader, DataLoader) and isinstance(loader.sampler, DistributedSampler):
        return DataLoader(loader.dataset, shuffle=False, **torch_loader_kwargs(loader))
    return loader
