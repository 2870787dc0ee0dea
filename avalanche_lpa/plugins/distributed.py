"""DDP for any Avalanche strategy under ``torchrun``: :class:`DistributedPlugin` and the model wrapper it uses.

Join the process group first (:func:`avalanche_lpa.distributed.init_distributed`). avalanche-lib 0.5 / 0.6 never
wrap the model in DDP (no template calls ``DistributedHelper.wrap_model``, whose device choice would also use
the global rank): this plugin does, for the training iterations only.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Any, Dict, Iterator, Optional, Tuple

import torch
import torch.distributed as dist
from avalanche.core import SupervisedPlugin
from avalanche.distributed import DistributedHelper
from avalanche.models import MultiTaskModule
from avalanche.training import DER, ER_ACE, FeatureReplay
from avalanche.training.plugins import AGEMPlugin
from avalanche.training.determinism.rng_manager import RNGManager
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..compat.torch_ddp import NO_FORWARD_BUFFER_SYNC
from ..data.memory_batches import ReferenceSamples, memory_loader
from ..data.sharding import SAMPLE_ORDERS, shard_loader, whole_loader
from ._sampling import distributed_rank

__all__ = ["DistributedModel", "DistributedPlugin", "model_fingerprint", "sync_module_state"]


class DistributedModel(DistributedDataParallel):
    """``DistributedDataParallel`` whose unknown public attributes are read from the wrapped module, and whose
    parameters and buffers carry the wrapped module's names.

    So ``model.get_attention_maps(x)``, ``model.feature_extractor`` or ``model.head`` keep working while the
    strategy holds the wrapper. Such calls bypass DDP (no gradient averaging): use them for inspection, and
    call the wrapper itself for training passes. Private names are not forwarded, since DDP probes its own
    optional attributes with ``hasattr``.

    The names matter to plugins that keep values per parameter name across experiences: Avalanche's EWC, MAS and
    Synaptic Intelligence store them from the bare model after an experience and look them up in
    ``strategy.model.named_parameters()`` during the iterations, when the strategy holds this wrapper. With DDP's
    ``module.`` prefix, EWC's and MAS's penalties found no parameter (zero: they trained as Naive under torchrun)
    and SI stopped with a ``KeyError``. DDP itself reads ``self.module``'s parameters, never these names.
    """

    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True) -> Iterator[Tuple[str, nn.Parameter]]:
        return self.module.named_parameters(prefix=prefix, recurse=recurse, remove_duplicate=remove_duplicate)

    def named_buffers(self, prefix: str = "", recurse: bool = True,
                      remove_duplicate: bool = True) -> Iterator[Tuple[str, torch.Tensor]]:
        return self.module.named_buffers(prefix=prefix, recurse=recurse, remove_duplicate=remove_duplicate)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self.__dict__.get("_modules", {}).get("module")
            if inner is None or name.startswith("_") or name == "buffer_hook":
                raise
            return getattr(inner, name)


@torch.no_grad()
def sync_module_state(module: nn.Module, src: int = 0) -> None:
    """Copies the parameters and buffers of rank ``src`` into every process (in place); no-op when single."""
    if not DistributedHelper.is_distributed:
        return
    seen = set()
    for tensor in list(module.parameters()) + list(module.buffers()):
        if id(tensor) not in seen:
            seen.add(id(tensor))
            dist.broadcast(tensor.detach(), src=src)


@torch.no_grad()
def model_fingerprint(module: nn.Module, buffers: bool = True) -> torch.Tensor:
    """Float64 sums and absolute sums of every floating parameter (and buffer), in module order, on the CPU.

    Equal models give bit-identical fingerprints; a model that diverged almost surely does not.
    """
    values = []
    tensors = list(module.parameters()) + (list(module.buffers()) if buffers else [])
    for tensor in tensors:
        if torch.is_floating_point(tensor):
            t = tensor.detach().double()
            values += [t.sum(), t.abs().sum()]
    return torch.stack(values).cpu() if values else torch.zeros(0, dtype=torch.float64)


def reseed(seed: int, experience: int, epoch: int, rank: Optional[int] = None) -> None:
    """Sets the global random states Avalanche's ``RNGManager`` keeps (torch on every device, NumPy, Python) from
    ``seed``, the experience and the epoch: the same in every process, or (``rank``) that process's own."""
    stream = 0 if rank is None else rank + 1
    RNGManager.set_random_seeds((seed + 100003 * experience + 7919 * (epoch + 1) + 1000003 * stream) % 2**32)


class DistributedPlugin(SupervisedPlugin, supports_distributed=True):
    """Makes an Avalanche strategy train with DDP under ``torchrun``, drawing the same global batches whatever the
    number of processes (in one process too, unless ``sample_order="avalanche"``).

    What it does, and where (each callback is independent of the position of the plugin in the list):

    * ``before_training_iteration``: ``strategy.model`` becomes a :class:`DistributedModel` (DDP) for the
      iteration's forward and backward pass; ``after_training_iteration`` puts the plain module back. So the
      strategy, Avalanche's optimizer bookkeeping (by parameter *name*), model adaptation, evaluation, other
      plugins' end-of-experience work (LwF's teacher copy, herding, finetuning) and checkpoints always see the
      unwrapped model. The wrapper is reused between iterations and rebuilt at the first iteration of every
      experience, of every epoch, and whenever the set of trainable parameters changed (the growing head grows in
      ``model_adaptation`` before the experience, and may grow during a periodic evaluation; finetuning freezes
      the backbone for its epochs): a wrapper built
      before the growth would not average the new head's gradients. Avalanche has already added the new
      parameters to the optimizer (``make_optimizer``) by then, and DDP wraps those very tensors. Building
      the wrapper also broadcasts rank 0's weights, realigning any drift.
    * ``before_training_exp`` / ``before_training_epoch``: the training loader is sharded with
      :func:`shard_loader`, reshuffled every epoch (also the loaders that other plugins, e.g. replay, install):
      the processes' ``k``-th batches together are the ``k``-th batch one process with their global batch size
      reads, so a run with 1 process and batch ``B`` and one with 2 processes and batch ``B / 2`` each train on
      the same batches. In one process the loader is "sharded" over one process for that reason (a loader it
      cannot shard, with a sampler of its own, is left as it is there).
    * ``before_training_exp`` (seeded batches): the memory batches of Avalanche's DER, ER-ACE and FeatureReplay
      and A-GEM's reference samples (loaders of their own over the memory, drawn per process) are drawn from the
      seed and dealt over the processes as the training batches are (:mod:`~avalanche_lpa.data.memory_batches`):
      so DER, FeatureReplay, A-GEM and ER-ACE (whose class mask ``compat.ER_ACE`` takes at the global batch)
      train one process's model at the same global batch and memory batch.
    * ``before_eval_exp``: the evaluation loader reads the whole experience in every process, so all processes
      compute the same metrics from the same predictions with no reduction step. Trade-off: evaluation is not
      parallelised (each process does all of it). Reducing metrics instead would need every Avalanche metric's
      internal state all-reduced and the padding of ``DistributedSampler`` (repeated samples) removed; since
      evaluation is a few passes over the test set against hundreds of training epochs, exact and simple wins.
    * ``before_training_epoch`` (several processes): each process's global random states are set from the seed,
      the experience, the epoch and its rank, so its augmentations, mixup and drop path draw numbers of their own
      (from one shared state the ``k``-th images of all processes were augmented alike).
    * ``after_training_epoch`` (seeded batches): the global random states (torch, NumPy, Python) are set from
      the seed, the experience and the epoch, the same in every process. Augmentation in the main process draws
      from them per sample, so one process has drawn more numbers by then than each of several; what a strategy
      then draws at random (the memory of Avalanche's ``Replay``, ``GEM``, ``GDumb``: selected in
      ``after_training_exp`` or before the next experience) is so the same memory under any number of processes,
      whatever the position of the plugins.
    * ``after_training_exp``: rank 0's parameters and buffers are broadcast, so work a plugin does outside the
      training iterations in every process, or buffers that DDP does not synchronise (BatchNorm running
      statistics), cannot make the processes' evaluations or teachers differ.

    Every backward pass through the wrapper inside a training iteration averages gradients (also the extra
    passes of GEM, DER or ER-ACE, which go through ``strategy.model``, and the epochs of
    ``BalancedFinetuningPlugin``, which run through the strategy's own loop). Not supported: task-aware
    ``MultiTaskModule`` models (Avalanche passes task labels only to an unwrapped ``MultiTaskModule``), which
    raise ``NotImplementedError``.

    Args:
        seed: seed of the data shards (``DistributedSampler`` seed); experience ``e``, epoch ``k`` uses
            ``seed + 100003 * e`` and epoch ``k``. Samplers that shard themselves (repeated augmentation,
            finetuning) take it too, so the run's seed decides every training order.
        sample_order: ``"seeded"``: draw the training batches from ``seed`` in one process as in several (the same
            batches under any number of processes); ``"avalanche"``: in one process, leave the strategy's loaders
            as they are (Avalanche's shuffle, from the global random state; the order of runs made before
            ``data.sample_order`` existed). Several processes always draw seeded batches.
        find_unused_parameters: passed to DDP. Every parameter of our models (the growing head included)
            gets a gradient in every iteration, so the default ``False`` saves DDP a graph traversal per
            iteration; set ``True`` (Avalanche's ``wrap_model`` choice) for a model with parameters that some
            iterations do not use (DDP then fails with an error that names this flag).
        ddp_kwargs: more ``DistributedDataParallel`` arguments. Buffers are not synchronised before every
            forward pass (``forward_sync_buffers=False``, or ``broadcast_buffers=False`` before torch 2.14):
            broadcasting all buffers before every forward pass would copy the constant relative-position
            tables of every LPA layer each iteration, and buffers are synchronised at experience ends anyway.
        sync_after_experience: broadcast rank 0's model state after each training experience.
        check_consistency: after each training epoch, compare a fingerprint of the model across processes, and
            before each experience and at the end of training the replay memories' labels; raise
            ``RuntimeError`` if they differ (a debugging aid: one small all-gather per check).
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        sample_order: str = "seeded",
        find_unused_parameters: bool = False,
        ddp_kwargs: Optional[Dict[str, Any]] = None,
        sync_after_experience: bool = True,
        check_consistency: bool = False,
    ) -> None:
        super().__init__()
        if sample_order not in SAMPLE_ORDERS:
            raise ValueError(f"sample_order must be one of {', '.join(SAMPLE_ORDERS)}, got {sample_order!r}")
        self.seed = seed
        self.sample_order = sample_order
        self.find_unused_parameters = find_unused_parameters
        self.ddp_kwargs = dict(ddp_kwargs or {})
        self.sync_after_experience = sync_after_experience
        self.check_consistency = check_consistency
        self.wraps = 0  # DDP wrappers built so far (for logs and tests)
        self._ddp: Optional[DistributedModel] = None
        self._signature: Optional[Tuple[Any, ...]] = None
        self._recheck = True  # the parameters may have changed since the wrapper was built
        self._sharded: Any = None  # the loader this plugin installed, and the (experience, epoch) it serves
        self._sharded_key: Optional[Tuple[int, int]] = None
        self._source: Any = None  # the loader it was sharded from

    sample_order = "avalanche"  # what a plugin pickled before the option existed did in one process

    # The wrapper holds a process group and cannot be pickled; it is rebuilt on demand after a reload.
    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_ddp=None, _signature=None, _recheck=True, _sharded=None, _sharded_key=None, _source=None)
        return state

    @staticmethod
    def active() -> bool:
        """True when running with more than one process."""
        return DistributedHelper.is_distributed and DistributedHelper.world_size > 1

    def seeded(self) -> bool:
        """True when the training batches are drawn from the seed (always under several processes)."""
        return self.active() or self.sample_order == "seeded"

    # -- model wrapping ----------------------------------------------------------------------------------------
    @staticmethod
    def _param_signature(module: nn.Module) -> Tuple[Any, ...]:
        return (id(module),) + tuple((id(p), p.requires_grad) for p in module.parameters())

    def _wrap(self, strategy: Any) -> None:
        """Sets ``strategy.model`` to a DDP wrapper of the current module, building one if needed.

        avalanche-lib 0.6 never wraps the model (no template calls ``DistributedHelper.wrap_model``); its
        ``wrap_model`` would also use the global rank as CUDA index, hence our own construction.
        """
        module = DistributedHelper.unwrap_model(strategy.model)
        if self._ddp is not None and self._ddp.module is module and not self._recheck:
            strategy.model = self._ddp
            return
        signature = self._param_signature(module)
        if self._ddp is None or self._ddp.module is not module or signature != self._signature:
            if isinstance(module, MultiTaskModule):
                raise NotImplementedError(
                    "DistributedPlugin does not support task-aware MultiTaskModule models: Avalanche passes task "
                    "labels only to an unwrapped MultiTaskModule"
                )
            device = next(module.parameters()).device
            kwargs: Dict[str, Any] = dict(find_unused_parameters=self.find_unused_parameters, **NO_FORWARD_BUFFER_SYNC)
            kwargs.update(self.ddp_kwargs)
            if device.type == "cuda":
                kwargs.setdefault("device_ids", [device])
            self._ddp = DistributedModel(module, **kwargs)  # broadcasts rank 0's parameters and buffers
            self._signature = signature
            self.wraps += 1
        self._recheck = False
        strategy.model = self._ddp

    @staticmethod
    def _unwrap(strategy: Any) -> None:
        strategy.model = DistributedHelper.unwrap_model(strategy.model)

    def before_training(self, strategy: Any, **kwargs: Any) -> None:
        if not self.active():
            return
        device = torch.device(strategy.device)
        if device.type == "cuda" and device.index is not None and device.index != torch.cuda.current_device():
            warnings.warn(
                f"strategy.device is {device} but this process's CUDA device is cuda:{torch.cuda.current_device()}; "
                "pass device=init_distributed().device to build_strategy"
            )

    def before_training_iteration(self, strategy: Any, **kwargs: Any) -> None:
        if self.active():
            self._wrap(strategy)

    def after_training_iteration(self, strategy: Any, **kwargs: Any) -> None:
        if self.active():
            self._unwrap(strategy)

    def before_eval(self, strategy: Any, **kwargs: Any) -> None:
        if self.active():
            # Evaluation adapts the model (the head may grow for unseen classes): check before the next step.
            self._unwrap(strategy)
            self._recheck = True

    def after_training_exp(self, strategy: Any, **kwargs: Any) -> None:
        if not self.active():
            return
        self._unwrap(strategy)
        if self.sync_after_experience:
            sync_module_state(strategy.model)
        # A fresh wrapper (and broadcast) for the next experience, after its model adaptation.
        self._ddp, self._signature, self._recheck = None, None, True

    # -- data --------------------------------------------------------------------------------------------------
    def _shard_train(self, strategy: Any, epoch: int) -> None:
        exp = strategy.clock.train_exp_counter
        loader = strategy.dataloader
        if loader is self._sharded and self._sharded_key == (exp, epoch):
            return
        if loader is not self._sharded:  # a new loader (the strategy's or another plugin's)
            self._source = loader
        rank, world_size = distributed_rank()
        try:
            sharded = shard_loader(self._source, rank=rank, world_size=world_size, seed=self.seed + 100003 * exp,
                                   epoch=epoch)
        except TypeError:
            if self.active():
                raise
            sharded = self._source  # one process: a loader with a sampler of its own keeps it
        self._sharded, self._sharded_key = sharded, (exp, epoch)
        strategy.dataloader = sharded

    @contextlib.contextmanager
    def unsharded(self, strategy: Any) -> Iterator[None]:
        """Puts the loader this plugin sharded back for the block (a checkpoint inside an experience pickles
        the whole loader, which every process shards again for itself after a resume)."""
        sharded = strategy.dataloader
        if self._sharded is None or sharded is not self._sharded:
            yield
            return
        strategy.dataloader = self._source
        try:
            yield
        finally:
            strategy.dataloader = sharded

    #: Avalanche strategies whose ``replay_loader`` is ``cycle(DataLoader(storage_policy.buffer, batch_size_mem,
    #: shuffle=True, drop_last=True))`` (avalanche-lib 0.5.0, 0.6.0), built before this callback.
    MEMORY_LOADER_STRATEGIES = (DER, ER_ACE, FeatureReplay)

    def _shard_memory(self, strategy: Any) -> None:
        rank, world_size = distributed_rank()
        seed = self.seed + 100003 * strategy.clock.train_exp_counter + 50021
        if isinstance(strategy, self.MEMORY_LOADER_STRATEGIES) and strategy.replay_loader is not None:
            strategy.replay_loader = memory_loader(strategy.storage_policy.buffer, strategy.batch_size_mem,
                                                   rank=rank, world_size=world_size, seed=seed)
        for plugin in strategy.plugins:  # A-GEM rebuilds its iterator after every experience
            if isinstance(plugin, AGEMPlugin) and plugin.buffers:
                plugin.buffer_dliter = ReferenceSamples(plugin.buffers, plugin.sample_size, rank=rank,
                                                        world_size=world_size, seed=seed)

    def before_training_exp(self, strategy: Any, **kwargs: Any) -> None:
        if self.seeded():
            # Epoch 0: the clock (the last plugin) resets its epoch counter only after this callback.
            self._shard_train(strategy, epoch=0)
            self._shard_memory(strategy)
        if not self.active():
            return
        self._ddp, self._signature, self._recheck = None, None, True
        if self.check_consistency:
            self._check_memories(strategy)

    def before_training_epoch(self, strategy: Any, **kwargs: Any) -> None:
        if self.seeded():
            self._shard_train(strategy, epoch=strategy.clock.train_exp_epochs)
        if self.active():
            # Plugins may change which parameters train between epochs (finetuning freezes the backbone).
            self._recheck = True
            # Each process its own random draws in the epoch (augmentation, mixup, drop path), as the authors'
            # runs seed each rank: from one shared state the k-th images of all processes were augmented alike.
            clock = strategy.clock
            reseed(self.seed, clock.train_exp_counter, clock.train_exp_epochs, rank=distributed_rank()[0])

    def before_eval_exp(self, strategy: Any, **kwargs: Any) -> None:
        if not self.active():
            return
        strategy.dataloader = whole_loader(strategy.dataloader)

    # -- consistency checks ------------------------------------------------------------------------------------
    def after_training_epoch(self, strategy: Any, **kwargs: Any) -> None:
        if self.seeded():
            reseed(self.seed, strategy.clock.train_exp_counter, strategy.clock.train_exp_epochs)
        if self.active() and self.check_consistency:
            # Parameters only: buffers DDP does not synchronise (BatchNorm statistics) may differ until the
            # end of the experience.
            local = model_fingerprint(DistributedHelper.unwrap_model(strategy.model), buffers=False)
            fingerprints = DistributedHelper.gather_all(local, same_shape=True)
            if any(not torch.equal(fingerprints[0], f) for f in fingerprints[1:]):
                raise RuntimeError("the model differs between processes after a training epoch (DDP out of sync)")

    def after_training(self, strategy: Any, **kwargs: Any) -> None:
        if self.active() and self.check_consistency:
            self._check_memories(strategy)

    @staticmethod
    def _check_memories(strategy: Any) -> None:
        memories = []
        for plugin in strategy.plugins:
            buffer = getattr(getattr(plugin, "storage_policy", None), "buffer", None)
            if buffer is not None:
                # An empty buffer is a bare AvalancheDataset without targets.
                memories.append([int(t) for t in buffer.targets] if len(buffer) else [])
        gathered = DistributedHelper.gather_all_objects(memories)
        if any(m != gathered[0] for m in gathered[1:]):
            raise RuntimeError("the replay memories differ between processes (seed the processes alike)")
