"""Running experiments: a :class:`Run` of a config in its folder (train, resume, preemption, evaluation of a
finished run), comparisons of models and strategies over seeds with joint-training controls, and finished runs
loaded back.

    from avalanche_lpa.config import load_config
    from avalanche_lpa.runner import Run
    results = Run(load_config("fashion_mnist"), resume=True).train()
"""
from .checkpoint import CheckpointError
from .compare import compare, comparison_cells, joint_config, run_joint
from .folder import FolderLockedError, output_dir, run_name
from .load import FinishedRun, load_run
from .midway import PREEMPTED_EXIT, Preempted
from .model import build_model, load_model_file, model_label, resolve_device
from .resume import read_run_config
from .evaluate import evaluate_saved_run
from .runs import Run, RunInterrupted, run

__all__ = [
    "CheckpointError",
    "FinishedRun",
    "FolderLockedError",
    "PREEMPTED_EXIT",
    "Preempted",
    "Run",
    "RunInterrupted",
    "build_model",
    "compare",
    "comparison_cells",
    "evaluate_saved_run",
    "joint_config",
    "load_model_file",
    "load_run",
    "model_label",
    "output_dir",
    "read_run_config",
    "resolve_device",
    "run",
    "run_joint",
    "run_name",
]
