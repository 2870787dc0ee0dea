"""Replay by concatenation (the authors' ``dataset_train.add_samples(*memory.get())``) and repeated augmentation."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from avalanche.core import SupervisedPlugin
from torch.utils.data import DataLoader

from ..timing import timed
from ._sampling import RepeatedAugmentationSampler, distributed_rank, worker_options

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate

__all__ = ["REPLAY_MODES", "ConcatReplayPlugin", "RepeatedAugmentationPlugin", "update_memory"]

#: How the recipe replays its memory: appended to the experience's data, or Avalanche's half-memory batches.
REPLAY_MODES = ("concat", "balanced_batches")


def update_memory(storage_policy: Any, strategy: "SupervisedTemplate") -> None:
    """Adds the finished experience to an Avalanche storage policy (0.6's ``post_adapt``, 0.5's ``update``)."""
    with timed(strategy, "memory_update"):
        if hasattr(type(storage_policy), "post_adapt"):
            storage_policy.post_adapt(strategy, strategy.experience)
        else:
            storage_policy.update(strategy)


class ConcatReplayPlugin(SupervisedPlugin, supports_distributed=True):
    """Replay by concatenation: the memory joins the experience's training data, one shuffled loader draws both.

    In ``after_train_dataset_adaptation`` the memory (with its training transforms) is appended to
    ``strategy.adapted_dataset``, as Avalanche's iCaRL plugin and the authors' code do, so a memory of ``M``
    samples makes up ``M / (M + |D_t|)`` of every epoch (29% at task 2 of CIFAR-100 B0-10) instead of half of
    every batch (Avalanche's ``ReplayPlugin``). After the experience the storage policy is updated; list
    plugins that read the memory at that point (finetuning) after this one.

    Args:
        storage_policy: an Avalanche ``ExemplarsBuffer`` (e.g. :func:`~avalanche_lpa.plugins.herding_memory`).
    """

    def __init__(self, storage_policy: Any) -> None:
        super().__init__()
        self.storage_policy = storage_policy

    def after_train_dataset_adaptation(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        memory = self.storage_policy.buffer
        if len(memory):
            memory = memory.train() if hasattr(memory, "train") else memory
            strategy.adapted_dataset = strategy.adapted_dataset.concat(memory)

    def after_training_exp(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        update_memory(self.storage_policy, strategy)


class RepeatedAugmentationPlugin(SupervisedPlugin, supports_distributed=True):
    """Trains every experience with repeated augmentation (DeiT's ``RASampler``, on in the authors' runs).

    In ``before_training_exp`` the strategy's training loader is replaced by one over the same
    ``adapted_dataset`` (memory included with :class:`ConcatReplayPlugin`) drawn by a
    :class:`RepeatedAugmentationSampler`: each drawn image ``repeats`` times per epoch, the epoch truncated to
    a multiple of the global batch (``train_mb_size * world_size``), full batches only, sharded over the
    processes of a ``torchrun`` job by the sampler itself. It keeps the strategy's worker options, with
    persistent workers (:func:`~._sampling.worker_options`). Incompatible with replay plugins that install their
    own loader (Avalanche's ``ReplayPlugin``): use it with replay by concatenation.

    Args:
        repeats: copies of each drawn image per epoch (the authors: 3).
        seed: base seed of the sample order (experience ``e``, epoch ``k`` uses ``seed + 100003 e + k``); a
            :class:`~avalanche_lpa.plugins.DistributedPlugin` drawing seeded batches (under ``torchrun``, or with
            ``sample_order="seeded"``, the runner's default) replaces it with its own seed, the run's.
    """

    def __init__(self, repeats: int = 3, seed: int = 0) -> None:
        super().__init__()
        if repeats < 1:
            raise ValueError(f"repeats must be at least 1, got {repeats}")
        self.repeats = repeats
        self.seed = seed

    def before_training_exp(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        data = strategy.adapted_dataset
        rank, world_size = distributed_rank()
        sampler = RepeatedAugmentationSampler(
            len(data), repeats=self.repeats, num_replicas=world_size, rank=rank,
            seed=self.seed + 100003 * strategy.clock.train_exp_counter,
            multiple_of=strategy.train_mb_size * world_size,
        )
        strategy.dataloader = DataLoader(
            data, batch_size=strategy.train_mb_size, sampler=sampler, drop_last=True,
            collate_fn=getattr(data, "collate_fn", None), **worker_options(strategy.dataloader),
        )

    def before_training_epoch(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        sampler = getattr(strategy.dataloader, "sampler", None)
        if isinstance(sampler, RepeatedAugmentationSampler):
            sampler.set_epoch(strategy.clock.train_exp_epochs)
