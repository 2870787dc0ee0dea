"""Multi-process training (``torchrun``, PyTorch DDP) of Avalanche strategies, on Avalanche's ``DistributedHelper``.

Usage (the experiment runner does this)::

    info = init_distributed()                       # reads torchrun's env; a no-op in a plain ``python`` run
    strategy = build_strategy(name, model, device=info.device, plugins=[DistributedPlugin()], ...,
                              evaluator=cil_evaluator(loggers=main_process_loggers(make_loggers)))
    for exp in benchmark.train_stream:
        strategy.train(exp)
        strategy.eval(benchmark.test_stream)
    on_main(write_results, path, summarize(strategy))  # rank 0 writes, every rank waits for it
    shutdown_distributed()

Each process trains on its own shard of every training experience; gradients are averaged by DDP, so the
effective batch is ``world_size * train_mb_size``. Evaluation runs on the *whole* stream in every process.

Gaps of avalanche-lib 0.6 closed here, each in one named place (0.5.0 has all but the plain train loader):

* ``_DistributedHelperCls.init_distributed`` / ``wrap_model`` pick the CUDA device from the *global* rank
  (``cuda:{rank}``), which does not exist on the second node of a multi-node run: :func:`init_distributed`
  creates the process group itself, uses ``LOCAL_RANK`` and hands the device to ``DistributedHelper``.
* No strategy ever calls ``DistributedHelper.wrap_model``: the model is never wrapped in DDP, so every
  process trains its own model. :class:`DistributedPlugin` wraps it (:meth:`DistributedPlugin._wrap`) and
  builds a new wrapper whenever the parameters changed, e.g. after the growing head grew.
* ``make_eval_dataloader`` shards the evaluated experience over the processes (``DistributedSampler``,
  padded with repeated samples) while no metric is reduced, so every process reports the accuracy of a
  different half: :meth:`DistributedPlugin.before_eval_exp` gives every process the whole experience.
* ``make_train_dataloader`` of a benchmark of the new API (experiences without ``task_labels``, e.g.
  ``class_incremental_benchmark``) is a plain ``DataLoader`` without a distributed sampler: every process
  trains on everything. Avalanche's own multi-dataset loaders (legacy benchmarks, replay) do shard, but build
  a fresh ``DistributedSampler`` at epoch 0 on every pass, so each epoch repeats the same order and the same
  global batches. :func:`shard_loader` (called by the plugin before each epoch) fixes both.

Distributed-safety of this package (with :class:`DistributedPlugin` in the strategy and the same seed in every
process, which :func:`init_distributed` arranges):

==================================================  ==============================================================
``ExperienceEpochsPlugin``                          safe: local counters only.
``ExperienceLRSchedulePlugin``                      safe: reads ``len(strategy.dataloader)``, the (equal) shard
                                                    length of a process, i.e. its number of optimizer steps.
``LPAWarmupPlugin``                                 safe: the same schedule and buffer values in every process.
``SeenClassesBCE`` (mixup / cutmix)                 safe: each process mixes pairs inside its own part of the batch.
``WeightedLwFPlugin``                               safe: the teacher is copied from the unwrapped model, equal in
                                                    every process at the end of an experience.
``herding_buffer``, Avalanche's ``ReplayPlugin``    safe: every process selects from the same data with the same
                                                    model and seed (herding draws nothing at random); replay
                                                    batches are sharded.
``BalancedFinetuningPlugin``                        safe: its epochs run through the strategy's loop, so DDP
                                                    wraps them (re-wrapped for the frozen parameter set).
``ConcatReplayPlugin``, ``RepeatedAugmentationPlugin``  safe: the memory is selected alike in every process; the
                                                    repeated-augmentation sampler shards by itself.
``HerdingMemory(scope="per_rank")``                 per process on purpose (``memory_scope: per_rank``, the
                                                    authors' two-GPU runs): each herds from its own shard.
``OldSampleDistillationPlugin``                     safe: the teacher is copied from the unwrapped model.
``cil_evaluator`` metrics, ``summarize``            safe: every process evaluates the whole stream.
``LocalityPluginMetric``                            safe: the probe comes from its own seeded generator and the
                                                    forward pass runs on the unwrapped model in every process.
training-phase metrics (if added)                   per process: each reports its own shard, nothing is reduced.
==================================================  ==============================================================

Strategies: the ``build_strategy`` names ``naive, replay, lwf, icarl, der, ewc, gem, er_ace, lpa`` were trained
two experiences on 2 CPU processes with the parameters equal in both after every epoch and identical metrics
(``tests/test_distributed.py`` runs ``replay`` and ``naive``). Task-aware multi-head models (``MultiTaskModule``)
are not supported (see :class:`DistributedPlugin`).
"""
from __future__ import annotations

import contextlib
import datetime
import inspect
import os
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, TypeVar, Union

import torch
import torch.distributed as dist
from avalanche.benchmarks.utils.data_loader import MultiDatasetDataLoader
from avalanche.core import SupervisedPlugin
from avalanche.distributed import DistributedHelper
from avalanche.models import MultiTaskModule
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler, Subset

__all__ = [
    "DistInfo",
    "DistributedModel",
    "DistributedPlugin",
    "dist_info",
    "init_distributed",
    "is_main_process",
    "main_process_loggers",
    "model_fingerprint",
    "on_main",
    "shard_indices",
    "shard_loader",
    "shutdown_distributed",
    "sync_module_state",
    "unwrap_model",
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


def is_main_process() -> bool:
    """True in rank 0, and in a single-process run."""
    return DistributedHelper.is_main_process


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


# -- model -----------------------------------------------------------------------------------------------------
class DistributedModel(DistributedDataParallel):
    """``DistributedDataParallel`` whose unknown public attributes are read from the wrapped module.

    So ``model.get_attention_maps(x)``, ``model.feature_extractor`` or ``model.head`` keep working while the
    strategy holds the wrapper. Such calls bypass DDP (no gradient averaging): use them for inspection, and
    call the wrapper itself for training passes. Private names are not forwarded, since DDP probes its own
    optional attributes with ``hasattr``.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self.__dict__.get("_modules", {}).get("module")
            if inner is None or name.startswith("_") or name == "buffer_hook":
                raise
            return getattr(inner, name)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (``DistributedHelper.unwrap_model``); other models unchanged."""
    return DistributedHelper.unwrap_model(model)


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


# -- data ------------------------------------------------------------------------------------------------------
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


def _subset(dataset: Any, indices: List[int]) -> Any:
    return dataset.subset(indices) if hasattr(dataset, "subset") else Subset(dataset, indices)


def _rebuild_multi(
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


def _torch_loader_kwargs(loader: DataLoader) -> Dict[str, Any]:
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
      rebuilt over the epoch's shard of each dataset (memory included), Avalanche's own sampling switched off.
      avalanche-lib 0.6 creates a fresh ``DistributedSampler`` at epoch 0 on every pass, so without this every
      epoch would repeat the same shard order and the same global batches.
    * A plain ``DataLoader`` (``shuffle=True/False``): the same loader with a ``DistributedSampler``.
      avalanche-lib 0.6 builds these for benchmarks of the new API without any distributed sampler.
    * A ``DataLoader`` whose sampler shards by itself (a ``DistributedSampler``, or any sampler with
      ``num_replicas`` and ``set_epoch``, e.g. ``RepeatedAugmentationSampler``): returned as is, with
      ``set_epoch(epoch)``.

    Raises:
        TypeError: a loader with its own sampler or batch sampler, which cannot be sharded generically.
    """
    if isinstance(loader, MultiDatasetDataLoader):
        shuffle = bool(loader.loader_kwargs.get("shuffle", False))
        last = bool(loader.loader_kwargs.get("drop_last", False))
        shards = [
            _subset(d, shard_indices(len(d), rank, world_size, seed=seed, epoch=epoch, shuffle=shuffle, drop_last=last))
            for d in loader.datasets
        ]
        return _rebuild_multi(loader, shards, distributed_sampling=False)
    if isinstance(loader, DataLoader):
        sampler = loader.sampler
        if isinstance(sampler, DistributedSampler) or (
            hasattr(sampler, "num_replicas") and hasattr(sampler, "set_epoch")
        ):
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
        return DataLoader(loader.dataset, sampler=sampler, **_torch_loader_kwargs(loader))
    raise TypeError(f"do not know how to shard a {type(loader).__name__} over the processes")


# -- plugin ----------------------------------------------------------------------------------------------------
# Buffers are synchronised when a wrapper is built and at experience ends, not before every forward pass.
# torch 2.14 (installed here) deprecates ``broadcast_buffers`` for ``forward_sync_buffers`` (still syncs at init).
_NO_FORWARD_BUFFER_SYNC: Dict[str, bool] = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
    else {"broadcast_buffers": False}
)


class DistributedPlugin(SupervisedPlugin, supports_distributed=True):
    """Makes an Avalanche strategy train with DDP under ``torchrun``; does nothing in a single-process run.

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
      :func:`shard_loader`, reshuffled every epoch (also the loaders that other plugins, e.g. replay, install).
    * ``before_eval_exp``: the evaluation loader reads the whole experience in every process, so all processes
      compute the same metrics from the same predictions with no reduction step. Trade-off: evaluation is not
      parallelised (each process does all of it). Reducing metrics instead would need every Avalanche metric's
      internal state all-reduced and the padding of ``DistributedSampler`` (repeated samples) removed; since
      evaluation is a few passes over the test set against hundreds of training epochs, exact and simple wins.
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
            ``seed + 100003 * e`` and epoch ``k``.
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
        find_unused_parameters: bool = False,
        ddp_kwargs: Optional[Dict[str, Any]] = None,
        sync_after_experience: bool = True,
        check_consistency: bool = False,
    ) -> None:
        super().__init__()
        self.seed = seed
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

    # The wrapper holds a process group and cannot be pickled; it is rebuilt on demand after a reload.
    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_ddp=None, _signature=None, _recheck=True, _sharded=None, _sharded_key=None, _source=None)
        return state

    @staticmethod
    def active() -> bool:
        """True when running with more than one process."""
        return DistributedHelper.is_distributed and DistributedHelper.world_size > 1

    # -- model wrapping ----------------------------------------------------------------------------------------
    @staticmethod
    def _param_signature(module: nn.Module) -> Tuple[Any, ...]:
        return (id(module),) + tuple((id(p), p.requires_grad) for p in module.parameters())

    def _wrap(self, strategy: Any) -> None:
        """Sets ``strategy.model`` to a DDP wrapper of the current module, building one if needed.

        avalanche-lib 0.6 never wraps the model (no template calls ``DistributedHelper.wrap_model``); its
        ``wrap_model`` would also use the global rank as CUDA index, hence our own construction.
        """
        module = unwrap_model(strategy.model)
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
            kwargs: Dict[str, Any] = dict(find_unused_parameters=self.find_unused_parameters, **_NO_FORWARD_BUFFER_SYNC)
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
        strategy.model = unwrap_model(strategy.model)

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
        self._sharded = shard_loader(
            self._source,
            rank=DistributedHelper.rank,
            world_size=DistributedHelper.world_size,
            seed=self.seed + 100003 * exp,
            epoch=epoch,
        )
        self._sharded_key = (exp, epoch)
        strategy.dataloader = self._sharded

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

    def before_training_exp(self, strategy: Any, **kwargs: Any) -> None:
        if not self.active():
            return
        # Epoch 0: the clock (the last plugin) resets its epoch counter only after this callback.
        self._shard_train(strategy, epoch=0)
        self._ddp, self._signature, self._recheck = None, None, True
        if self.check_consistency:
            self._check_memories(strategy)

    def before_training_epoch(self, strategy: Any, **kwargs: Any) -> None:
        if self.active():
            self._shard_train(strategy, epoch=strategy.clock.train_exp_epochs)
            # Plugins may change which parameters train between epochs (finetuning freezes the backbone).
            self._recheck = True

    def before_eval_exp(self, strategy: Any, **kwargs: Any) -> None:
        if not self.active():
            return
        loader = strategy.dataloader
        # avalanche-lib 0.6 make_eval_dataloader shards evaluation while no metric is reduced: read it all.
        if isinstance(loader, MultiDatasetDataLoader) and loader.distributed_sampling:
            strategy.dataloader = _rebuild_multi(loader, loader.datasets, distributed_sampling=False)
        elif isinstance(loader, DataLoader) and isinstance(loader.sampler, DistributedSampler):
            strategy.dataloader = DataLoader(loader.dataset, shuffle=False, **_torch_loader_kwargs(loader))

    # -- consistency checks ------------------------------------------------------------------------------------
    def after_training_epoch(self, strategy: Any, **kwargs: Any) -> None:
        if self.active() and self.check_consistency:
            # Parameters only: buffers DDP does not synchronise (BatchNorm statistics) may differ until the
            # end of the experience.
            local = model_fingerprint(unwrap_model(strategy.model), buffers=False)
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
