"""One class-incremental run from a validated config: train, evaluate, checkpoint, resume, report.

Everything a run produces lands in one folder (``output.dir``):

    config.yaml        the validated config (with defaults filled in)
    classes.json       class order (original ids in arrival order) and the original id -> label mapping
    log.txt            Avalanche's TextLogger output
    checkpoint.pkl     the strategy after the last finished experience, or inside one (checkpoint.every_*,
                       a preemption signal: experiment/midway.py); Avalanche's dill pickle, atomic
    progress.json      finished experiences, the wall time spent so far, where a checkpoint inside one stands
    results.json       accuracy matrix, CIL summary, locality per experience/layer/head, versions, ...
    model.pt           the final model's state dict (loads into a freshly built model, head included)
    attention_maps.json  per-image attention of a few probe images after every experience (evaluation.attention_maps)
    *.png              accuracy matrix, accuracy curve, locality and per-image attention figures
    tb/, csv/, wandb/  TensorBoard, CSV and W&B logs (evaluation.loggers: [text, tensorboard, csv, wandb])
    .lock              held (``fcntl.flock``) while a run uses the folder: one run per folder

Everything that can be checked is checked before the folder is touched (config, device, output folder,
existing run, dataset, model, strategy options), so a bad input leaves nothing behind. ``--resume`` continues
with the run's own ``config.yaml`` (only :data:`~.config.HARMLESS_KEYS` may differ). A
:class:`~avalanche_lpa.plugins.DivergenceGuardPlugin` stops a diverging run: the last good checkpoint stays and
no results are written. SIGTERM / SIGUSR1 stop a run after its current iteration with a checkpoint
(:class:`~.midway.Preempted`); a failed write is a one-line :class:`~avalanche_lpa.files.WriteError`.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional

import timm
import torch
from avalanche.distributed import DistributedHelper
from avalanche.logging import CSVLogger, InteractiveLogger, TensorboardLogger, TextLogger
from avalanche.training.determinism.rng_manager import RNGManager

from ..compat.avalanche_warnings import each_deprecation_once
from ..compat.avalanche_wandb import CompatWandBLogger
from ..distributed import init_distributed, main_process_loggers, on_main
from ..files import atomic_write_bytes
from ..metrics import AttentionMapsPluginMetric, cil_evaluator, experience_sizes, find_attention_maps_metric
from ..plugins import DistributedPlugin, DivergenceError, DivergenceGuardPlugin, install_phase_timer
from ..training import build_strategy, strategy_entry, trains_on_logits
from .checkpoint import load_checkpoint, save_checkpoint_atomic
from .console import ConsoleLogger, experience_summary
from .config import (
    HARMLESS_KEYS,
    ConfigError,
    config_differences,
    dump_config,
    leaves,
    load_yaml,
    upgrade_config,
    validate,
)
from .data import build_benchmark, class_mapping
from .folder import (
    RunFolderLock,
    check_no_symlinks,
    check_not_locked,
    check_output_folder,
    clear_run_files,
    existing_run_files,
    open_log,
    read_run_json,
)
from .report import (
    collect_results,
    plot_attention_maps,
    plot_runs,
    read_results,
    uniform_attention_distance,
    write_results,
)
from .midway import Preempted, StopRequest, checkpoint_plugin, continue_experience, preempted_message
from .schema import RunConfig, typed
from .timm_model import build_timm_model, model_label, model_slug

__all__ = [
    "run",
    "run_name",
    "output_dir",
    "resolve_device",
    "build_model",
    "evaluate_saved_run",
    "read_run_config",
    "read_run_yaml",
    "load_model_file",
    "RunInterrupted",
]

class RunInterrupted(RuntimeError):
    """Raised by ``run(..., stop_after=k)`` after experience ``k`` was trained and checkpointed."""


def _fields(config: Dict[str, Any], **fixed: Any) -> Dict[str, Any]:
    fields = dict(model=model_slug(config), strategy=config["strategy"]["name"], seed=config["seed"])
    fields.update(fixed)
    return {"name": config["name"].format(**fields), **fields}


def run_name(config: Dict[str, Any], **fixed: Any) -> str:
    """``name`` with ``{model}``, ``{strategy}`` and ``{seed}`` filled in (``fixed`` overrides a field)."""
    return _fields(config, **fixed)["name"]


def output_dir(config: Dict[str, Any], **fixed: Any) -> Path:
    """The run folder: ``output.dir`` with ``{name}``, ``{model}``, ``{strategy}`` and ``{seed}`` filled in."""
    return Path(config["output"]["dir"].format(**_fields(config, **fixed))).expanduser()


def resolve_device(name: str) -> torch.device:
    """``"auto"`` is CUDA when available, else CPU; an unknown device or one this machine lacks is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    valid = "use --device auto, cpu, cuda, cuda:N or mps"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"device {name!r}: unknown device; {valid}") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device {name!r} asked for but CUDA is not available here; use --device cpu or auto")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"device {name!r}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
        return device
    backend = getattr(torch, device.type, None) if device.type != "mps" else torch.backends.mps
    if device.type != "meta" and backend is not None and getattr(backend, "is_available", lambda: False)():
        return device
    raise ConfigError(f"device {name!r} is not available here; {valid}")


def build_model(config: Dict[str, Any], num_classes: int) -> torch.nn.Module:
    """The model of a config through timm's registry: the strategy's model family under the head it needs (its
    registry entry, :func:`~avalanche_lpa.training.strategy_entry`: a fixed head of ``num_classes``, the growing
    head ``model.head``, or none where the model grows its own).

    Raises:
        ConfigError: the model refuses ``model.overrides`` (one line, from the model's ``ValueError``), or the timm
            model of ``model.name`` cannot be built or cannot take the dataset's images.
    """
    entry = strategy_entry(config["strategy"]["name"])
    if config["model"]["name"] is not None:  # timm:<name>: any timm model under our head (experiment/timm_model.py)
        return build_timm_model(config, num_classes if entry.head == "fixed" else None)
    overrides = dict(config["model"]["overrides"])
    for key, value in entry.head_keywords(num_classes, config["model"]["head"]).items():
        overrides.setdefault(key, value)  # model.overrides may set num_classes; head_type is model.head's
    try:
        model = timm.create_model(model_label(config), **overrides)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"model.overrides: {' '.join(str(error).split())}") from None
    if config["model"]["compile"]:
        # In place (nn.Module.compile): state-dict keys, deepcopy (LwF) and checkpoints stay as they are.
        model.backbone.compile()
    return model


def _loggers(config: Dict[str, Any], folder: Path) -> List[Any]:
    """The console logger (progress bars) and the file loggers ``evaluation.loggers`` names."""
    evaluation = config["evaluation"]
    loggers: List[Any] = []
    if evaluation["progress_bar"]:
        loggers.append(InteractiveLogger() if evaluation["verbose"] else ConsoleLogger())
    for name in evaluation["loggers"]:
        if name == "text":
            loggers.append(TextLogger(open_log(folder / "log.txt")))
        elif name == "tensorboard":
            loggers.append(TensorboardLogger(tb_log_dir=str(folder / "tb")))
        elif name == "csv":
            loggers.append(CSVLogger(log_folder=str(folder / "csv")))
        elif name == "wandb":  # W&B's own settings apply (WANDB_MODE=offline, WANDB_PROJECT, ...)
            loggers.append(CompatWandBLogger(project_name="avalanche-lpa", run_name=run_name(config),
                                             dir=str(folder), config=config, save_code=False,
                                             path=str(folder / "wandb")))
    return loggers


def _close_loggers(loggers: List[Any]) -> None:
    """Closes what the loggers hold open (files, TensorBoard writers, the W&B run)."""
    for logger in loggers:
        close = getattr(logger, "close", None)
        if callable(close):
            try:
                close()
            except Exception as error:  # a logger that cannot flush must not turn a finished run into a failure
                warnings.warn(f"closing {type(logger).__name__} failed: {error}")


def _flush_logs(strategy) -> None:
    """Flushes the text loggers' files, so what was logged survives a kill (before every checkpoint)."""
    for logger in getattr(getattr(strategy, "evaluator", None), "loggers", None) or []:
        handle = getattr(logger, "file", None)
        if handle is not None and hasattr(handle, "flush") and not getattr(handle, "closed", False):
            handle.flush()


def _log_line(strategy, line: str) -> None:
    """Appends ``line`` to the text loggers' files (not to the console, where the caller reports it)."""
    for logger in getattr(getattr(strategy, "evaluator", None), "loggers", None) or []:
        handle = getattr(logger, "file", None)
        name = getattr(handle, "name", None)  # a console stream has "<stdout>" or, when captured, no name
        if isinstance(handle, io.TextIOWrapper) and isinstance(name, str) and not name.startswith("<") \
                and not handle.closed:
            print(line, file=handle, flush=True)


def _evaluator(loggers: List[Any], cfg: RunConfig):
    """The run's evaluator over ``loggers``, a list filled once the run folder exists (after validation)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No loggers specified")
        images = cfg.evaluation.attention_maps
        extra = [AttentionMapsPluginMetric(num_images=images, seed=cfg.seed)] if images else []
        return cil_evaluator(loggers, probe_size=cfg.evaluation.locality_probe_size, probe_seed=cfg.seed,
                             extra_metrics=extra, train_metrics=True,
                             train_accuracy=trains_on_logits(cfg.strategy["name"]))


def read_run_yaml(folder: os.PathLike) -> Optional[Dict[str, Any]]:
    """The ``config.yaml`` of a run folder as written (not validated), ``None`` if there is none.

    Raises:
        ConfigError: the file cannot be read or is not YAML (one line).
    """
    path = Path(folder) / "config.yaml"
    if not path.is_file():
        return None
    try:
        raw = load_yaml(path.read_text())
    except Exception as error:  # the folder's file was edited or damaged
        raise ConfigError(f"{path} is not a valid config ({' '.join(str(error).split())}); fix it, or start the run "
                          "afresh with --overwrite") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} is not a valid config (not a mapping); fix it, or start the run afresh with --overwrite")
    return raw


def read_run_config(folder: os.PathLike) -> Optional[Dict[str, Any]]:
    """The validated ``config.yaml`` of a run folder, ``None`` if there is none.

    Raises:
        ConfigError: the file is not a valid config.
    """
    raw = read_run_yaml(folder)
    return None if raw is None else _validated_run_config(raw, folder)


def _validated_run_config(raw: Dict[str, Any], folder: os.PathLike) -> Dict[str, Any]:
    """``raw`` (a run folder's ``config.yaml`` as read) validated; an error names the file."""
    try:
        return validate(raw)
    except ConfigError as error:
        raise ConfigError(f"{Path(folder) / 'config.yaml'} is not a valid config ({error}); fix it, or start the run "
                          "afresh with --overwrite") from None


def _check_same_experiment(folder: Path, config: Dict[str, Any], what: str) -> None:
    """A ``--resume`` / ``--eval-only`` config may differ from the folder's ``config.yaml`` in harmless keys only.

    The file holds a validated config with every key, so it is compared as written; one from an older version
    that lacks keys of today's schema is validated first (its defaults filled in).
    """
    raw = read_run_yaml(folder)
    if raw is None:
        return
    saved = upgrade_config(raw)
    if set(leaves(config)) - set(leaves(saved)):
        saved = _validated_run_config(raw, folder)  # the file as read above, not read again
    changed = config_differences(saved, config, ignore=HARMLESS_KEYS)
    if changed:
        raise ConfigError(
            f"{what} uses the config {folder} was started with (config.yaml); these settings differ from it: "
            f"{', '.join(changed)}; drop the flags that change them (only {', '.join(HARMLESS_KEYS)} may differ), "
            "or start a new run with another --output or --overwrite"
        )


def _check_existing_run(folder: Path, config: Dict[str, Any], resume: bool) -> None:
    holds = existing_run_files(folder)
    if holds and not resume:
        raise ConfigError(
            f"{folder} already holds a run ({', '.join(holds)}); pass --resume to continue it, --overwrite to start "
            "it afresh (deletes its files), or choose another --output"
        )
    if resume:
        _check_same_experiment(folder, config, "--resume")


def _divergence_hint(cfg: RunConfig) -> str:
    options = cfg.strategy
    first = (options.get("lr_schedule") or {}).get("lr_first")
    if first is not None:
        lowered = f"strategy.lr_schedule.lr_first / strategy.lr (now {first:g} / {options['lr']:g})"
    else:
        lowered = f"strategy.lr (now {options['lr']:g})"
    return f"lower {lowered} and start the run again with --overwrite"


def _write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, json.dumps(data, indent=2).encode())


def _save_model(model: torch.nn.Module, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _one_line(error: BaseException, limit: int = 240) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_model_file(model: torch.nn.Module, path: Path) -> None:
    """Loads a run's ``model.pt`` into ``model`` with ``torch.load(weights_only=True)``: tensors only, no code.

    Raises:
        ConfigError: the file is not a state dict of this model (garbage bytes, another pickle, other keys or
            shapes); one line naming the file.
    """
    advice = "it is damaged or from another run: run the run again with --overwrite, or restore the file"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for bytes that are not a state dict
        raise ConfigError(f"{path} is not a model state dict ({type(error).__name__}: "
                          f"{_one_line(error, 120)}); {advice}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{path} is not a model state dict (it holds a {type(state).__name__}); {advice}")
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ConfigError(f"{path} is not a state dict of this run's model ({_one_line(error)}); {advice}") from None


def _strategy_options(config: Dict[str, Any]) -> Dict[str, Any]:
    options = dict(config["strategy"])
    options.pop("name")
    return options


def run(
    config: Dict[str, Any],
    *,
    resume: bool = False,
    overwrite: bool = False,
    stop_after: Optional[int] = None,
    plugins: Optional[List[Any]] = None,
    divergence_guard: bool = True,
) -> Dict[str, Any]:
    """Trains and evaluates one run; returns the ``results.json`` content.

    Args:
        config: a config; validated here (defaults filled in) unless it is a :class:`~.config.ValidConfig`
            nobody changed since (what ``load_config`` returns).
        resume: continue from ``checkpoint.pkl`` in the run folder (no finished experience is recomputed). The
            config must be the folder's ``config.yaml`` up to :data:`~.config.HARMLESS_KEYS`. Without it (and
            without ``overwrite``) a folder that holds a run is an error, so nothing is overwritten silently.
        overwrite: start afresh: delete the files a previous run wrote in the folder.
        stop_after: stop (``RunInterrupted``) after training and checkpointing this many experiences; for
            tests of resume and for splitting long runs over jobs.
        plugins: extra Avalanche plugins for the strategy.
        divergence_guard: stop with :class:`~avalanche_lpa.plugins.DivergenceError` at the first non-finite
            loss or parameter (the checkpoint of the last finished experience stays, no results are written).

    Raises:
        ConfigError: invalid config, device or output folder, a folder holding another run or used by a live
            one (:class:`~.folder.FolderLockedError`); raised before anything is written.
        DatasetNotFoundError: the dataset is missing and cannot be downloaded.
        CheckpointError: the checkpoint to resume from cannot be read.
        DivergenceError: training diverged.
    """
    config = validate(config)
    cfg = typed(config)  # the runner reads the typed objects; the mapping is what config.yaml and the loggers keep
    if resume and overwrite:
        raise ConfigError("--resume continues a run and --overwrite starts it afresh; pass only one of them")
    if strategy_entry(cfg.strategy["name"]).whole_stream:
        raise ConfigError(
            f"strategy {config['strategy']['name']!r} trains once on the whole stream, the runner experience by "
            "experience; for the joint upper bound run strategy naive with data.n_experiences: 1 (what compare's "
            "joint controls do)"
        )
    folder = output_dir(config)
    checkpoint = folder / "checkpoint.pkl"
    seed = cfg.seed
    # Under torchrun: join the process group, one device per process; otherwise a single-process no-op.
    info = init_distributed(device=resolve_device(cfg.device), seed=seed)
    device = info.device
    # Cheap checks first (no file is created): output folder, a live run in it, a run it already holds.
    check_output_folder(folder)
    check_not_locked(folder)
    check_no_symlinks(folder)
    if not overwrite:
        _check_existing_run(folder, config, resume)

    with each_deprecation_once():
        RNGManager.set_random_seeds(seed)
        # Rank 0 downloads / unpacks / checks the data first; the others only read it (concurrent downloads into
        # one folder would corrupt it; on several nodes without a shared filesystem the data must be on each).
        data_config = config["data"] if info.is_main else {**config["data"], "download": False}
        with DistributedHelper.main_process_first():
            benchmark = build_benchmark(data_config, seed)
        model = build_model(config, benchmark.n_classes)
        loggers: List[Any] = []  # filled once the folder exists: loggers create files
        guard = [DivergenceGuardPlugin(hint=_divergence_hint(cfg))] if divergence_guard else []
        try:
            strategy = build_strategy(
                cfg.strategy["name"], model, evaluator=_evaluator(loggers, cfg), device=device,
                num_classes=benchmark.n_classes, divergence_guard=divergence_guard,  # the guard is ours (its hint)
                plugins=list(plugins or []) + guard + [DistributedPlugin(seed=seed)],  # inactive in one process
                **_strategy_options(config),
            )
        except ValueError as error:  # an invalid combination of options (e.g. mixup with loss=ce)
            raise ConfigError(f"strategy: {error}") from None

        # Everything is checked: from here on the folder is created, locked (rank 0) and written.
        with RunFolderLock(folder) if info.is_main else contextlib.nullcontext():
            if info.is_main:
                check_no_symlinks(folder)  # again, now that no other run can plant one
                if overwrite:
                    clear_run_files(folder)
                else:
                    _check_existing_run(folder, config, resume)  # again, now that no other run can start
                    for stale in list(folder.glob("checkpoint.pkl.*.tmp")) + list(folder.glob(".*.tmp")):
                        stale.unlink()  # a write cut short by a kill; ours is the only run in the folder
            try:
                return _train(config, cfg, folder, checkpoint, benchmark, model, strategy, loggers, info, resume,
                              stop_after)
            finally:
                _close_loggers(loggers)


def _train(config, cfg, folder, checkpoint, benchmark, model, strategy, loggers, info, resume, stop_after):
    """The experience loop of :func:`run`, inside the folder lock (``cfg``: ``config`` as typed objects)."""
    device = info.device
    progress = {"finished_experiences": 0, "wall_time_s": 0.0, "train_iterations": []}
    position, rng = None, None
    if resume and checkpoint.exists():
        strategy, start = load_checkpoint(strategy, checkpoint, map_location=device)
        rng = RNGManager.__getstate__()  # the checkpoint's random state, before anything draws from it
        progress = _read_progress(folder, start)
        position = _check_checkpoint_config(checkpoint_plugin(strategy), config, folder)
    plugin = checkpoint_plugin(strategy)
    if plugin.run_config is None:  # a fresh run, or a checkpoint from before the plugin existed
        plugin.run_config = copy.deepcopy(config)
    fresh = not (folder / "config.yaml").is_file()
    if info.is_main and fresh:  # a resumed run keeps the config.yaml it was started with
        atomic_write_bytes(folder / "config.yaml", dump_config(config).encode())
        _write_json(folder / "classes.json", class_mapping(benchmark))
    loggers.extend(main_process_loggers(lambda: _loggers(config, folder)))
    # A resumed strategy carries the loggers it was saved with (pickled); log through this run's instead.
    strategy.evaluator.loggers = loggers
    start = progress["finished_experiences"]
    timer = {"started": time.perf_counter()}  # the experience's start, less the time spent before a resume
    phases = install_phase_timer(strategy)  # seconds per phase of each experience (plugins/phase_timer.py)
    progress.setdefault("phase_times_s", [])  # a run started before the timer existed

    def save_inside(strategy_, where: Dict[str, Any]) -> bool:
        """An intra-experience checkpoint (:class:`~.midway.EpochCheckpointPlugin`), with progress.json."""
        if not cfg.output.checkpoint:
            return False
        plugin.position = {**where, "elapsed_s": time.perf_counter() - timer["started"]}
        try:
            _flush_logs(strategy_)
            on_main(save_checkpoint_atomic, strategy_, checkpoint)
            inside = {k: plugin.position[k] for k in ("experience", "phase", "epoch", "iteration")}
            on_main(_write_json, folder / "progress.json", {**progress, "inside_experience": inside})
        finally:
            plugin.position = None
        return True

    stop = StopRequest()
    plugin.connect(every_epochs=cfg.checkpoint.every_epochs, every_minutes=cfg.checkpoint.every_minutes,
                   save=save_inside, stop=stop)
    workers = cfg.data.num_workers
    sizes = experience_sizes(benchmark.test_stream)
    try:
        with stop.handling():
            for experience in benchmark.train_stream[start:]:
                timer["started"] = time.perf_counter() - (position["elapsed_s"] if position else 0.0)
                phases.reset()
                if position is not None:  # a checkpoint taken inside this experience
                    continue_experience(strategy, plugin, position, rng, num_workers=workers)
                    position = None
                else:
                    strategy.train(experience, num_workers=workers)
                strategy.eval(benchmark.test_stream, num_workers=workers)
                progress["finished_experiences"] = experience.current_experience + 1
                progress["train_iterations"].append(strategy.clock.train_iterations)
                _flush_logs(strategy)  # the log must be at least as far as the checkpoint
                with phases.phase_times.phase("attention_maps"):
                    on_main(_write_attention_maps, strategy, folder)
                if cfg.output.checkpoint:
                    with phases.phase_times.phase("checkpoint"):
                        on_main(save_checkpoint_atomic, strategy, checkpoint)
                    plugin.saved()
                progress["phase_times_s"].append(phases.snapshot())  # before the wall time: never above it
                seconds = time.perf_counter() - timer["started"]
                progress["wall_time_s"] += seconds
                summary = experience_summary(strategy.evaluator.get_last_metrics(), progress["finished_experiences"],
                                             len(benchmark.train_stream), seconds, progress["wall_time_s"], sizes,
                                             phase_times=progress["phase_times_s"][-1])
                on_main(print, summary, flush=True)
                _log_line(strategy, summary)
                on_main(_write_json, folder / "progress.json", progress)
                if stop_after is not None and progress["finished_experiences"] >= stop_after:
                    raise RunInterrupted(f"stopped after experience {stop_after} as asked; resume with --resume")
                done = progress["finished_experiences"] == len(benchmark.train_stream)
                if not done and stop.requested():  # a signal during evaluation or the checkpoint
                    where = {"experience": progress["finished_experiences"], "phase": "end"}
                    raise Preempted(preempted_message(where, cfg.output.checkpoint))
    except DivergenceError as error:
        done = progress["finished_experiences"]
        kept = (
            f"{checkpoint} ({done} finished experience{'s' if done != 1 else ''}) is kept"
            if done and cfg.output.checkpoint else "no experience had finished, nothing was checkpointed"
        )
        message = f"{error}; {kept}, no results were written"
        _log_line(strategy, f"error: {message}")
        raise DivergenceError(message) from None
    except Preempted as stopped:
        _log_line(strategy, str(stopped))
        raise
    finally:
        _flush_logs(strategy)

    return _finish(config, cfg, folder, benchmark, model, strategy, info, progress)


def _read_progress(folder: Path, start: int) -> Dict[str, Any]:
    """``progress.json`` of a run being resumed, checked against the checkpoint's experience ``start``."""
    progress = read_run_json(folder / "progress.json")
    if not isinstance(progress, dict) or not isinstance(progress.get("finished_experiences"), int):
        raise ConfigError(f"{folder / 'progress.json'} is damaged (no finished_experiences); start the run "
                          "afresh with --overwrite")
    if progress["finished_experiences"] != start:
        raise ConfigError(
            f"{folder}: progress.json and checkpoint.pkl disagree; start the run afresh with --overwrite"
        )
    progress.pop("inside_experience", None)
    return progress


def _check_checkpoint_config(plugin, config: Dict[str, Any], folder: Path) -> Optional[Dict[str, Any]]:
    """The checkpoint's position; a config that differs from the one the checkpoint was made with is an error."""
    if plugin.run_config is not None:
        changed = config_differences(plugin.run_config, config, ignore=HARMLESS_KEYS, common_only=True)
        if changed:
            raise ConfigError(
                f"{folder / 'checkpoint.pkl'} was made with another config than {folder / 'config.yaml'} "
                f"({', '.join(changed)}); restore config.yaml, or start the run afresh with --overwrite"
            )
    return plugin.position


def _finish(config, cfg, folder, benchmark, model, strategy, info, progress) -> Dict[str, Any]:
    """Collects ``results.json`` of a run whose experiences are all trained and writes the outputs."""
    seed, device = cfg.seed, info.device
    results = collect_results(
        strategy,
        config=config,
        seed=seed,
        device=device,
        wall_time_s=progress["wall_time_s"],
        exp_sizes=experience_sizes(benchmark.test_stream),
        extra={
            "model": model_label(config),
            "params": sum(p.numel() for p in model.parameters()),
            # cumulative training iterations at the end of each experience (the joint control matches them)
            "train_iterations": progress["train_iterations"],
            # seconds per phase of each experience (timing.PHASES, exclusive) and its wall time incl. checkpoint
            "phase_times_s": progress["phase_times_s"],
            "classes": class_mapping(benchmark),
            "world_size": info.world_size,
        },
    )
    if results.get("locality"):
        # the reference of the locality figure: what attention spread evenly over the grid would give
        results["locality"]["uniform_distance"] = uniform_attention_distance(model)
    # After a resume the strategy holds unpickled copies of the network: its entry says where the trained one is.
    trained = strategy_entry(cfg.strategy["name"]).trained_model(strategy, model)
    on_main(_write_outputs, config, cfg, folder, results, trained)
    return results


def _write_attention_maps(strategy, folder: Path) -> None:
    """Writes the per-image attention record (``attention_maps.json``) kept by the evaluator so far."""
    metric = find_attention_maps_metric(strategy.evaluator.metrics)
    if metric is not None and metric.snapshots:
        # Compact separators, no indent: the images are long nested lists of small integers.
        text = json.dumps(metric.as_dict(), separators=(",", ":"))
        atomic_write_bytes(folder / "attention_maps.json", text.encode())


def _write_outputs(config: Dict[str, Any], cfg: RunConfig, folder: Path, results: Dict[str, Any],
                   model: torch.nn.Module) -> None:
    # results.json last: it marks a finished run, so a write that fails before it (full disk) never looks done.
    if cfg.output.save_model:
        _save_model(model, folder / "model.pt")
    if cfg.output.plots:
        plot_runs({run_name(config): results}, folder)
        if (folder / "attention_maps.json").is_file():
            plot_attention_maps(folder)
    write_results(folder / "results.json", results)


def evaluate_saved_run(
    folder: os.PathLike, *, device: Optional[str] = None, config: Optional[Dict[str, Any]] = None
) -> Dict[str, Any]:
    """Re-evaluates the final model of a finished run on the whole test stream (``--eval-only``).

    Rebuilds the benchmark and model from the run's ``config.yaml``, loads ``model.pt`` (the grown head is
    resized automatically) and writes ``eval_results.json`` next to the original results.

    Args:
        folder: the run folder.
        device: evaluate on this device instead of the run's.
        config: the caller's config (command line); it may differ from ``config.yaml`` only in
            :data:`~.config.HARMLESS_KEYS`, whose values it then supplies (device, data root, workers, ...).
    """
    folder = Path(folder)
    for name in ("config.yaml", "model.pt"):
        if not (folder / name).is_file():
            raise ConfigError(f"{folder} is not a finished run ({name} missing); point --output at a run folder")
    saved = read_run_config(folder)
    if config is not None:
        config = validate(config)
        _check_same_experiment(folder, config, "--eval-only")
    else:
        config = saved
    if device is not None:
        config["device"] = device
    torch_device = resolve_device(config["device"])
    check_not_locked(folder)
    with each_deprecation_once(), RunFolderLock(folder):
        RNGManager.set_random_seeds(config["seed"])
        benchmark = build_benchmark(config["data"], config["seed"])
        model = build_model(config, benchmark.n_classes)
        load_model_file(model, folder / "model.pt")
        evaluation = config["evaluation"]
        loggers = _loggers({**config, "evaluation": {**evaluation, "loggers": [
            name for name in evaluation["loggers"] if name not in ("text", "wandb")]}}, folder)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="No loggers specified")
            evaluator = cil_evaluator(loggers, probe_size=config["evaluation"]["locality_probe_size"],
                                      probe_seed=config["seed"])
        # Evaluation only needs Avalanche's eval loop; a plain Naive strategy provides it.
        options = _strategy_options(config)
        strategy = build_strategy("naive", model, evaluator=evaluator, device=torch_device,
                                  **{k: v for k, v in options.items() if k in ("train_mb_size", "eval_mb_size")})
        metrics = strategy.eval(benchmark.test_stream, num_workers=config["data"]["num_workers"])
        results = {
            "run": str(folder),
            "metrics": {k: (v if isinstance(v, (int, float)) else str(v)) for k, v in metrics.items()},
            "original_summary": read_results(folder / "results.json").get("summary")
            if (folder / "results.json").is_file() else None,
        }
        _write_json(folder / "eval_results.json", results)
    return results
