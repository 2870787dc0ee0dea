"""One class-incremental run of a config, in its folder: :class:`Run` (train, resume; :mod:`.evaluate` re-evaluates
a finished one).

Everything a run produces lands in one folder (``output.dir``):

    config.yaml        the validated config (with defaults filled in)
    classes.json       class order (original ids in arrival order), the original id -> label mapping and the
                       image shape the model reads (load_run rebuilds it without the dataset)
    log.txt            the opening block, then every metric after each epoch and evaluation, lines timestamped
    checkpoint.pkl     the strategy after the last finished experience, or inside one (checkpoint.every_*,
                       a preemption signal: runner/midway.py); Avalanche's dill pickle, atomic
    progress.json      finished experiences, the wall time spent so far, where a checkpoint inside one stands
    results.json       accuracy matrix, CIL summary, locality per experience/layer/head, versions, ...; written
                       last: it marks a finished run, whose files a --resume never changes
    model.pt           the final model's state dict (loads into a freshly built model, head included)
    attention_maps.json  per-image attention of a few probe images after every experience (evaluation.attention_maps)
    *.png              accuracy matrix, accuracy curve, locality and per-image attention figures (by name:
                       --overwrite removes these, not a PNG of the user's)
    tb/, csv/, wandb/  TensorBoard, CSV and W&B logs (evaluation.loggers: [text, tensorboard, csv, wandb])
    .lock              held (``fcntl.flock``) while a run uses the folder: one run per folder

Everything that can be checked is checked before the folder is touched (config, device, output folder,
existing run, dataset, model, strategy options), so a bad input leaves nothing behind. ``--resume`` continues
with the run's own ``config.yaml`` (only :data:`~avalanche_lpa.config.HARMLESS_KEYS` may differ); on a finished run
it changes nothing and returns its results. A :class:`~avalanche_lpa.plugins.DivergenceGuardPlugin` stops a
diverging run: the last good checkpoint stays and no results are written. SIGTERM / SIGUSR1 stop a run after its
current iteration with a checkpoint (:class:`~.midway.Preempted`); a failed write is a one-line
:class:`~avalanche_lpa.files.WriteError`.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from avalanche.distributed import DistributedHelper
from avalanche.training.determinism.rng_manager import RNGManager

from ..compat.avalanche_warnings import each_deprecation_once
from ..config.files import dump_config
from ..config.schema import RunConfig
from ..config.validation import validate
from ..distributed import DistInfo, init_distributed, main_process_loggers, on_main
from ..errors import ConfigError
from ..files import atomic_write_bytes
from ..metrics import experience_sizes
from ..plugins import (
    DistributedPlugin, DivergenceError, DivergenceGuardPlugin, MemoryCensusPlugin, install_phase_timer,
)
from ..plugins.herding import restore_rank_memory
from ..report import read_results
from ..training import build_strategy, divergence_hint, strategy_entry
from .benchmark import build_benchmark, class_mapping, input_shape
from .card import run_card, start_label
from .checkpoint import every_rank_memory, load_checkpoint, save_checkpoint_atomic
from .console import experience_summary
from .folder import (
    RunFolderLock,
    check_no_symlinks,
    check_not_locked,
    check_output_folder,
    clear_run_files,
    output_dir,
)
from .loggers import close_loggers, evaluator, flush_logs, log_line, make_loggers
from .midway import Preempted, StopRequest, checkpoint_plugin, continue_experience, preempted_message
from .model import build_model, check_model_input, model_input, resolve_device
from .outputs import memory_census, run_results, write_attention_maps, write_json, write_outputs
from .resume import (
    check_checkpoint_config,
    check_existing_run,
    check_same_experiment,
    finished_run,
    read_progress,
)

__all__ = ["Run", "RunInterrupted", "check_runnable", "run"]


class RunInterrupted(RuntimeError):
    """Raised by ``run(..., stop_after=k)`` after experience ``k`` was trained and checkpointed."""


def check_runnable(config: RunConfig) -> None:
    """Raises :class:`ConfigError` for a valid config the runner cannot run (a strategy that trains on the whole
    stream at once); ``compare`` asks this of every cell before the first one trains."""
    name = config.strategy.name
    if strategy_entry(name).whole_stream:
        raise ConfigError(
            f"strategy {name!r} trains once on the whole stream, the runner experience by experience; for the "
            "joint upper bound run strategy naive with data.n_experiences: 1 (what compare's joint controls do)"
        )


class Run:
    """One run of a config: its folder, loggers, benchmark, model and strategy, the experience loop, checkpoints,
    preemption, and the evaluation of the finished run.

    Args:
        config: a :class:`~avalanche_lpa.config.RunConfig`, or a config mapping (validated here).
        resume: continue from ``checkpoint.pkl`` in the run folder (no finished experience is recomputed). The
            config must be the folder's ``config.yaml`` up to :data:`~avalanche_lpa.config.HARMLESS_KEYS`. Without it
            (and without ``overwrite``) a folder that holds a run is an error, so nothing is overwritten silently.
        overwrite: start afresh: delete the files a previous run wrote in the folder.
        plugins: extra Avalanche plugins for the strategy.
        divergence_guard: stop with :class:`~avalanche_lpa.plugins.DivergenceError` at the first non-finite loss or
            parameter (the checkpoint of the last finished experience stays, no results are written).

    Raises:
        ConfigError: an invalid config, or options that cannot go together.
    """

    def __init__(self, config: Any, *, resume: bool = False, overwrite: bool = False,
                 plugins: Optional[List[Any]] = None, divergence_guard: bool = True) -> None:
        self.config: RunConfig = validate(config)
        if resume and overwrite:
            raise ConfigError("--resume continues a run and --overwrite starts it afresh; pass only one of them")
        check_runnable(self.config)
        self.resume, self.overwrite = resume, overwrite
        self.folder: Path = output_dir(self.config)
        self.checkpoint_path = self.folder / "checkpoint.pkl"
        self.plugins = list(plugins or [])
        self.divergence_guard = divergence_guard
        self.loggers: List[Any] = []
        self.info: Optional[DistInfo] = None
        self.benchmark: Any = None
        self.model: Any = None
        self.strategy: Any = None

    # -- checks and setup (nothing written) -------------------------------------------------------------------
    def finished(self) -> Optional[str]:
        """What the finished run in the folder reports, when ``resume`` finds one (``None`` otherwise).

        Raises:
            ConfigError: this config changes the finished run's experiment (flags that a ``--resume`` would refuse
                are not silently ignored because there is nothing left to train).
        """
        report = finished_run(self.folder) if self.resume else None
        if report is not None:
            check_same_experiment(self.folder, self.config, "--resume")
        return report

    def _check_folder(self) -> None:
        """Cheap checks first (no file is created): output folder, a live run in it, a run it already holds."""
        check_output_folder(self.folder)
        check_not_locked(self.folder)
        check_no_symlinks(self.folder)
        if not self.overwrite:
            check_existing_run(self.folder, self.config, self.resume)

    def _build(self) -> None:
        """The benchmark, model and strategy: everything the run needs, checked before the folder is touched."""
        config = self.config
        RNGManager.set_random_seeds(config.seed)
        # Rank 0 downloads / unpacks / checks the data first; the others only read it (concurrent downloads into
        # one folder would corrupt it; on several nodes without a shared filesystem the data must be on each).
        with DistributedHelper.main_process_first():
            self.benchmark = build_benchmark(config.data, config.seed, download=self.info.is_main,
                                             model_input=model_input(config))
        self.model = build_model(config, self.benchmark.n_classes)
        if config.model.name is None:  # a timm model's input was checked when it was built (check_timm_input)
            check_model_input(self.model, input_shape(config.data))
        hint = f"{divergence_hint(config.strategy, prefix='strategy.')}, and start the run again with --overwrite"
        guard = [DivergenceGuardPlugin(hint=hint)] if self.divergence_guard else []
        try:
            self.strategy = build_strategy(
                config.strategy, self.model, evaluator=evaluator(self.loggers, config), device=self.info.device,
                num_classes=self.benchmark.n_classes, divergence_guard=self.divergence_guard,  # the guard is ours
                # the DDP plugin is inactive in one process
                plugins=self.plugins + [MemoryCensusPlugin()] + guard + [DistributedPlugin(seed=config.seed, sample_order=config.data.sample_order)],
            )
        except ValueError as error:  # a check that needs the model or the stream (a memory too small for GSS, ...)
            raise ConfigError(f"strategy: {error}") from None

    def _network(self) -> Any:
        """The network being trained (a resumed strategy holds unpickled copies of the model it was built with)."""
        return strategy_entry(self.config.strategy.name).trained_model(self.strategy, self.model)

    # -- training ------------------------------------------------------------------------------------------------
    def train(self, stop_after: Optional[int] = None) -> Dict[str, Any]:
        """Trains and evaluates the run experience by experience; returns the ``results.json`` content.

        On a ``resume`` of a finished run nothing is written: its ``results.json`` is returned.

        Args:
            stop_after: stop (:class:`RunInterrupted`) after training and checkpointing this many experiences; for
                tests of resume and for splitting long runs over jobs.

        Raises:
            ConfigError: invalid device or output folder, a folder holding another run or used by a live one
                (:class:`~.folder.FolderLockedError`); raised before anything is written.
            DatasetNotFoundError: the dataset is missing and cannot be downloaded.
            CheckpointError: the checkpoint to resume from cannot be read.
            DivergenceError: training diverged.
        """
        # Under torchrun: join the process group, one device per process; otherwise a single-process no-op.
        self.info = init_distributed(device=resolve_device(self.config.device), seed=self.config.seed)
        self._check_folder()
        if self.finished() is not None:  # finished: nothing to do, nothing written
            return read_results(self.folder / "results.json")
        with each_deprecation_once():
            self._build()
            # Everything is checked: from here on the folder is created, locked (rank 0) and written.
            with RunFolderLock(self.folder) if self.info.is_main else contextlib.nullcontext():
                if self.info.is_main:
                    self._claim_folder()
                try:
                    return self._train(stop_after)
                finally:
                    close_loggers(self.loggers)

    def _claim_folder(self) -> None:
        """Inside the lock (rank 0): the checks again, now that no other run can start, then a clean folder."""
        check_no_symlinks(self.folder)  # again, now that no other run can plant one
        if self.overwrite:
            clear_run_files(self.folder)
            return
        check_existing_run(self.folder, self.config, self.resume)
        for stale in list(self.folder.glob("checkpoint.pkl.*.tmp")) + list(self.folder.glob(".*.tmp")):
            stale.unlink()  # a write cut short by a kill; ours is the only run in the folder

    def _restore(self) -> Dict[str, Any]:
        """The checkpoint of a resumed run loaded into the strategy; the run's progress so far."""
        progress: Dict[str, Any] = {"finished_experiences": 0, "wall_time_s": 0.0, "train_iterations": [],
                                    "phase_times_s": []}
        self._position, self._rng = None, None
        if self.resume and self.checkpoint_path.exists():
            self.strategy, start = load_checkpoint(self.strategy, self.checkpoint_path, map_location=self.info.device)
            restore_rank_memory(self.strategy)  # each rank its own memory (memory_scope rank_shard / rank_augmented)
            self._rng = RNGManager.__getstate__()  # the checkpoint's random state, before anything draws from it
            progress = read_progress(self.folder, start)
            self._position = check_checkpoint_config(checkpoint_plugin(self.strategy), self.config, self.folder)
        return progress

    def _open_loggers(self, progress: Dict[str, Any]) -> None:
        # The network as it is now: the model just built, or the one a resumed strategy holds (its head grown).
        network = self._network() if self.resume else self.model
        total = len(self.benchmark.train_stream)
        start = start_label(self.resume, progress["finished_experiences"], self._position, total)
        card = run_card(self.config, self.folder, self.benchmark, network, self.info, start)
        self.loggers.extend(main_process_loggers(lambda: make_loggers(self.config, self.folder, total, card.lines())))
        # A resumed strategy carries the loggers it was saved with (pickled); log through this run's instead.
        self.strategy.evaluator.loggers = self.loggers
        on_main(print, card.text(), flush=True)

    def _train(self, stop_after: Optional[int]) -> Dict[str, Any]:
        """The experience loop, inside the folder lock."""
        config, folder = self.config, self.folder
        progress = self._restore()
        strategy = self.strategy
        plugin = checkpoint_plugin(strategy)
        if plugin.run_config is None:  # a fresh run, or a checkpoint from before the plugin existed
            plugin.run_config = config.as_dict()
        if self.info.is_main and not (folder / "config.yaml").is_file():  # a resumed run keeps its config.yaml
            atomic_write_bytes(folder / "config.yaml", dump_config(config).encode())
            # with the image shape the model was built for: load_run rebuilds it without the dataset
            write_json(folder / "classes.json", {**class_mapping(self.benchmark),
                                                 "image_shape": list(input_shape(config.data))})
        self._open_loggers(progress)
        timer = {"started": time.perf_counter()}  # the experience's start, less the time spent before a resume
        phases = install_phase_timer(strategy)  # seconds per phase of each experience (plugins/phase_timer.py)

        def save_inside(strategy_: Any, where: Dict[str, Any]) -> bool:
            """An intra-experience checkpoint (:class:`~.midway.EpochCheckpointPlugin`), with progress.json."""
            if not config.output.checkpoint:
                return False
            plugin.position = {**where, "elapsed_s": time.perf_counter() - timer["started"]}
            try:
                flush_logs(strategy_)
                with every_rank_memory(strategy_):
                    on_main(save_checkpoint_atomic, strategy_, self.checkpoint_path)
                inside = {k: plugin.position[k] for k in ("experience", "phase", "epoch", "iteration")}
                on_main(write_json, folder / "progress.json", {**progress, "inside_experience": inside})
            finally:
                plugin.position = None
            return True

        stop = StopRequest()
        plugin.connect(every_epochs=config.checkpoint.every_epochs, every_minutes=config.checkpoint.every_minutes,
                       save=save_inside, stop=stop)
        workers, total = config.data.num_workers, len(self.benchmark.train_stream)
        sizes = experience_sizes(self.benchmark.test_stream)
        position, rng = self._position, self._rng
        try:
            with stop.handling():
                for experience in self.benchmark.train_stream[progress["finished_experiences"]:]:
                    timer["started"] = time.perf_counter() - (position["elapsed_s"] if position else 0.0)
                    phases.reset()
                    if position is not None:  # a checkpoint taken inside this experience
                        continue_experience(strategy, plugin, position, rng, num_workers=workers)
                        position = None
                    else:
                        strategy.train(experience, num_workers=workers)
                    strategy.eval(self.benchmark.test_stream, num_workers=workers)
                    progress["finished_experiences"] = experience.current_experience + 1
                    progress["train_iterations"].append(strategy.clock.train_iterations)
                    flush_logs(strategy)  # the log must be at least as far as the checkpoint
                    with phases.phase_times.phase("attention_maps"):
                        on_main(write_attention_maps, strategy, folder)
                    if config.output.checkpoint:
                        with phases.phase_times.phase("checkpoint"):
                            with every_rank_memory(strategy):
                                on_main(save_checkpoint_atomic, strategy, self.checkpoint_path)
                        plugin.saved()
                    progress["phase_times_s"].append(phases.snapshot())  # before the wall time: never above it
                    seconds = time.perf_counter() - timer["started"]
                    progress["wall_time_s"] += seconds
                    summary = experience_summary(strategy.evaluator.get_last_metrics(),
                                                 progress["finished_experiences"], total, seconds,
                                                 progress["wall_time_s"], sizes,
                                                 phase_times=progress["phase_times_s"][-1],
                                                 exemplars=memory_census(strategy))
                    on_main(print, summary, flush=True)
                    log_line(strategy, summary)
                    on_main(write_json, folder / "progress.json", progress)
                    if stop_after is not None and progress["finished_experiences"] >= stop_after:
                        raise RunInterrupted(f"stopped after experience {stop_after} as asked; resume with --resume")
                    done = progress["finished_experiences"] == total
                    if not done and stop.requested():  # a signal during evaluation or the checkpoint
                        where = {"experience": progress["finished_experiences"], "phase": "end"}
                        raise Preempted(preempted_message(where, config.output.checkpoint))
        except DivergenceError as error:
            done = progress["finished_experiences"]
            kept = (
                f"{self.checkpoint_path} ({done} finished experience{'s' if done != 1 else ''}) is kept"
                if done and config.output.checkpoint else "no experience had finished, nothing was checkpointed"
            )
            message = f"{error}; {kept}, no results were written"
            log_line(strategy, f"error: {message}")
            raise DivergenceError(message) from None
        except Preempted as stopped:
            log_line(strategy, str(stopped))
            raise
        finally:
            flush_logs(strategy)
        return self._finish(progress, sizes)

    def _finish(self, progress: Dict[str, Any], test_sizes: List[int]) -> Dict[str, Any]:
        """``results.json`` of a run whose experiences are all trained, and the outputs (rank 0 writes them)."""
        network = self._network()
        results = run_results(self.config, self.strategy, network, progress=progress, device=self.info.device,
                              world_size=self.info.world_size, test_sizes=test_sizes,
                              classes=class_mapping(self.benchmark))
        on_main(write_outputs, self.config, self.folder, results, network)
        return results


def run(config: Any, *, resume: bool = False, overwrite: bool = False, stop_after: Optional[int] = None,
        plugins: Optional[List[Any]] = None, divergence_guard: bool = True) -> Dict[str, Any]:
    """Trains and evaluates one run; returns the ``results.json`` content: :meth:`Run.train` of
    ``Run(config, resume=..., overwrite=..., plugins=..., divergence_guard=...)`` (see :class:`Run`)."""
    return Run(config, resume=resume, overwrite=overwrite, plugins=plugins,
               divergence_guard=divergence_guard).train(stop_after)
