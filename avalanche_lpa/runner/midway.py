"""Checkpoints inside an experience, and preemption by SIGTERM / SIGUSR1.

:class:`EpochCheckpointPlugin` is the strategy's last plugin (after Avalanche's clock, so the counters it reads
are final). It asks the runner to write ``checkpoint.pkl`` after every ``every_epochs``-th epoch of a training
or finetuning phase, or once ``every_minutes`` have passed since the last checkpoint; and, when a preemption
signal arrived, right after the current iteration (then it raises :class:`Preempted`). The checkpoint is the
whole strategy, as at the end of an experience, plus where it was taken (:attr:`EpochCheckpointPlugin.position`:
experience, phase, epochs done in the phase, iterations done in the epoch, and the random state at the start of
that epoch).

:func:`continue_experience` finishes the experience of such a checkpoint exactly as the uninterrupted run would
have: the remaining epochs of the phase, with the pickled optimizer, lr scheduler, teacher, memory and random
state; an epoch cut short is replayed from its start's random state with its first ``iteration`` batches loaded
and dropped (same order, same augmentations), then the saved random state continues.
"""
from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import Any, Callable, Dict, Iterator, Optional

import torch
import torch.distributed as dist
from avalanche.core import SupervisedPlugin
from avalanche.distributed import DistributedHelper
from avalanche.training.determinism.rng_manager import RNGManager

from ..plugins import DistributedPlugin
from ..plugins import BalancedFinetuningPlugin, ConcatReplayPlugin, RepeatedAugmentationPlugin, in_finetuning
from ..plugins.herding import rank_memories

__all__ = [
    "PREEMPT_SIGNALS",
    "PREEMPTED_EXIT",
    "Preempted",
    "StopRequest",
    "EpochCheckpointPlugin",
    "checkpoint_plugin",
    "continue_experience",
]

#: Signals that preempt a run: SIGTERM (what schedulers send) and SIGUSR1 (Slurm's ``--signal=USR1@<secs>``).
PREEMPT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
#: Exit status of a preempted run (``EX_TEMPFAIL``: try again, with ``--resume``).
PREEMPTED_EXIT = 75


class Preempted(RuntimeError):
    """A preemption signal stopped the run after a checkpoint (the message is the one line to print)."""


def _distributed() -> bool:
    return DistributedHelper.is_distributed and DistributedHelper.world_size > 1


def _any_rank(flag: bool) -> bool:
    """``flag`` or-ed over all processes (so every rank stops at the same iteration); itself in one process."""
    if not _distributed():
        return flag
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


class StopRequest:
    """Records a preemption signal; :meth:`requested` is read where the run can stop cleanly."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum  # only a flag: the training loop stops at the end of its iteration

    @contextlib.contextmanager
    def handling(self) -> Iterator["StopRequest"]:
        """Catches :data:`PREEMPT_SIGNALS` for the block (main thread only; elsewhere signals stay as they are)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {number: signal.signal(number, self._handle) for number in PREEMPT_SIGNALS}
        try:
            yield self
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def requested(self) -> bool:
        """Whether any process got a preemption signal (a collective call under torchrun: every rank calls it)."""
        return _any_rank(self.signum is not None)


def _rng_state() -> Dict[str, Any]:
    return RNGManager.__getstate__()


def _set_rng_state(state: Dict[str, Any]) -> None:
    RNGManager.__setstate__(state)


class _ResumedEpoch:
    """The rest of an epoch a checkpoint cut short: the epoch's batches in their order, from ``skip`` on.

    The loader is iterated from the random state of the epoch's start, so the sample order, the worker seeds
    and (in the main process) the augmentations are the uninterrupted run's; the first ``skip`` batches are
    loaded and dropped, then the random state of the checkpoint continues.
    """

    def __init__(self, loader: Any, skip: int, epoch_rng: Dict[str, Any], rng: Dict[str, Any]) -> None:
        self.loader, self.skip, self.epoch_rng, self.rng = loader, skip, epoch_rng, rng

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        if name == "loader":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.loader, name)

    def __iter__(self) -> Iterator[Any]:
        _set_rng_state(self.epoch_rng)
        batches = iter(self.loader)
        for _ in range(self.skip):
            next(batches)
        _set_rng_state(self.rng)
        yield from batches


def _own_shard(loader: Any) -> None:
    """Points a pickled loader's sharding sampler at this process's rank (rank 0 wrote the checkpoint).

    Samplers that shard themselves (:class:`~avalanche_lpa.plugins.RepeatedAugmentationSampler`,
    ``DistributedSampler``) keep the rank they were built with and read it when iterated.
    """
    rank = DistributedHelper.rank if _distributed() else 0
    for sampler in (getattr(loader, "sampler", None), getattr(getattr(loader, "batch_sampler", None), "sampler", None)):
        if sampler is not None and hasattr(sampler, "rank") and hasattr(sampler, "num_replicas"):
            sampler.rank = rank


def _finetuning(strategy: Any) -> Optional[BalancedFinetuningPlugin]:
    return next((p for p in strategy.plugins if isinstance(p, BalancedFinetuningPlugin)), None)


class EpochCheckpointPlugin(SupervisedPlugin, supports_distributed=True):
    """Checkpoints at epoch ends inside an experience and stops the run on a preemption signal.

    Must come after Avalanche's clock (:func:`checkpoint_plugin` appends it). The runner connects it with
    :meth:`connect`; unconnected (or unpickled and not connected again) it does nothing.

    Attributes:
        position: where the checkpoint that holds this plugin was taken; ``None`` at the end of an experience.
        run_config: the config the run was started with (a resumed run is checked against it).
    """

    _TRANSIENT = ("_save", "_stop", "_last_save", "_resume", "_unskipped")

    def __init__(self) -> None:
        super().__init__()
        self.every_epochs: Optional[int] = None
        self.every_minutes: Optional[float] = None
        self.position: Optional[Dict[str, Any]] = None
        self.run_config: Optional[Dict[str, Any]] = None
        self._epoch_rng: Optional[Dict[str, Any]] = None
        self._reset()

    def _reset(self) -> None:
        self._save: Optional[Callable[[Any, Dict[str, Any]], bool]] = None
        self._stop: Optional[StopRequest] = None
        self._last_save = time.monotonic()
        self._resume: Optional[Dict[str, Any]] = None
        self._unskipped: Any = None

    def __getstate__(self) -> Dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in self._TRANSIENT}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    def connect(self, *, every_epochs: Optional[int], every_minutes: Optional[float],
                save: Callable[[Any, Dict[str, Any]], bool], stop: StopRequest) -> None:
        """Sets the schedule, the runner's ``save(strategy, position) -> written`` and the stop request."""
        self.every_epochs, self.every_minutes = every_epochs, every_minutes
        self._save, self._stop = save, stop
        self.saved()

    def saved(self) -> None:
        """Restarts the ``every_minutes`` clock (the runner calls it after an end-of-experience checkpoint)."""
        self._last_save = time.monotonic()

    def resume_at(self, position: Dict[str, Any], rng: Dict[str, Any]) -> None:
        """Arms the replay of an epoch cut short (``rng``: the random state the checkpoint restored)."""
        self._resume = {**position, "rng": rng}

    # -- where we are --------------------------------------------------------------------------------------
    @staticmethod
    def _where(strategy: Any) -> Dict[str, Any]:
        if in_finetuning(strategy):
            phase, epoch = "finetune", _finetuning(strategy).epoch
        else:
            phase, epoch = "train", strategy.clock.train_exp_epochs
        return {"experience": strategy.clock.train_exp_counter, "phase": phase, "epoch": epoch}

    def _due(self, epochs_done: int) -> bool:
        if self.every_epochs and epochs_done % self.every_epochs == 0:
            return True
        return bool(self.every_minutes) and time.monotonic() - self._last_save >= 60.0 * self.every_minutes

    def _checkpoint(self, strategy: Any, position: Dict[str, Any]) -> bool:
        """Saves through the runner with the loaders as an unpickled run needs them (unskipped, unsharded)."""
        skipped = strategy.dataloader
        if self._unskipped is not None:
            strategy.dataloader = self._unskipped
        distributed = next((p for p in strategy.plugins if isinstance(p, DistributedPlugin)), None)
        try:
            with distributed.unsharded(strategy) if distributed is not None else contextlib.nullcontext():
                written = self._save(strategy, position)
        finally:
            strategy.dataloader = skipped
        self.saved()
        return written

    # -- callbacks -----------------------------------------------------------------------------------------
    def before_training_epoch(self, strategy: Any, **kwargs: Any) -> None:
        # Last plugin: nothing draws random numbers between here and the loader's iterator.
        self._epoch_rng = _rng_state()
        resume, self._resume = self._resume, None
        if resume is None or not resume["iteration"]:
            return
        strategy.clock.train_epoch_iterations = resume["iteration"]  # the clock reset it for a new epoch
        self._epoch_rng = resume["epoch_rng"]
        self._unskipped = strategy.dataloader
        strategy.dataloader = _ResumedEpoch(strategy.dataloader, resume["iteration"], resume["epoch_rng"],
                                            resume["rng"])

    def after_training_iteration(self, strategy: Any, **kwargs: Any) -> None:
        if self._stop is None or not self._stop.requested():
            return
        position = {**self._where(strategy), "iteration": strategy.clock.train_epoch_iterations,
                    "epoch_rng": self._epoch_rng}
        written = self._checkpoint(strategy, position) if self._save is not None else False
        if _distributed():
            dist.barrier()  # no rank exits (torchrun would kill the others) before rank 0 has written
        raise Preempted(preempted_message(position, written))

    def after_training_epoch(self, strategy: Any, **kwargs: Any) -> None:
        if self._unskipped is not None:
            strategy.dataloader, self._unskipped = self._unskipped, None
        if self._save is None:
            return
        position = {**self._where(strategy), "iteration": 0, "epoch_rng": None}
        due = self._due(position["epoch"])
        if _distributed():  # every rank saves together (per-rank memories are gathered): one clock decides for all
            due = _any_rank(due)
        if due:
            self._checkpoint(strategy, position)


def preempted_message(position: Dict[str, Any], written: bool) -> str:
    """The one line a preempted run prints (1-based experience and epoch numbers).

    ``position["phase"] == "end"``: between experiences, ``position["experience"]`` of them finished.
    """
    if position["phase"] == "end":
        where = f"after experience {position['experience']}"
    else:
        phase = "finetuning epoch" if position["phase"] == "finetune" else "epoch"
        where = f"at experience {position['experience'] + 1}, {phase} {position['epoch'] + 1}"
    if not written:
        return f"preempted {where}: not checkpointed (output.checkpoint is false); start the run again"
    return f"preempted {where}: checkpointed; continue with --resume"


def checkpoint_plugin(strategy: Any) -> EpochCheckpointPlugin:
    """The strategy's :class:`EpochCheckpointPlugin`, appended (as the last plugin) if it has none."""
    plugin = next((p for p in strategy.plugins if isinstance(p, EpochCheckpointPlugin)), None)
    if plugin is None:
        plugin = EpochCheckpointPlugin()
        strategy.plugins.append(plugin)
    return plugin


def _own_memory_training_set(strategy: Any, **kwargs: Any) -> None:
    """Under per-rank memories and replay by concatenation, this rank's training set and loader built again: the
    checkpoint pickled rank 0's (its memory concatenated), and each rank trains on its own memory."""
    concat = next((p for p in strategy.plugins if isinstance(p, ConcatReplayPlugin)), None)
    if not _distributed() or concat is None or not rank_memories(strategy):
        return
    strategy.train_dataset_adaptation()  # the experience's data, as at the experience's start ...
    concat.after_train_dataset_adaptation(strategy)  # ... and this rank's memory
    strategy.make_train_dataloader(**kwargs)
    for repeated in (p for p in strategy.plugins if isinstance(p, RepeatedAugmentationPlugin)):
        repeated.before_training_exp(strategy)  # its sampler over the new training set


def continue_experience(strategy: Any, plugin: EpochCheckpointPlugin, position: Dict[str, Any],
                        rng: Dict[str, Any], **kwargs: Any) -> None:
    """Finishes the training experience of a checkpoint taken inside it, as ``strategy.train`` would have.

    Args:
        strategy: the strategy just loaded from that checkpoint.
        plugin: its :class:`EpochCheckpointPlugin` (connected).
        position: ``plugin.position``.
        rng: the random state right after loading (the checkpoint's).
    """
    if position["phase"] != "finetune":
        _own_memory_training_set(strategy, **kwargs)
    _set_rng_state(rng)  # whatever ran since the load (loggers, ...) must not have moved the random state
    plugin.resume_at(position, rng)
    _own_shard(strategy.dataloader)
    strategy.is_training = True
    strategy._stop_training = False
    if position["phase"] == "finetune":
        finetuning = _finetuning(strategy)
        finetuning.resume(strategy, position["epoch"], **kwargs)
        # The plugins before it ran their after_training_exp before the checkpoint (memory update, ...).
        for later in strategy.plugins[strategy.plugins.index(finetuning) + 1:]:
            if hasattr(later, "after_training_exp"):
                later.after_training_exp(strategy, **kwargs)
    else:
        # Avalanche's _train_exp loop from the next epoch (or the one cut short).
        for _ in range(strategy.train_epochs - position["epoch"]):
            strategy._before_training_epoch(**kwargs)
            if strategy._stop_training:  # early stopping
                strategy._stop_training = False
                break
            strategy.training_epoch(**kwargs)
            strategy._after_training_epoch(**kwargs)
        strategy._after_training_exp(**kwargs)
    strategy._after_training(**kwargs)
    strategy._train_cleanup()
