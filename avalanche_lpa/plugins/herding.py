"""Herding exemplar memories on Avalanche's ``ParametricBuffer``, without the forward hook Avalanche leaves behind.

* :func:`herding_buffer`: Avalanche's class-balanced ``ParametricBuffer`` with Avalanche's herding order.
* :class:`HerdingMemory` (:func:`herding_memory`): the authors' memory (``continual/rehearsal.py``): an equal
  share ``mem_size // n_seen_classes`` per class, new classes chosen once by iCaRL's original herding
  (:func:`icarl_herding_order`), old classes cut to their first exemplars when their share shrinks.
"""
from __future__ import annotations

import random
import warnings
from typing import TYPE_CHECKING, Any, List, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from avalanche.training.storage_policy import HerdingSelectionStrategy, ParametricBuffer, _ParametricSingleBuffer
from torch import nn
from torch.utils.data import DataLoader

from ._sampling import distributed_rank
from ..timing import timed

if TYPE_CHECKING:
    from avalanche.benchmarks.utils import AvalancheDataset
    from avalanche.training.templates import SupervisedTemplate

__all__ = [
    "MEMORY_SCOPES",
    "OLD_SCOPE_NAMES",
    "HerdingMemory",
    "ScopedHerdingSelection",
    "find_module",
    "herding_buffer",
    "herding_memory",
    "icarl_herding_order",
    "drop_gathered_memories",
    "gather_rank_memories",
    "rank_memories",
    "restore_rank_memory",
]


#: Memory scopes under DDP (every scope is one memory in a single process):
#:
#: * ``"global"``: one memory of ``mem_size``, identical in every process, herded from the whole experience on the
#:   eval transform (the correct accounting; the default).
#: * ``"rank_shard"``: each process herds its own ``mem_size`` from its own shard of the experience (a seeded
#:   permutation dealt round-robin), nothing exchanged: ``world_size x mem_size`` distinct exemplars, each chosen
#:   from a shard. Douillard's ``distributed_memory`` (DyTox) is of this kind (his erratum reports 1-10% overlap).
#: * ``"rank_augmented"``: each process herds its own ``mem_size`` from the whole experience, on features of its own
#:   randomly augmented images (the training transform, a random state seeded with the run's seed and the rank):
#:   the memories overlap, between ``mem_size`` and ``world_size x mem_size`` distinct exemplars. The LPA authors'
#:   two-GPU runs (``main.py``, ``continual/rehearsal.py``: ``memory.add`` on the whole experience on every rank).
MEMORY_SCOPES = ("global", "rank_shard", "rank_augmented")
#: Scope names of earlier versions, read as today's (``per_rank`` dealt shards).
OLD_SCOPE_NAMES = {"per_rank": "rank_shard"}


def find_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name``, or the only one whose name ends with ``.name`` (wrapped models)."""
    modules = dict(model.named_modules())
    if name in modules:
        return modules[name]
    matches = [m for n, m in modules.items() if n.endswith("." + name)]
    if len(matches) == 1:
        return matches[0]
    top = [n for n in modules if n and "." not in n]
    raise ValueError(f"{type(model).__name__} has no unique submodule {name!r}; top-level modules: {top}")


class ScopedHerdingSelection(HerdingSelectionStrategy):
    """Avalanche's herding order (``make_sorted_indices_from_features``) on features read with a scoped hook.

    Avalanche 0.6.0's ``FeatureBasedExemplarsSelectionStrategy`` wraps the model in
    ``FeatureExtractorBackbone``, which registers a forward hook when the strategy is *constructed* and never
    removes it: every later forward (training, evaluation, LwF's deepcopied teacher) runs it and keeps a
    tensor alive, the closure cannot be pickled by the standard ``pickle`` module, the hooked model is the
    one given at construction (not ``strategy.model`` after a checkpoint reload), features are computed with
    the training augmentations, and the model is left in eval mode. This subclass instead hooks
    ``strategy.model``'s layer only while it computes features, in eval mode on the dataset's eval
    transforms, and restores the model's mode afterwards.

    Args:
        layer_name: name of the submodule whose output are the features ``[B, D]`` (``"backbone"`` for
            :class:`~avalanche_lpa.models.LocalityViT`: the CLS features).
        normalize: L2-normalise features before herding, as iCaRL does.
    """

    def __init__(self, layer_name: str = "backbone", normalize: bool = True) -> None:
        # FeatureBasedExemplarsSelectionStrategy.__init__ is skipped on purpose: it installs the permanent hook.
        self.layer_name = layer_name
        self.normalize = normalize

    @torch.no_grad()
    def features(self, model: nn.Module, data: "AvalancheDataset", batch_size: int, device,
                 augmented: bool = False) -> torch.Tensor:
        """Outputs ``[len(data), D]`` of the feature layer (``augmented``: of the training transform's images, else
        the eval transform's); no hook remains on ``model`` afterwards."""
        outputs: List[torch.Tensor] = []
        handle = find_module(model, self.layer_name).register_forward_hook(
            lambda module, args, output: outputs.append(output.detach())
        )
        was_training = model.training
        model.eval()
        try:
            if hasattr(data, "eval"):
                data = data.train() if augmented else data.eval()
            loader = DataLoader(data, batch_size=batch_size, collate_fn=getattr(data, "collate_fn", None))
            for x, *_ in loader:
                model(x.to(device))
        finally:
            handle.remove()
            model.train(was_training)
        if len(data) and not outputs:
            raise ValueError(
                f"layer {self.layer_name!r} was not called by {type(model).__name__}.forward; name the module "
                "whose forward output is the [B, D] feature vector"
            )
        features = torch.cat(outputs)
        if features.ndim != 2:
            raise ValueError(
                f"herding needs [B, D] features but layer {self.layer_name!r} outputs {tuple(features.shape)}"
            )
        return features

    def normalized_features(self, strategy: "SupervisedTemplate", data: "AvalancheDataset",
                            augmented: bool = False) -> torch.Tensor:
        """The features of ``data`` read from ``strategy.model`` (L2-normalised if ``normalize``)."""
        features = self.features(strategy.model, data, strategy.eval_mb_size, strategy.device, augmented)
        return F.normalize(features, dim=1) if self.normalize else features

    def make_sorted_indices(self, strategy: "SupervisedTemplate", data: "AvalancheDataset") -> List[int]:
        if len(data) == 0:  # a class whose share of the memory shrank to nothing
            return []
        return [int(i) for i in self.make_sorted_indices_from_features(self.normalized_features(strategy, data))]


def icarl_herding_order(features: torch.Tensor, count: int, max_iterations: int = 1000) -> List[int]:
    """iCaRL's original herding (Rebuffi et al. 2017), as the authors' ``icarl_selection`` runs it.

    With ``mu`` the mean feature and ``w = mu``, each step picks ``argmax_i <w, f_i>`` and sets
    ``w <- w + mu - f_pick``; a sample picked again is not added twice (but still moves ``w``). It stops after
    ``count`` distinct picks or ``max_iterations`` steps. Avalanche's ``HerdingSelectionStrategy`` instead
    matches running means greedily without repeats, which can give another order.

    Args:
        features: ``[n, D]`` (the authors normalise every row first).
        count: exemplars wanted.
        max_iterations: the authors' cap on steps.

    Returns:
        All ``n`` indices: the picks in order, then the unpicked ones in index order.
    """
    data = features.detach().double().cpu()
    mean = data.mean(dim=0)
    weights = mean.clone()
    picked: List[int] = []
    seen = set()
    for _ in range(max_iterations):
        if len(picked) >= min(count, len(data)):
            break
        index = int((data @ weights).argmax())
        if index not in seen:
            seen.add(index)
            picked.append(index)
        weights = weights + mean - data[index]
    return picked + [i for i in range(len(data)) if i not in seen]


class HerdingMemory(ParametricBuffer):
    """The authors' class-balanced exemplar memory as an Avalanche ``ParametricBuffer`` (``groupby="class"``).

    After each experience (Avalanche's ``update`` / ``post_adapt``, called by replay plugins), every seen
    class gets ``max_size // n_seen_classes`` exemplars (the remainder stays unused, as theirs). A class new
    to the memory is ranked once by :func:`icarl_herding_order` on the current model's features (eval
    transforms, see :class:`ScopedHerdingSelection`) and keeps its first exemplars; a class already stored
    keeps its first exemplars in that order when its share shrinks (Avalanche's buffer would re-rank them
    with the newer model). A class that comes back in a later experience is ranked again over its stored
    and new samples.

    Args:
        max_size: exemplars in total.
        layer_name: submodule whose output are the ``[B, D]`` features (``"backbone"``: the CLS features).
        normalize: L2-normalise the features (iCaRL and the authors do).
        scope: one of :data:`MEMORY_SCOPES` (``"per_rank"``, its earlier name, is ``"rank_shard"``).
        seed: seed of the ``rank_shard`` permutations (``None``: torch's initial seed when built, the run's seed
            under the runner, which seeds torch before it builds the strategy).
    """

    def __init__(
        self, max_size: int, layer_name: str = "backbone", normalize: bool = True, scope: str = "global",
        seed: Optional[int] = None,
    ) -> None:
        if max_size < 1:
            raise ValueError(f"mem_size must be positive, got {max_size}")
        scope = OLD_SCOPE_NAMES.get(scope, scope)
        if scope not in MEMORY_SCOPES:
            raise ValueError(f"memory_scope must be one of {', '.join(MEMORY_SCOPES)}, got {scope!r}")
        super().__init__(max_size, groupby="class", selection_strategy=ScopedHerdingSelection(layer_name, normalize))
        self.scope = scope
        self.seed = torch.initial_seed() % 2**31 if seed is None else seed  # room for the experience offsets

    def get_group_lengths(self, num_groups: int) -> List[int]:
        return [self.max_size // num_groups] * num_groups

    def update(self, strategy: "SupervisedTemplate", **kwargs: Any) -> None:  # avalanche-lib 0.5 and ReplayPlugin
        self._add(strategy, strategy.experience.dataset)

    def post_adapt(self, agent: "SupervisedTemplate", exp: Any) -> None:  # avalanche-lib 0.6
        self._add(agent, exp.dataset)

    def _shard(self, strategy: "SupervisedTemplate", data: "AvalancheDataset") -> "AvalancheDataset":
        """This process's shard of ``data`` (``rank_shard`` under DDP), else ``data``."""
        rank, world_size = distributed_rank()
        if _scope(self) != "rank_shard" or world_size == 1:
            return data
        experience = strategy.clock.train_exp_counter
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(self.seed + 100003 * experience))
        return data.subset(sorted(order[rank::world_size].tolist()))

    def _features(self, strategy: "SupervisedTemplate", data: "AvalancheDataset") -> torch.Tensor:
        """Herding features: of the eval transform, or (``rank_augmented``) of this rank's own augmentations."""
        if _scope(self) != "rank_augmented":
            return self.selection_strategy.normalized_features(strategy, data)
        rank, _ = distributed_rank()
        seed = self.seed + 1000003 * rank + 100003 * strategy.clock.train_exp_counter  # the run's, not the state's
        python_state, numpy_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):  # the training stream's random state is left as it was
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed % 2**32)
            try:
                return self.selection_strategy.normalized_features(strategy, data, augmented=True)
            finally:
                random.setstate(python_state)
                np.random.set_state(numpy_state)

    def _add(self, strategy: "SupervisedTemplate", data: "AvalancheDataset") -> None:
        with timed(strategy, "memory_update"):  # also when Avalanche's ReplayPlugin calls it
            self._add_groups(strategy, data)

    def _add_groups(self, strategy: "SupervisedTemplate", data: "AvalancheDataset") -> None:
        new_groups = self._make_groups(strategy, self._shard(strategy, data))
        self.seen_groups.update(new_groups)
        share = self.max_size // len(self.seen_groups)
        for group, stored in self.buffer_groups.items():
            if group not in new_groups:
                stored.max_size = share
                stored.buffer = stored.buffer.subset(range(min(share, len(stored.buffer))))
        for group, fresh in new_groups.items():
            if group in self.buffer_groups:
                fresh = self.buffer_groups[group].buffer.concat(fresh)
            order = icarl_herding_order(self._features(strategy, fresh), share)
            kept = _ParametricSingleBuffer(share, self.selection_strategy)
            kept.buffer = fresh.subset(order[:share])
            self.buffer_groups[group] = kept


def _scope(memory: HerdingMemory) -> str:
    """A memory's scope in today's names (pickles from before scopes: global; from before the names: ``per_rank``)."""
    scope = getattr(memory, "scope", "global")
    return OLD_SCOPE_NAMES.get(scope, scope)


def herding_memory(
    mem_size: int, layer_name: str = "backbone", normalize: bool = True, scope: str = "global",
    seed: Optional[int] = None,
) -> HerdingMemory:
    """The authors' memory: :class:`HerdingMemory` of ``mem_size`` exemplars (``scope``: :data:`MEMORY_SCOPES`)."""
    return HerdingMemory(mem_size, layer_name, normalize, scope=scope, seed=seed)


def herding_buffer(mem_size: int, layer_name: str = "backbone", normalize: bool = True) -> ParametricBuffer:
    """A class-balanced ``ParametricBuffer`` of ``mem_size`` exemplars in total, chosen by herding.

    The memory is split equally over the classes seen so far (some classes get one more when it does not
    divide). When a class's share shrinks, Avalanche re-ranks its stored exemplars by herding with the
    current model and keeps the first ones.
    """
    if mem_size < 1:
        raise ValueError(f"mem_size must be positive, got {mem_size}")
    return ParametricBuffer(
        max_size=mem_size, groupby="class", selection_strategy=ScopedHerdingSelection(layer_name, normalize)
    )


def rank_memories(strategy: "SupervisedTemplate") -> List[HerdingMemory]:
    """The strategy's memories kept one per rank (``rank_shard`` / ``rank_augmented``)."""
    found: List[HerdingMemory] = []
    for plugin in strategy.plugins:  # replay and finetuning share one memory: each memory once
        policy = getattr(plugin, "storage_policy", None)
        if isinstance(policy, HerdingMemory) and _scope(policy) != "global" and not any(
                policy is seen for seen in found):
            found.append(policy)
    return found


def gather_rank_memories(strategy: "SupervisedTemplate") -> None:
    """Before a checkpoint (on every process at once): every rank's memory into ``rank_groups`` of each per-rank
    memory, so that the checkpoint rank 0 writes holds them all (:func:`restore_rank_memory` takes each back); in one
    process there is nothing to gather."""
    _, world_size = distributed_rank()
    if world_size == 1:  # one process: its memory is the one pickled
        return
    for memory in rank_memories(strategy):
        gathered: List[Any] = [None] * world_size
        dist.all_gather_object(gathered, memory.buffer_groups)
        memory.rank_groups = gathered


def drop_gathered_memories(strategy: "SupervisedTemplate") -> None:
    """After the checkpoint: the other ranks' memories are not kept in this process."""
    for memory in rank_memories(strategy):
        memory.rank_groups = None


def restore_rank_memory(strategy: "SupervisedTemplate") -> None:
    """After loading a checkpoint: this rank's own memory from those it holds (a run resumed with as many processes
    as it was checkpointed with; else every rank keeps rank 0's, and a warning says so)."""
    rank, world_size = distributed_rank()
    for memory in rank_memories(strategy):
        saved = getattr(memory, "rank_groups", None)
        if saved and len(saved) == world_size:
            memory.buffer_groups = saved[rank]
        elif world_size > 1:  # a checkpoint of another process count, or from before per-rank memories were saved
            warnings.warn(f"the checkpoint holds {len(saved) if saved else 'no'} per-rank memories for "
                          f"{world_size} processes: every rank continues with rank 0's memory", stacklevel=2)
        memory.rank_groups = None
