"""Load a finished run back: the trained model built from the run's own config, with its config and results.

Reads only ``config.yaml``, ``classes.json``, ``results.json`` and ``model.pt`` (with ``weights_only=True``):
never ``checkpoint.pkl``, a pickle that can run code. No dataset is needed.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import torch

from .config import ConfigError
from .report import read_results
from .run import build_model, read_run_config

__all__ = ["FinishedRun", "load_run"]


@dataclass
class FinishedRun:
    """What :func:`load_run` returns.

    Attributes:
        model: the trained network in eval mode (the class the run built: LocalityViT, DyTox or a timm model
            under our heads); ``model(images)`` gives logits over every class in ``class_order``'s label order.
        config: the run's validated config.
        results: the run's ``results.json`` (``None`` for a run that has not finished writing it).
        class_order: original class ids in the order the run learned them; label ``i`` is ``class_order[i]``.
        folder: the run folder.
    """

    model: torch.nn.Module
    config: Dict[str, Any]
    results: Optional[Dict[str, Any]]
    class_order: List[int] = field(default_factory=list)
    folder: Path = Path(".")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"{path} cannot be read as JSON ({type(error).__name__}: {error}); the run folder is "
                          f"damaged") from None


def load_run(folder: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu") -> FinishedRun:
    """The trained model of a finished run, built from the run's own config (whatever today's defaults are).

    Args:
        folder: the run folder (``output.dir`` of the run).
        device: where to put the model.

    Raises:
        ConfigError: the folder is not a finished run, or one of its files is damaged (one line, naming it).
    """
    folder = Path(folder)
    for name in ("config.yaml", "classes.json", "model.pt"):
        if not (folder / name).is_file():
            raise ConfigError(f"{folder} is not a finished run ({name} missing); pass the folder a run wrote")
    config = read_run_config(folder)
    class_order = [int(c) for c in _read_json(folder / "classes.json")["class_order"]]
    model = build_model(config, len(class_order))
    try:
        state = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as error:  # torch's unpickling errors are many and multi-line: one line that names the file
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"{folder / 'model.pt'} is not a state dict of this run's model ({first})") from None
    results_path = folder / "results.json"
    results = read_results(results_path) if results_path.is_file() else None
    return FinishedRun(model=model.to(device).eval(), config=config, results=results, class_order=class_order,
                       folder=folder)
