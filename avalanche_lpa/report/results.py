"""``results.json``: what a finished run measured, assembled from a strategy's metric history, written atomically
and read back.

:func:`collect_results` assembles the content (config, versions, seed, device, accuracy matrix, CIL summary,
locality per experience/layer/head, wall time); :func:`write_results` serialises it completely before it moves it
over the target (``os.replace``), so a crash or a value JSON cannot hold never leaves a half-written file.
"""
from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import math
import os
import platform
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import torch

from ..errors import ConfigError
from ..files import atomic_write_bytes, read_json
from ..metrics import locality_history, summarize
from ..metrics.history import metric_history, values_by_point
from ..version import __version__

__all__ = ["RESULTS_SCHEMA", "collect_results", "package_versions", "read_results", "to_jsonable", "write_results"]

PathLike = Union[str, os.PathLike]

#: Version of the ``results.json`` layout; bump it when keys change meaning.
RESULTS_SCHEMA = 1


def package_versions() -> Dict[str, Optional[str]]:
    """Versions of Python and of the packages that decide the numbers (``None`` if not installed)."""
    versions: Dict[str, Optional[str]] = {"python": platform.python_version()}
    for dist in ("torch", "torchvision", "avalanche-lib", "timm", "numpy"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    # The running source tree, which need not be the installed distribution.
    versions["avalanche_lpa"] = __version__
    return versions


def to_jsonable(value: Any) -> Any:
    """Converts tensors, numpy values, paths, devices and dataclasses to JSON types; ``nan``/``inf`` to ``None``.

    Raises:
        TypeError: for anything else that JSON cannot hold.
    """
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None  # strict JSON has no NaN
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, torch.Tensor):
        return to_jsonable(value.detach().cpu().tolist())
    if isinstance(value, (os.PathLike, torch.device)):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value))
    if hasattr(value, "tolist") and type(value).__module__.startswith("numpy"):
        return to_jsonable(value.tolist())
    raise TypeError(f"cannot write a {type(value).__name__} to results.json: {value!r}")


def collect_results(
    source: Any,
    *,
    config: Optional[Mapping[str, Any]] = None,
    seed: Optional[int] = None,
    device: Any = None,
    wall_time_s: Optional[float] = None,
    stream: str = "test",
    exp_sizes: Optional[Sequence[int]] = None,
    points: Optional[Sequence[int]] = None,
    extra: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """Assembles the ``results.json`` content of a run.

    Args:
        source: the strategy, its ``EvaluationPlugin`` or ``get_all_metrics()``.
        config: the run's configuration.
        seed: the run's seed.
        device: the device it ran on.
        wall_time_s: wall-clock duration in seconds.
        stream: the evaluated stream's name.
        exp_sizes: test samples per experience (weights of the seen-classes accuracy).
        points: the eval points to keep, one per experience (see ``metrics.accuracy_matrix``).
        extra: more top-level entries.
    """
    history = metric_history(source)
    summary = summarize(history, stream=stream, exp_sizes=exp_sizes, points=points).as_dict()
    has_locality = bool(values_by_point(history, "Locality_Stream", stream))
    results: Dict[str, Any] = {
        "schema": RESULTS_SCHEMA,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": config.as_dict() if hasattr(config, "as_dict") else dict(config or {}),
        "seed": seed,
        "device": None if device is None else str(device),
        "versions": package_versions(),
        "wall_time_s": wall_time_s,
        "accuracy_matrix": summary.pop("accuracy_matrix"),
        "summary": summary,
        "locality": locality_history(history, stream, points) if has_locality else None,
    }
    results.update(extra or {})
    return results


def write_results(path: PathLike, results: Mapping[str, Any]) -> Path:
    """Writes ``results`` as JSON, atomically: on any error the previous file stays as it was."""
    # Serialize completely before touching the disk, so a bad value cannot truncate anything.
    text = json.dumps(to_jsonable(results), indent=2, allow_nan=False)
    return atomic_write_bytes(path, (text + "\n").encode("utf-8"))


def read_results(path: PathLike) -> Dict[str, Any]:
    """Reads a ``results.json`` written by :func:`write_results`.

    Raises:
        ConfigError: the file does not parse or is not a results mapping (one line).
    """
    results = read_json(path)
    if not isinstance(results, dict):
        raise ConfigError(f"{path} is damaged (not a results mapping); run the run again with --overwrite")
    return results
