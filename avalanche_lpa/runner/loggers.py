"""The run's loggers and evaluator: the console, ``log.txt`` and the file loggers ``evaluation.loggers`` names
(TensorBoard, CSV, W&B), opened once the run folder exists and closed however the run ends."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, List, Sequence

from avalanche.logging import TensorboardLogger

from ..compat.avalanche_csv import AppendingCSVLogger
from ..compat.avalanche_wandb import CompatWandBLogger
from ..config.schema import RunConfig
from ..metrics import AttentionMapsPluginMetric, cil_evaluator
from ..training import trains_on_logits
from .console import ConsoleLogger, RunLog
from .folder import open_log, run_name

__all__ = ["close_loggers", "evaluator", "flush_logs", "log_line", "make_loggers"]


def make_loggers(config: RunConfig, folder: Path, experiences: int, header: Sequence[str] = (),
                 files: bool = True) -> List[Any]:
    """The console logger and, with ``files``, the file loggers of ``evaluation.loggers`` (``log.txt`` opened for
    appending, ``header`` written at its top)."""
    evaluation = config.evaluation
    # evaluation.progress_bar: bars on a terminal (never in a job's log file); false: none
    bars = None if evaluation.progress_bar else False
    loggers: List[Any] = [ConsoleLogger(experiences, bars=bars, verbose=evaluation.verbose)]
    for name in evaluation.loggers if files else ():
        if name == "text":
            loggers.append(RunLog(open_log(folder / "log.txt"), experiences, header))
        elif name == "tensorboard":
            loggers.append(TensorboardLogger(tb_log_dir=str(folder / "tb")))
        elif name == "csv":  # rows appended: a resumed run keeps those of its earlier experiences
            loggers.append(AppendingCSVLogger(str(folder / "csv")))
        elif name == "wandb":  # W&B's own settings apply (WANDB_MODE=offline, WANDB_PROJECT, ...)
            loggers.append(CompatWandBLogger(project_name="avalanche-lpa", run_name=run_name(config),
                                             dir=str(folder), config=config.as_dict(), save_code=False,
                                             path=str(folder / "wandb")))
    return loggers


def close_loggers(loggers: List[Any]) -> None:
    """Closes what the loggers hold open (files, TensorBoard writers, the W&B run)."""
    for logger in loggers:
        close = getattr(logger, "close", None)
        if callable(close):
            try:
                close()
            except Exception as error:  # a logger that cannot flush must not turn a finished run into a failure
                warnings.warn(f"closing {type(logger).__name__} failed: {error}")


def _log_files(strategy: Any) -> List[Any]:
    """The open files of the text loggers (``log.txt``), not the console's stream."""
    files = []
    for logger in getattr(getattr(strategy, "evaluator", None), "loggers", None) or []:
        handle = getattr(logger, "file", None)
        name = getattr(handle, "name", None)  # a console stream has "<stdout>" or, when captured, no name
        if handle is not None and isinstance(name, str) and not name.startswith("<") and not handle.closed:
            files.append(handle)
    return files


def flush_logs(strategy: Any) -> None:
    """Flushes the text loggers' files, so what was logged survives a kill (before every checkpoint)."""
    for handle in _log_files(strategy):
        handle.flush()


def log_line(strategy: Any, line: str) -> None:
    """Appends ``line`` to the text loggers' files (not to the console, where the caller reports it)."""
    for handle in _log_files(strategy):
        print(line, file=handle, flush=True)


def evaluator(loggers: List[Any], config: RunConfig, *, training: bool = True):
    """The run's evaluator over ``loggers`` (a list the runner fills once the run folder exists): accuracy,
    forgetting, locality, the per-image attention record and, with ``training``, the training metrics."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No loggers specified")
        images = config.evaluation.attention_maps if training else 0
        extra = [AttentionMapsPluginMetric(num_images=images, seed=config.seed)] if images else []
        return cil_evaluator(loggers, probe_size=config.evaluation.locality_probe_size, probe_seed=config.seed,
                             extra_metrics=extra, train_metrics=training,
                             train_accuracy=training and trains_on_logits(config.strategy.name))
