"""What a finished run writes: ``results.json`` (from the trained network and the evaluator's history),
``model.pt``, the figures and the per-image attention record; ``results.json`` last, so that it marks a run whose
outputs are all complete."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch

from ..config.schema import RunConfig
from ..files import atomic_write_bytes
from ..metrics import find_attention_maps_metric, uniform_attention_distance
from ..plugins import MemoryCensusPlugin
from ..report import collect_results, plot_attention_maps, plot_runs, write_results
from .card import run_facts
from .folder import run_name
from .model import model_label, parameter_count

__all__ = ["memory_census", "run_results", "save_model", "write_attention_maps", "write_json", "write_outputs"]


def write_json(path: Path, data: Any) -> None:
    """``data`` as indented JSON, written atomically."""
    atomic_write_bytes(path, json.dumps(data, indent=2).encode())


def save_model(model: torch.nn.Module, path: Path) -> None:
    """The network's state dict (``model.pt``), written atomically."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    atomic_write_bytes(path, buffer.getvalue())


def write_attention_maps(strategy: Any, folder: Path) -> None:
    """Writes the per-image attention record (``attention_maps.json``) kept by the evaluator so far."""
    metric = find_attention_maps_metric(strategy.evaluator.metrics)
    if metric is not None and metric.snapshots:
        # Compact separators, no indent: the images are long nested lists of small integers.
        text = json.dumps(metric.as_dict(), separators=(",", ":"))
        atomic_write_bytes(folder / "attention_maps.json", text.encode())


def memory_census(strategy: Any) -> Optional[int]:
    """Distinct exemplars in the memories of all processes after the last experience (``None``: no memory)."""
    counts = _census(strategy)
    return counts[-1] if counts else None


def _census(strategy: Any) -> Optional[List[int]]:
    """Distinct exemplars in the memories of all processes after each experience (``None``: no memory counted)."""
    census = next((p for p in strategy.plugins if isinstance(p, MemoryCensusPlugin)), None)
    return list(census.counts) if census is not None and census.counts else None


def run_results(config: RunConfig, strategy: Any, network: torch.nn.Module, *, progress: Mapping[str, Any],
                device: Any, world_size: int, test_sizes: Sequence[int], classes: Mapping[str, Any]) -> Dict[str, Any]:
    """The ``results.json`` content of a run whose experiences are all trained.

    Every number about the network comes from ``network``, the trained one (a resumed strategy holds unpickled
    copies of the model the run built; its registry entry says where the trained network is).
    """
    results = collect_results(
        strategy,
        config=config,
        seed=config.seed,
        device=device,
        wall_time_s=progress["wall_time_s"],
        exp_sizes=test_sizes,
        extra={
            "model": model_label(config),
            "params": parameter_count(network),
            # cumulative training iterations at the end of each experience (the joint control matches them)
            "train_iterations": progress["train_iterations"],
            # seconds per phase of each experience (timing.PHASES, exclusive) and its wall time incl. checkpoint
            "phase_times_s": progress["phase_times_s"],
            "classes": dict(classes),
            "world_size": world_size,
            # processes, batch per process and in all, memory and scope, precision, pretrained backbone
            "run_card": {**run_facts(config, world_size), "distinct_exemplars": _census(strategy)},
        },
    )
    if results.get("locality"):
        # the reference of the locality figure: what attention spread evenly over the grid would give
        results["locality"]["uniform_distance"] = uniform_attention_distance(network)
    return results


def write_outputs(config: RunConfig, folder: Path, results: Mapping[str, Any], network: torch.nn.Module) -> None:
    """``model.pt``, the figures, then ``results.json`` (last: a write that fails before it, a full disk, never
    looks like a finished run)."""
    if config.output.save_model:
        save_model(network, folder / "model.pt")
    if config.output.plots:
        plot_runs({run_name(config): results}, folder)
        if (folder / "attention_maps.json").is_file():
            plot_attention_maps(folder)
    write_results(folder / "results.json", results)
