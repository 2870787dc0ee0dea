"""``--eval-only``: the final model of a finished run evaluated again on the whole test stream, in its folder.

The benchmark and the model are rebuilt from the run's config, ``model.pt`` is loaded into the model (the grown
head resized) and ``eval_results.json`` is written beside the run's own results; nothing else in the folder
changes (no ``log.txt`` lines, no CSV rows, no W&B run: those belong to the training run).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

from avalanche.training.determinism.rng_manager import RNGManager

from ..compat.avalanche_warnings import each_deprecation_once
from ..config.load import updated
from ..config.schema import RunConfig
from ..config.validation import validate
from ..errors import ConfigError
from ..report import read_results
from ..training import build_strategy
from .benchmark import build_benchmark
from .folder import RunFolderLock, check_not_locked, output_dir
from .loggers import close_loggers, evaluator, make_loggers
from .model import build_model, load_model_file, model_input, resolve_device
from .outputs import write_json
from .resume import check_same_experiment, read_run_config

__all__ = ["evaluate_saved_run"]

#: Loggers of the training run that a re-evaluation leaves alone (the console and TensorBoard's new event files
#: are its own).
_TRAINING_LOGGERS = ("text", "csv", "wandb")


def evaluate_saved_run(folder: Any, *, device: Optional[str] = None, config: Any = None) -> Dict[str, Any]:
    """Re-evaluates the final model of the finished run in ``folder`` (``--eval-only``).

    Args:
        folder: the run folder.
        device: evaluate on this device instead of the run's.
        config: the caller's config (command line); it may differ from ``config.yaml`` only in
            :data:`~avalanche_lpa.config.HARMLESS_KEYS`, whose values it then supplies (device, data root, workers, ...).

    Returns:
        ``{"run", "metrics", "original_summary"}``: the folder, every metric of the evaluation, and the summary
        of the run's own ``results.json``.

    Raises:
        ConfigError: the folder holds no finished run, its config differs in the experiment, or another process
            uses it (one line).
    """
    folder = Path(folder)
    for name in ("config.yaml", "model.pt"):
        if not (folder / name).is_file():
            raise ConfigError(f"{folder} is not a finished run ({name} missing); point --output at a run folder")
    saved = read_run_config(folder)  # the folder's own config is valid
    config = validate(saved if config is None else config)
    check_same_experiment(folder, config, "--eval-only")
    if output_dir(config) != folder:  # the folder was moved, or named by the caller: evaluate it where it is
        config = updated(config, {"output.dir": str(folder)})
    if device is not None:
        config = updated(config, {"device": device})
    torch_device = resolve_device(config.device)
    check_not_locked(folder)
    with each_deprecation_once(), RunFolderLock(folder):
        metrics = _evaluate(config, folder, torch_device)
        original = folder / "results.json"
        results = {
            "run": str(folder),
            "metrics": {k: (v if isinstance(v, (int, float)) else str(v)) for k, v in metrics.items()},
            "original_summary": read_results(original).get("summary") if original.is_file() else None,
        }
        write_json(folder / "eval_results.json", results)
    return results


def _evaluate(config: RunConfig, folder: Path, device: Any) -> Dict[str, Any]:
    """Every metric of Avalanche's eval loop over the test stream, for the run's saved model."""
    RNGManager.set_random_seeds(config.seed)
    benchmark = build_benchmark(config.data, config.seed, model_input=model_input(config))
    model = build_model(config, benchmark.n_classes)
    load_model_file(model, folder / "model.pt")
    kept = [name for name in config.evaluation.loggers if name not in _TRAINING_LOGGERS]
    loggers = make_loggers(updated(config, {"evaluation.loggers": kept}), folder, len(benchmark.train_stream))
    try:
        # Evaluation only needs Avalanche's eval loop; a plain Naive strategy provides it.
        strategy = build_strategy(
            "naive", model, evaluator=evaluator(loggers, config, training=False), device=device,
            train_mb_size=config.strategy["train_mb_size"], eval_mb_size=config.strategy["eval_mb_size"],
        )
        return strategy.eval(benchmark.test_stream, num_workers=config.data.num_workers)
    finally:
        close_loggers(loggers)
