"""The authors' class-balanced finetuning: after each task but the first, a few epochs on the rehearsal memory
with the feature layers frozen (``main.py``, ``freeze_ft: [sab, tab]``), run through the strategy's own loop."""
from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence

import torch
from avalanche.core import SupervisedPlugin
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler

from ..timing import timed
from ._sampling import RepeatedAugmentationSampler, distributed_rank, worker_options

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate

__all__ = [
    "FINETUNE_FROZEN",
    "DYTOX_FINETUNE_FROZEN",
    "FROZEN_MODES",
    "FINETUNE_SAMPLINGS",
    "BalancedFinetuningPlugin",
    "in_finetuning",
    "balanced_indices",
]

#: The authors' finetuning freeze set on :class:`~avalanche_lpa.models.LocalityViT`: patch and position
#: embedding and the local blocks (``sab``), and the class-attention blocks (``tab``). The CLS token and every
#: head stay trainable.
FINETUNE_FROZEN = ("backbone.patch_embed", "backbone.pos_embed", "backbone.blocks", "backbone.cls_blocks")

#: DyTox's finetuning freeze set on :class:`~avalanche_lpa.models.DyTox` (``freeze_ft: [sab]``): the shared
#: encoder's embeddings and local blocks. The class-attention block, every task token and head train; the
#: divergence head is frozen too (the authors zero its loss in finetuning, ``head_div_mode: tr``).
DYTOX_FINETUNE_FROZEN = (
    "backbone.encoder.patch_embed", "backbone.encoder.pos_embed", "backbone.encoder.blocks", "divergence_head",
)

_SHIPPED_FROZEN = frozenset(FINETUNE_FROZEN + DYTOX_FINETUNE_FROZEN)

#: Modes of the frozen modules while finetuning: ``"train"`` (what the authors' runs do: their ``freeze`` puts the
#: frozen blocks in eval mode, then their engine calls ``model.train()`` at every epoch, so drop-path stays
#: active in them) or ``"eval"`` (what their ``freeze`` alone would do).
FROZEN_MODES = ("train", "eval")

#: Sample orders of the finetuning epochs: ``"repeated_aug"`` (the LPA authors': their repeated-augmentation
#: sampler, sharded over the processes) or ``"none"`` (Douillard's ``ft_no_sampling``: a plain loader in dataset
#: order, every process the whole set).
FINETUNE_SAMPLINGS = ("repeated_aug", "none")

# Set on the strategy while the finetuning epochs run, for plugins that must not act on them (lr schedule).
_FLAG = "_lpa_finetuning"


def in_finetuning(strategy: Any) -> bool:
    """True while :class:`BalancedFinetuningPlugin` runs its epochs on ``strategy``."""
    return bool(getattr(strategy, _FLAG, False))


def balanced_indices(labels: Sequence[int]) -> List[int]:
    """Indices of a class-balanced subset: the first ``min_c n_c`` samples of every class, in dataset order."""
    by_class: Dict[int, List[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        by_class[int(label)].append(index)
    if not by_class:
        return []
    per_class = min(len(members) for members in by_class.values())
    return sorted(i for members in by_class.values() for i in members[:per_class])


def _matches(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def frozen_modules(model: nn.Module, prefixes: Sequence[str]) -> List[nn.Module]:
    """The modules under the name ``prefixes``, named as the bare model names them (a DDP wrapper's own names
    start with ``module.``, which no prefix matches: ``frozen_mode="eval"`` set nothing under torchrun)."""
    bare = model.module if isinstance(model, DistributedDataParallel) else model
    return [module for name, module in bare.named_modules() if _matches(name, prefixes)]


def frozen_parameter_names(model: nn.Module, prefixes: Sequence[str]) -> List[str]:
    """The names of ``model``'s parameters under the name ``prefixes`` (what finetuning freezes).

    The names of the shipped freeze sets (:data:`FINETUNE_FROZEN`, :data:`DYTOX_FINETUNE_FROZEN`) may name nothing
    on a model of another family (a timm ViT has no ``backbone.cls_blocks``), as long as some prefix freezes
    something; any other prefix must name a module, a parameter or an attribute a module is created in later
    (DyTox's ``divergence_head``, ``None`` before the second experience), so a misspelt one is refused.

    Raises:
        ValueError: a prefix of the caller's names nothing on the model, or no parameter is under any prefix.
    """
    names = [name for name, _ in model.named_parameters()]
    frozen = [name for name in names if _matches(name, prefixes)]
    if prefixes and not frozen:
        raise ValueError(f"finetune.frozen: no parameter of {type(model).__name__} is under {', '.join(prefixes)}; "
                         f"its parameter names look like {', '.join(names[:4])}")
    for prefix in prefixes:
        if prefix in _SHIPPED_FROZEN:
            continue
        owner: Any = model
        path: List[str] = []
        for part in prefix.split("."):
            if owner is None:  # created later: nothing to check below it yet
                break
            if not hasattr(owner, part):
                where = ".".join(path) or type(model).__name__
                inside = [name for name, _ in owner.named_children()] + [name for name, _ in
                                                                         owner.named_parameters(recurse=False)]
                raise ValueError(f"finetune.frozen: {prefix!r} names nothing on the model; {where} holds "
                                 f"{', '.join(inside) or 'no module'}")
            owner, path = getattr(owner, part), path + [part]
    return frozen


class _WholeSetSampler(Sampler[int]):
    """Dataset order, the whole set in every process (Douillard's ``ft_no_sampling`` under DDP).

    ``num_replicas`` and ``set_epoch`` mark it as a sampler that shards by itself (into one shard), so
    :func:`~avalanche_lpa.data.sharding.shard_loader` leaves it alone instead of giving it a ``DistributedSampler``.
    """

    num_replicas = 1

    def __init__(self, length: int) -> None:
        self.length = length

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.length))

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        pass


class BalancedFinetuningPlugin(SupervisedPlugin, supports_distributed=True):
    """After each experience ``t > 0``, trains ``epochs`` more epochs on the class-balanced memory.

    Runs inside ``after_training_exp`` through the strategy's own machinery: its training epochs
    (``training_epoch`` with every plugin callback), so mixup (:class:`SeenClassesBCE`), distillation,
    autocast and DDP apply as in the main training, with a fresh AdamW (``lr``, ``weight_decay``; no decay on
    1-D parameters, as timm's ``create_optimizer``) over the trainable parameters and the experience's lr
    schedule paused. Parameters under the ``frozen`` name prefixes stop requiring gradients; their modules stay
    in training mode (``frozen_mode="train"``, what the authors' runs do: drop-path active) or go to eval mode
    (``"eval"``); everything else trains (with :class:`LocalityViT`: the CLS token and all heads, also the
    frozen old ones of :class:`PerExperienceHeads`). The strategy's optimizer, dataloader, ``requires_grad``
    flags and module modes are restored afterwards.

    The finetuning set is the memory's samples with their training transforms, cut to the same number per
    class (a no-op for a class-balanced memory such as :func:`~avalanche_lpa.plugins.herding_memory`). List
    this plugin after the replay plugin that fills ``storage_policy`` (so the memory holds the new classes).

    Args:
        storage_policy: the replay memory (e.g. ``ConcatReplayPlugin.storage_policy``).
        epochs: finetuning epochs per experience.
        lr: finetuning learning rate.
        weight_decay: AdamW weight decay.
        frozen: name prefixes of the parameters/modules to freeze (default: :data:`FINETUNE_FROZEN`).
        batch_size: mini-batch size (``None``: the strategy's ``train_mb_size``).
        repeats: repeated augmentation (each drawn image this many times per epoch, see
            :class:`RepeatedAugmentationSampler`); 1 draws every image once.
        seed: seed of the sample order (a :class:`~avalanche_lpa.plugins.DistributedPlugin` drawing seeded batches
            replaces it with its own, the run's).
        frozen_mode: ``"train"`` or ``"eval"``, the mode of the frozen modules (:data:`FROZEN_MODES`).
        sampling: ``"repeated_aug"`` or ``"none"`` (:data:`FINETUNE_SAMPLINGS`); with ``"none"`` ``repeats`` is
            unused and the last batch is dropped only when the set holds more than one batch (as Douillard's).
    """

    def __init__(
        self,
        storage_policy: Any,
        epochs: int = 20,
        lr: float = 5e-5,
        weight_decay: float = 1e-6,
        frozen: Sequence[str] = FINETUNE_FROZEN,
        batch_size: Optional[int] = None,
        repeats: int = 1,
        seed: int = 0,
        frozen_mode: str = "train",
        sampling: str = "repeated_aug",
    ) -> None:
        super().__init__()
        if epochs < 0 or lr <= 0 or repeats < 1:
            raise ValueError(f"finetuning needs epochs >= 0, lr > 0 and repeats >= 1, got {epochs}, {lr}, {repeats}")
        if frozen_mode not in FROZEN_MODES:
            raise ValueError(f"frozen_mode must be one of {', '.join(FROZEN_MODES)}, got {frozen_mode!r}")
        if sampling not in FINETUNE_SAMPLINGS:
            raise ValueError(f"sampling must be one of {', '.join(FINETUNE_SAMPLINGS)}, got {sampling!r}")
        self.frozen_mode = frozen_mode
        self.sampling = sampling
        self.storage_policy = storage_policy
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.frozen = (frozen,) if isinstance(frozen, str) else tuple(frozen)
        self.batch_size = batch_size
        self.repeats = repeats
        self.seed = seed
        self.iterations = 0  # finetuning steps done so far (for tests and logs)
        self.epoch = 0  # inside the phase: the epoch running (its index), or the epochs done once it ends
        self._saved: Optional[Dict[str, Any]] = None  # what the phase changed, to put back

    def finetuning_set(self) -> Any:
        """The memory, class balanced, with its training transforms."""
        memory = self.storage_policy.buffer
        data = memory.train() if hasattr(memory, "train") else memory
        indices = balanced_indices([int(t) for t in memory.targets])
        return data.subset(indices) if len(indices) < len(data) else data

    def _loader(self, strategy: "SupervisedTemplate", data: Any, experience: int) -> DataLoader:
        batch_size = self.batch_size or strategy.train_mb_size
        collate = getattr(data, "collate_fn", None)
        if self.sampling == "none":  # Douillard's ft_no_sampling: no sampler, no shuffle, no sharding
            return DataLoader(data, batch_size=batch_size, sampler=_WholeSetSampler(len(data)),
                              drop_last=len(data) > batch_size, collate_fn=collate)
        rank, world_size = distributed_rank()
        sampler = RepeatedAugmentationSampler(
            len(data), repeats=self.repeats, num_replicas=world_size, rank=rank,
            seed=self.seed + 100003 * experience, multiple_of=batch_size * world_size,
        )
        # The training loader's workers (the strategy's loader is still the experience's here): in the main
        # process, the augmentations of 20 epochs over the memory would keep a GPU waiting.
        return DataLoader(data, batch_size=batch_size, sampler=sampler, drop_last=True, collate_fn=collate,
                          **worker_options(strategy.dataloader))

    def _optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        decay, no_decay = [], []
        for param in model.parameters():
            if param.requires_grad:
                (no_decay if param.ndim <= 1 else decay).append(param)
        groups = [{"params": decay, "weight_decay": self.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW([g for g in groups if g["params"]], lr=self.lr)

    def after_training_exp(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        experience = strategy.clock.train_exp_counter
        if experience == 0 or self.epochs == 0 or len(self.storage_policy.buffer) == 0:
            return
        with timed(strategy, "finetune"):
            self._begin(strategy, experience)
            self._run(strategy, start=0, **kwargs)

    def resume(self, strategy: "SupervisedTemplate", start: int, **kwargs) -> None:
        """Continues a finetuning phase that a checkpoint cut short after ``start`` epochs (``--resume``)."""
        # A fresh loader over the same memory: a pickled one would sample the shard of the process that saved it.
        strategy.dataloader = self._loader(strategy, self.finetuning_set(), strategy.clock.train_exp_counter)
        with timed(strategy, "finetune"):
            self._run(strategy, start=start, **kwargs)

    def _begin(self, strategy: "SupervisedTemplate", experience: int) -> None:
        """Freezes, swaps in the finetuning optimizer and loader; keeps what it changed on ``self``.

        On ``self``, not in local variables: a checkpoint taken inside the phase pickles it with the strategy.
        """
        model = strategy.model
        params = dict(model.named_parameters())
        frozen = frozen_parameter_names(model, self.frozen)
        data = self.finetuning_set()
        self._saved = dict(
            optimizer=strategy.optimizer, dataloader=strategy.dataloader,
            grad={n: p.requires_grad for n, p in params.items()}, modes=[(m, m.training) for m in model.modules()],
        )
        try:
            for name, param in params.items():
                param.requires_grad_(name not in frozen)
            model.train()
            if self.frozen_mode == "eval":
                for module in frozen_modules(model, self.frozen):
                    module.eval()
            strategy.dataloader = self._loader(strategy, data, experience)
            strategy.optimizer = self._optimizer(model)
            setattr(strategy, _FLAG, True)
        except BaseException:
            self._end(strategy)
            raise

    def _run(self, strategy: "SupervisedTemplate", start: int, **kwargs) -> None:
        """Epochs ``start`` .. ``epochs - 1`` of the phase, then everything is put back."""
        try:
            loader = strategy.dataloader
            for epoch in range(start, self.epochs):
                self.epoch = epoch  # the epoch running (its index); the epochs done once it ends
                if hasattr(loader.sampler, "set_epoch"):  # the unsampled loader ("none") has no epochs
                    loader.sampler.set_epoch(epoch)
                strategy._before_training_epoch(**kwargs)
                strategy.training_epoch(**kwargs)
                self.iterations += len(loader)
                self.epoch = epoch + 1
                strategy._after_training_epoch(**kwargs)
        finally:
            self._end(strategy)

    def _end(self, strategy: "SupervisedTemplate") -> None:
        saved, self._saved = getattr(self, "_saved", None), None
        setattr(strategy, _FLAG, False)
        if saved is None:
            return
        strategy.optimizer, strategy.dataloader = saved["optimizer"], saved["dataloader"]
        for name, param in strategy.model.named_parameters():
            param.requires_grad_(saved["grad"][name])
        for module, mode in saved["modes"]:
            module.training = mode
