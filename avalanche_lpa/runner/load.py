"""Load a finished run back: the trained model built from the run's own config, with its config and results.

Reads only ``config.yaml``, ``classes.json``, ``results.json`` and ``model.pt`` (with ``weights_only=True``):
never ``checkpoint.pkl``, a pickle that can run code. No dataset is needed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import torch

from ..config.load import updated
from ..config.schema import RunConfig
from ..errors import ConfigError, one_line
from ..files import read_json
from ..report import read_results
from .model import build_model, load_model_file
from .resume import read_run_config

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
    config: RunConfig
    results: Optional[Dict[str, Any]]
    class_order: List[int] = field(default_factory=list)
    folder: Path = Path(".")


def _without_measuring(config: RunConfig, shape: Any) -> RunConfig:
    """For an image folder whose size the run measured (``data.folder.img_size: null``), the config with the size
    ``classes.json`` recorded, so the model is built without reading the images (which may be gone or changed)."""
    if config.data.dataset != "folder" or config.data.folder.img_size is not None or not shape:
        return config
    return updated(config, {"data.folder.img_size": int(shape[-1])})


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
    classes = read_json(folder / "classes.json")
    try:
        class_order = [int(c) for c in classes["class_order"]]
    except (TypeError, KeyError, ValueError) as error:
        raise ConfigError(f"{folder / 'classes.json'} is damaged (no class order: {one_line(error, kind=True)}); "
                          "the run folder is damaged") from None
    model = build_model(_without_measuring(config, classes.get("image_shape")), len(class_order))
    load_model_file(model, folder / "model.pt")
    results_path = folder / "results.json"
    results = read_results(results_path) if results_path.is_file() else None
    return FinishedRun(model=model.to(device).eval(), config=config, results=results, class_order=class_order,
                       folder=folder)
