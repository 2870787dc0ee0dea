"""One class-incremental run from a validated config: train, evaluate, checkpoint, resume, report.

Everything a run produces lands in one folder (``output.dir``):

    config.yaml        the validated config (with defaults filled in)
    classes.json       class order (original ids in arrival order) and the original id -> label mapping
    log.txt            Avalanche's TextLogger output
    checkpoint.pkl     the strategy after the last finished experience (Avalanche checkpoint, atomic)
    progress.json      finished experiences and the wall time spent so far
    results.json       accuracy matrix, CIL summary, locality per experience/layer/head, versions, ...
    model.pt           the final model's state dict (loads into a freshly built model, head included)
    *.png              accuracy matrix, accuracy curve and locality figures
    tb/                TensorBoard logs (evaluation.tensorboard: true)
"""
from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import timm
import torch
from avalanche.distributed import DistributedHelper
from avalanche.logging import InteractiveLogger, TensorboardLogger, TextLogger
from avalanche.training.determinism.rng_manager import RNGManager

from ..distributed import DistributedPlugin, init_distributed, main_process_loggers, on_main
from ..metrics import cil_evaluator, experience_sizes
from ..models import model_name
from ..training import build_strategy, needs_fixed_head
from .checkpoint import load_checkpoint, save_checkpoint_atomic
from .config import ConfigError, dump_config, validate
from .data import build_benchmark, class_mapping
from .report import atomic_write_bytes, collect_results, plot_runs, read_results, write_results

__all__ = ["run", "run_name", "output_dir", "resolve_device", "build_model", "evaluate_saved_run", "RunInterrupted"]

class RunInterrupted(RuntimeError):
    """Raised by ``run(..., stop_after=k)`` after experience ``k`` was trained and checkpointed."""


def _fields(config: Dict[str, Any], **fixed: Any) -> Dict[str, Any]:
    fields = dict(model=config["model"]["attn_type"], strategy=config["strategy"]["name"], seed=config["seed"])
    fields.update(fixed)
    return {"name": config["name"].format(**fields), **fields}


def run_name(config: Dict[str, Any], **fixed: Any) -> str:
    """``name`` with ``{model}``, ``{strategy}`` and ``{seed}`` filled in (``fixed`` overrides a field)."""
    return _fields(config, **fixed)["name"]


def output_dir(config: Dict[str, Any], **fixed: Any) -> Path:
    """The run folder: ``output.dir`` with ``{name}``, ``{model}``, ``{strategy}`` and ``{seed}`` filled in."""
    return Path(config["output"]["dir"].format(**_fields(config, **fixed))).expanduser()


def resolve_device(name: str) -> torch.device:
    """``"auto"`` is CUDA when available, else CPU; a CUDA device on a machine without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for but CUDA is not available here; use --device cpu or auto")
    return device


def build_model(config: Dict[str, Any], num_classes: int) -> torch.nn.Module:
    """The model of a config through timm's registry (a fixed head of ``num_classes`` for the strategies that
    need one, :func:`~avalanche_lpa.training.needs_fixed_head`; ``model.head`` picks the growing head of the rest)."""
    overrides = dict(config["model"]["overrides"])
    if needs_fixed_head(config["strategy"]["name"]):
        overrides.setdefault("num_classes", num_classes)
    else:
        overrides["head_type"] = config["model"]["head"]
    model = timm.create_model(model_name(config["model"]["attn_type"], config["model"]["preset"]), **overrides)
    if config["model"]["compile"]:
        # In place (nn.Module.compile): state-dict keys, deepcopy (LwF) and checkpoints stay as they are.
        model.backbone.compile()
    return model


def _loggers(config: Dict[str, Any], folder: Path) -> List[Any]:
    evaluation = config["evaluation"]
    loggers: List[Any] = []
    if evaluation["progress_bar"]:
        loggers.append(InteractiveLogger())
    if evaluation["text_log"]:
        loggers.append(TextLogger(open(folder / "log.txt", "a")))
    if evaluation["tensorboard"]:
        loggers.append(TensorboardLogger(tb_log_dir=str(folder / "tb")))
    return loggers


def _write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, json.dumps(data, indent=2).encode())


def _save_model(model: torch.nn.Module, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _trained_model(strategy, model: torch.nn.Module) -> torch.nn.Module:
    """The trained network as the model class we built: after a resume the strategy holds unpickled copies.

    Strategies that take the model apart train its parts inside their own module: iCaRL (``TrainEvalModel``),
    FeatureReplay (``FeatureExtractorModel`` of our model, its head swapped for ``Identity``, and the head),
    SCR (``SCRModel`` of the backbone, a projection and class means), StreamingLDA (the backbone alone).
    Their trained backbone and, where they train one, head go back into our model; CoPE's head comes back
    without its L2 normalisation. Nearest-mean / LDA classifiers live in the strategy, not in ``model.pt``.
    """
    trained = strategy.model
    if isinstance(trained, type(model)):
        head = trained.classifier
        if isinstance(head, torch.nn.Sequential) and isinstance(head[0], torch.nn.Linear):  # CoPE's embedding
            trained.classifier = head[0]
        return trained
    features = getattr(trained, "feature_extractor", trained)
    if isinstance(features, type(model)):  # FeatureReplay's feature extractor is our model without its head
        model, features = features, features.backbone
    model.backbone = features
    head = getattr(trained, "train_classifier", None)
    # iCaRL's and FeatureReplay's trained head (SCR's train_classifier is a projection, not a head). For
    # FeatureReplay this puts the head back into the strategy's own module: the run is over by now.
    taken_off = isinstance(model.classifier, torch.nn.Identity)
    if head is not None and (isinstance(head, type(model.classifier)) or taken_off):
        model.classifier = head
    return model


def _strategy_options(config: Dict[str, Any]) -> Dict[str, Any]:
    options = dict(config["strategy"])
    options.pop("name")
    return options


def run(
    config: Dict[str, Any],
    *,
    resume: bool = False,
    stop_after: Optional[int] = None,
    plugins: Optional[List[Any]] = None,
) -> Dict[str, Any]:
    """Trains and evaluates one run; returns the ``results.json`` content.

    Args:
        config: a config (validated again here, defaults filled in).
        resume: continue from ``checkpoint.pkl`` in the run folder (no finished experience is recomputed).
            Without it an existing checkpoint is an error, so nothing already written is overwritten silently.
        stop_after: stop (``RunInterrupted``) after training and checkpointing this many experiences; for
            tests of resume and for splitting long runs over jobs.
        plugins: extra Avalanche plugins for the strategy.
    """
    config = validate(config)
    if config["strategy"]["name"] == "joint":
        raise ConfigError(
            "strategy 'joint' trains once on the whole stream, the runner experience by experience; for the joint "
            "upper bound run strategy naive with data.n_experiences: 1 (what compare's joint controls do)"
        )
    folder = output_dir(config)
    checkpoint = folder / "checkpoint.pkl"
    if checkpoint.exists() and not resume:
        raise ConfigError(
            f"{folder} already holds a run (checkpoint.pkl); pass --resume to continue it or choose another --output"
        )
    seed = config["seed"]
    # Under torchrun: join the process group, one device per process; otherwise a single-process no-op.
    info = init_distributed(device=resolve_device(config["device"]), seed=seed)
    device = info.device
    RNGManager.set_random_seeds(seed)
    with DistributedHelper.main_process_first():  # rank 0 unpacks / checks the data first
        benchmark = build_benchmark(config["data"], seed)  # fails early (missing data) before anything is written
    if info.is_main:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(folder / "config.yaml", dump_config(config).encode())
        _write_json(folder / "classes.json", class_mapping(benchmark))
    model = build_model(config, benchmark.n_classes)

    evaluator = cil_evaluator(
        main_process_loggers(lambda: _loggers(config, folder)),
        probe_size=config["evaluation"]["locality_probe_size"],
        probe_seed=seed,
    )
    try:
        strategy = build_strategy(
            config["strategy"]["name"], model, evaluator=evaluator, device=device, num_classes=benchmark.n_classes,
            plugins=list(plugins or []) + [DistributedPlugin(seed=seed)],  # inactive in a single process
            **_strategy_options(config),
        )
    except ValueError as error:  # an invalid combination of options (e.g. mixup with loss=ce)
        raise ConfigError(f"strategy: {error}") from None

    progress = {"finished_experiences": 0, "wall_time_s": 0.0, "train_iterations": []}
    if resume and checkpoint.exists():
        strategy, start = load_checkpoint(strategy, checkpoint, map_location=device)
        progress = json.loads((folder / "progress.json").read_text())
        if progress["finished_experiences"] != start:
            raise ConfigError(f"{folder}: progress.json and checkpoint.pkl disagree; delete both to start over")
    start = progress["finished_experiences"]

    workers = config["data"]["num_workers"]
    for experience in benchmark.train_stream[start:]:
        started = time.perf_counter()
        strategy.train(experience, num_workers=workers)
        strategy.eval(benchmark.test_stream, num_workers=workers)
        progress["finished_experiences"] = experience.current_experience + 1
        progress["train_iterations"].append(strategy.clock.train_iterations)
        progress["wall_time_s"] += time.perf_counter() - started
        if config["output"]["checkpoint"]:
            on_main(save_checkpoint_atomic, strategy, checkpoint)
        on_main(_write_json, folder / "progress.json", progress)
        if stop_after is not None and progress["finished_experiences"] >= stop_after:
            raise RunInterrupted(f"stopped after experience {stop_after} as asked; resume with --resume")

    results = collect_results(
        strategy,
        config=config,
        seed=seed,
        device=device,
        wall_time_s=progress["wall_time_s"],
        exp_sizes=experience_sizes(benchmark.test_stream),
        extra={
            "model": model_name(config["model"]["attn_type"], config["model"]["preset"]),
            "params": sum(p.numel() for p in model.parameters()),
            # cumulative training iterations at the end of each experience (the joint control matches them)
            "train_iterations": progress["train_iterations"],
            "classes": class_mapping(benchmark),
            "world_size": info.world_size,
        },
    )
    on_main(_write_outputs, config, folder, results, _trained_model(strategy, model))
    return results


def _write_outputs(config: Dict[str, Any], folder: Path, results: Dict[str, Any], model: torch.nn.Module) -> None:
    write_results(folder / "results.json", results)
    if config["output"]["save_model"]:
        _save_model(model, folder / "model.pt")
    if config["output"]["plots"]:
        plot_runs({run_name(config): results}, folder)


def evaluate_saved_run(folder: os.PathLike, *, device: Optional[str] = None) -> Dict[str, Any]:
    """Re-evaluates the final model of a finished run on the whole test stream (``--eval-only``).

    Rebuilds the benchmark and model from the run's ``config.yaml``, loads ``model.pt`` (the grown head is
    resized automatically) and writes ``eval_results.json`` next to the original results.
    """
    import yaml

    folder = Path(folder)
    for name in ("config.yaml", "model.pt"):
        if not (folder / name).is_file():
            raise ConfigError(f"{folder} is not a finished run ({name} missing); point --output at a run folder")
    config = validate(yaml.safe_load((folder / "config.yaml").read_text()))
    if device is not None:
        config["device"] = device
    RNGManager.set_random_seeds(config["seed"])
    benchmark = build_benchmark(config["data"], config["seed"])
    model = build_model(config, benchmark.n_classes)
    model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu", weights_only=True))
    evaluator = cil_evaluator(_loggers({**config, "evaluation": {**config["evaluation"], "text_log": False}}, folder),
                              probe_size=config["evaluation"]["locality_probe_size"], probe_seed=config["seed"])
    # Evaluation only needs Avalanche's eval loop; a plain Naive strategy provides it.
    options = _strategy_options(config)
    strategy = build_strategy("naive", model, evaluator=evaluator, device=resolve_device(config["device"]),
                              **{k: v for k, v in options.items() if k in ("train_mb_size", "eval_mb_size")})
    metrics = strategy.eval(benchmark.test_stream, num_workers=config["data"]["num_workers"])
    results = {
        "run": str(folder),
        "metrics": {k: (v if isinstance(v, (int, float)) else str(v)) for k, v in metrics.items()},
        "original_summary": read_results(folder / "results.json")["summary"] if (folder / "results.json").is_file() else None,
    }
    _write_json(folder / "eval_results.json", results)
    return results
