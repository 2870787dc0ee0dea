"""Our side of Avalanche strategies that fail with current PyTorch or hang on a small memory, in one place.

* :class:`BiC` / :class:`BiCPlugin`: Avalanche's BiC, runnable on current torch.
* :class:`MemoryGuard`: turns the endless loops (ER_AML, FeatureReplay) and the crash (GSS_greedy) of a too
  small memory into a one-line error before the experience.
* :class:`EWC` / :class:`MAS`: Avalanche's, with their parameter importances computed at the global batch under
  ``torchrun`` (Avalanche's use the batch per process), so N processes train one process's model.
* :class:`ER_ACE`: Avalanche's, its loss masked to the classes of the global batch under ``torchrun``.
"""
from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any, Dict, Iterable, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin
from avalanche.distributed import DistributedHelper
from avalanche.training import EWC as _AvalancheEWC
from avalanche.training import MAS as _AvalancheMAS
from avalanche.training import BiC as _AvalancheBiC
from avalanche.training import ER_ACE as _AvalancheER_ACE
from avalanche.training.plugins import EWCPlugin, MASPlugin
from avalanche.training.plugins import bic as _bic_module
from avalanche.training.plugins.gss_greedy import GSS_greedyPlugin
from avalanche.training.regularization import ACECriterion, cross_entropy_with_oh_targets
from torch.optim import Optimizer
from torch.optim.lr_scheduler import MultiStepLR

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate

__all__ = ["BiC", "BiCPlugin", "ER_ACE", "EWC", "GlobalBatchACECriterion", "GlobalBatchEWCPlugin",
           "GlobalBatchMASPlugin", "MAS", "MemoryGuard", "REPLAY_LOADER_MEM_BATCH"]

#: Memory part of every batch of Avalanche's ``ReplayDataLoader`` when a strategy leaves it unset (GSS does).
REPLAY_LOADER_MEM_BATCH = 32


class _MultiStepLRWithoutVerbose(MultiStepLR):
    """torch's ``MultiStepLR`` that accepts the ``verbose`` argument torch removed, and drops it."""

    def __init__(
        self, optimizer: Optimizer, milestones: Iterable[int], gamma: float = 0.1, last_epoch: int = -1,
        verbose: Optional[Any] = None,
    ) -> None:
        super().__init__(optimizer, milestones, gamma=gamma, last_epoch=last_epoch)


class BiCPlugin(_bic_module.BiCPlugin):
    """Avalanche's ``BiCPlugin`` whose bias-correction stage runs on current torch.

    Why: avalanche-lib 0.5.0 and 0.6.0 (``avalanche/training/plugins/bic.py``, ``bias_correction_step``)
    build ``MultiStepLR(..., verbose=False)``; torch deprecated ``verbose`` on its LR schedulers in 2.2 and
    has since removed it (torch 2.14 raises ``TypeError: ... unexpected keyword argument 'verbose'``), so
    BiC fails after its second experience. During that step the module's ``MultiStepLR`` name points at a
    subclass that takes and ignores ``verbose``; everything else is Avalanche's. Remove this class once
    Avalanche stops passing ``verbose``.
    """

    def before_train_dataset_adaptation(self, strategy: "SupervisedTemplate", **kwargs: Any) -> None:
        # Avalanche's BiC moves int(val_percentage * mem_size) images, split over the seen classes, from the
        # experience's training data into its validation buffer; a class with no more images than its share
        # is not trained on, and when no class has more the empty training set dies with a bare IndexError
        # inside Avalanche's loader (avalanche-lib 0.5.0, 0.6.0). Refuse with the size it needs instead.
        counts: Dict[int, int] = defaultdict(int)
        for target in strategy.experience.dataset.targets:
            counts[int(target)] += 1
        seen = len(set(self.seen_classes) | set(counts))
        share = max(self.get_group_lengths(seen))
        short = sorted(c for c, n in counts.items() if n <= share)
        if short:
            held = int(self.val_percentage * self.mem_size)
            raise ValueError(
                f"bic sets int(val_percentage x mem_size) = {held} training images aside for its bias correction, "
                f"up to {share} of each of the {seen} classes seen so far; class {short[0]} of experience "
                f"{strategy.experience.current_experience} has only {counts[short[0]]}, leaving nothing to train "
                f"on: give every class at least {share + 1} training images, or lower val_percentage x mem_size "
                f"(now {self.val_percentage:g} x {self.mem_size}) to at most {(min(counts.values()) - 1) * seen}"
            )
        super().before_train_dataset_adaptation(strategy, **kwargs)

    def bias_correction_step(self, strategy: "SupervisedTemplate", *args: Any, **kwargs: Any) -> None:
        original = _bic_module.MultiStepLR
        _bic_module.MultiStepLR = _MultiStepLRWithoutVerbose
        try:
            super().bias_correction_step(strategy, *args, **kwargs)
        finally:
            _bic_module.MultiStepLR = original


class BiC(_AvalancheBiC):
    """Avalanche's ``BiC`` strategy with :class:`BiCPlugin` in place of its own plugin (same arguments)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for index, plugin in enumerate(self.plugins):
            if type(plugin) is _bic_module.BiCPlugin:  # the one Avalanche's BiC just made from our arguments
                self.plugins[index] = BiCPlugin(
                    mem_size=plugin.mem_size,
                    val_percentage=plugin.val_percentage,
                    T=plugin.T,
                    stage_2_epochs=plugin.stage_2_epochs,
                    lamb=plugin.lamb,
                    lr=plugin.lr,
                )


def _er_aml_problem(strategy: "SupervisedTemplate") -> Optional[str]:
    # ER_AML (avalanche-lib 0.5.0, 0.6.0) draws positives and negatives from one drop_last loader of
    # train_mb_size per class of its class-balanced memory, cycled forever: a class holding fewer images gives
    # an empty loader and the cycle never yields. The memory keeps about mem_size // n_seen_classes per class.
    if getattr(strategy, "replay_loader", None) is None:  # no replay in this experience (the first one)
        return None
    groups = strategy.storage_policy.buffer_groups
    smallest = min(len(group.buffer) for group in groups.values())
    batch = strategy.train_mb_size
    if smallest >= batch:
        return None
    return (
        f"er_aml would hang: its memory holds {smallest} images of a class, fewer than train_mb_size={batch}; use "
        f"mem_size >= {batch * len(groups)} (train_mb_size x {len(groups)} classes seen so far; train_mb_size x "
        "all classes of the stream) or a smaller train_mb_size"
    )


def _gss_problem(strategy: "SupervisedTemplate") -> Optional[str]:
    # GSS_greedy (avalanche-lib 0.5.0, 0.6.0) compares each batch with memory subsets of the batch's size; with
    # fewer images in memory than in the batch it gets none and fails ("max() arg is an empty sequence").
    # Replay batches hold train_mb_size images plus the replay loader's memory batch (32, GSS leaves it unset).
    gss = next((p for p in strategy.plugins if isinstance(p, GSS_greedyPlugin)), None)
    if gss is None or gss.ext_mem_list_current_index == 0:  # no replay yet
        return None
    batch = strategy.train_mb_size + min(REPLAY_LOADER_MEM_BATCH, gss.mem_size)
    if gss.ext_mem_list_current_index >= batch:
        return None
    return (
        f"gss would fail: its memory holds {gss.ext_mem_list_current_index} images, fewer than a replay batch of "
        f"train_mb_size + {REPLAY_LOADER_MEM_BATCH} = {batch}; use mem_size >= {batch} and let the first "
        "experience bring at least as many images, or a smaller train_mb_size"
    )


def _feature_replay_problem(strategy: "SupervisedTemplate") -> Optional[str]:
    # FeatureReplay (avalanche-lib 0.5.0, 0.6.0) cycles a drop_last loader of batch_size_mem over its memory of
    # features: a smaller memory gives an empty loader and the cycle never yields. Under torchrun the processes'
    # memory batches together are one global memory batch (DistributedPlugin), which the memory must hold.
    if getattr(strategy, "replay_loader", None) is None:
        return None
    processes = DistributedHelper.world_size
    held, batch = len(strategy.storage_policy.buffer), strategy.batch_size_mem * processes
    if held >= batch:
        return None
    name = "batch_size_mem=" if processes == 1 else f"batch_size_mem x {processes} processes = "
    return (
        f"feature_replay would hang: its memory holds {held} features, fewer than {name}{batch}; use "
        f"mem_size >= {batch} (and a first experience of at least as many images) or a smaller batch_size_mem"
    )


class MemoryGuard(SupervisedPlugin):
    """Raises a one-line ``ValueError`` before an experience on which a strategy's memory would hang or crash it.

    Avalanche's ER_AML and FeatureReplay cycle a ``drop_last`` loader over their memory forever, and GSS_greedy
    indexes memory subsets by batch size; with too small a memory the first two hang and the last crashes
    mid-experience. :func:`~avalanche_lpa.training.build_strategy` refuses the memory sizes it can judge
    before training; this guard checks the memory the strategy actually holds, before the experience's first
    batch (a tiny first experience, a class with few images, a growing head of unknown final width).

    Args:
        strategy: the guarded strategy's name: ``"er_aml"``, ``"gss"`` or ``"feature_replay"``.
    """

    CHECKS = {"er_aml": _er_aml_problem, "gss": _gss_problem, "feature_replay": _feature_replay_problem}

    def __init__(self, strategy: str) -> None:
        super().__init__()
        if strategy not in self.CHECKS:
            raise ValueError(f"no memory guard for {strategy!r}; choose one of {', '.join(self.CHECKS)}")
        self.strategy = strategy

    def before_training_exp(self, strategy: "SupervisedTemplate", **kwargs: Any) -> None:
        problem = self.CHECKS[self.strategy](strategy)
        if problem:
            raise ValueError(problem)


# -- EWC and MAS: importances at the global batch ---------------------------------------------------------------
# Their importance is a mean over batches of train_mb_size of each batch-mean loss's squared (EWC) or absolute
# (MAS) gradient, over the whole experience, after it, on the unwrapped model: under torchrun every process
# computes it alike, but at its own batch size, which changes the value. At the global batch it is one process's.
class GlobalBatchEWCPlugin(EWCPlugin):
    """Avalanche's ``EWCPlugin`` computing its importances at the batch of all processes together."""

    def compute_importances(self, model, criterion, optimizer, dataset, device, batch_size, num_workers=0):
        return super().compute_importances(model, criterion, optimizer, dataset, device,
                                           batch_size * DistributedHelper.world_size, num_workers=num_workers)


class GlobalBatchMASPlugin(MASPlugin):
    """Avalanche's ``MASPlugin`` computing its importances at the batch of all processes together."""

    def _get_importance(self, strategy: "SupervisedTemplate"):
        batch = strategy.train_mb_size  # MAS reads the strategy's batch itself: lent the global one meanwhile
        strategy.train_mb_size = batch * DistributedHelper.world_size
        try:
            return super()._get_importance(strategy)
        finally:
            strategy.train_mb_size = batch


def _replaced(plugins: Iterable[SupervisedPlugin], stock: type, ours: type) -> list:
    """The strategy's plugins with the one Avalanche's constructor made (``stock``) turned into ``ours`` (its state
    kept: the constructor's arguments)."""
    out = []
    for plugin in plugins:
        if type(plugin) is stock:
            replacement = ours.__new__(ours)
            replacement.__dict__.update(plugin.__dict__)
            plugin = replacement
        out.append(plugin)
    return out


class EWC(_AvalancheEWC):
    """Avalanche's EWC whose importances are computed at the global batch (:class:`GlobalBatchEWCPlugin`)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plugins = _replaced(self.plugins, EWCPlugin, GlobalBatchEWCPlugin)


class MAS(_AvalancheMAS):
    """Avalanche's MAS whose importances are computed at the global batch (:class:`GlobalBatchMASPlugin`)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plugins = _replaced(self.plugins, MASPlugin, GlobalBatchMASPlugin)


# -- ER-ACE: the classes of the global batch ---------------------------------------------------------------------
class GlobalBatchACECriterion(ACECriterion):
    """Avalanche's ACE loss masking the logits to the classes of the global batch (all processes' together).

    Why: its loss on the new samples is a cross-entropy over the classes present in the batch (``torch.unique``);
    under torchrun each process took its own batch's, so the processes' mean losses did not average to the loss of
    one process reading the global batch. One small all-reduce of a class mask per iteration.
    """

    def __call__(self, out_in: torch.Tensor, target_in: torch.Tensor, out_buffer: torch.Tensor,
                 target_buffer: torch.Tensor) -> torch.Tensor:
        if not (DistributedHelper.is_distributed and DistributedHelper.world_size > 1):
            return super().__call__(out_in, target_in, out_buffer, target_buffer)
        present = torch.zeros(out_in.shape[1], device=target_in.device)
        present[target_in] = 1.0
        dist.all_reduce(present, op=dist.ReduceOp.MAX)
        classes = present.nonzero().flatten()
        loss_buffer = F.cross_entropy(out_buffer, target_buffer)
        targets = F.one_hot(target_in, num_classes=out_in.shape[1])[:, classes]
        return (loss_buffer + cross_entropy_with_oh_targets(out_in[:, classes], targets)) / 2


class ER_ACE(_AvalancheER_ACE):
    """Avalanche's ER-ACE with :class:`GlobalBatchACECriterion` (same arguments)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ace_criterion = GlobalBatchACECriterion()
