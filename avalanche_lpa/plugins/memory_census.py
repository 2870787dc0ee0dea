"""How many distinct exemplars a rehearsal memory held after each experience, all processes together.

Under one memory per rank (``memory_scope: rank_shard`` / ``rank_augmented``) the memories overlap or not, so
``world_size x mem_size`` says little: :class:`MemoryCensusPlugin` counts distinct images by content (a digest of each
exemplar's eval-transform tensor), gathered over the processes, and the run card reports the counts.
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, List, Optional, Set

import torch
import torch.distributed as dist
from avalanche.core import SupervisedPlugin
from torch.utils.data import DataLoader

from ._sampling import distributed_rank

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate

__all__ = ["MemoryCensusPlugin", "exemplar_digests", "memory_buffer"]


def memory_buffer(strategy: "SupervisedTemplate") -> Optional[Any]:
    """The rehearsal memory's dataset of a strategy (a plugin's ``storage_policy.buffer``), ``None`` without one."""
    for plugin in strategy.plugins:
        policy = getattr(plugin, "storage_policy", None)
        if policy is not None and hasattr(policy, "buffer"):
            return policy.buffer
    return None


@torch.no_grad()
def exemplar_digests(buffer: Any, batch_size: int = 256) -> Set[str]:
    """A digest of every exemplar's eval-transform image: equal images, equal digests."""
    data = buffer.eval() if hasattr(buffer, "eval") else buffer
    digests: Set[str] = set()
    with torch.random.fork_rng(devices=[]):  # a loader draws its workers' seed: the run's random state stays as it was
        for x, *_ in DataLoader(data, batch_size=batch_size, collate_fn=getattr(data, "collate_fn", None)):
            for image in x:
                digests.add(hashlib.sha1(image.contiguous().numpy().tobytes()).hexdigest())
    return digests


class MemoryCensusPlugin(SupervisedPlugin):
    """After each experience's training (``after_training``: after every plugin's memory update, whatever their
    order), the number of distinct exemplars in the memories of all processes together; ``counts`` holds one per
    experience trained (kept in checkpoints, so a resumed run continues the list)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: List[int] = []

    def after_training(self, strategy: "SupervisedTemplate", **kwargs: Any) -> None:
        buffer = memory_buffer(strategy)
        if buffer is None:
            return
        digests = exemplar_digests(buffer)
        _, world_size = distributed_rank()
        if world_size > 1:  # every rank calls this at the end of the same experience
            gathered: List[Optional[Set[str]]] = [None] * world_size
            dist.all_gather_object(gathered, digests)
            digests = set().union(*gathered)
        self.counts.append(len(digests))
