"""LPA vs GPSA vs ViT (and any strategies) over seeds, with a joint-training control per model.

Attention drifts with training time alone, so every model also gets a *joint* run: all classes in one
experience, trained for the same number of iterations as its incremental run, with the locality probed at
the iterations where the incremental run finished each experience. Locality degradation caused by
incremental learning is the difference between the two curves.

``compare(...)`` writes ``comparison.md`` (mean +- std over seeds), ``comparison.json`` and the accuracy and
locality figures into the output folder; each run keeps its own folder below it.
"""
from __future__ import annotations

import copy
import json
import math
import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..files import atomic_write_bytes
from ..metrics import LocalityAtIterations, draw_probe
from .config import switch_strategy, validate
from .data import build_benchmark
from .report import (
    JOINT_SUFFIX,
    plot_accuracy_curves,
    plot_attention_comparison,
    plot_locality,
    read_results,
    to_jsonable,
    write_results,
)
from .run import output_dir, run, run_name
from .timm_model import model_slug, select_model

__all__ = ["compare", "joint_config", "run_joint", "comparison_table"]


def joint_config(config: Dict[str, Any], total_iterations: int, train_size: int) -> Dict[str, Any]:
    """The joint-training control of ``config``: one experience, as many iterations as the incremental run."""
    joint = copy.deepcopy(config)
    joint["name"] = f"{config['name']}-joint"
    joint["data"]["n_experiences"] = 1
    per_epoch = math.ceil(train_size / joint["strategy"]["train_mb_size"])
    epochs = max(1, math.ceil(total_iterations / per_epoch))
    joint["strategy"]["train_epochs"] = epochs
    if "epochs_first" in joint["strategy"]:
        joint["strategy"]["epochs_first"] = epochs
    joint["output"]["dir"] = str(Path(config["output"]["dir"]).with_name(Path(config["output"]["dir"]).name + "-joint"))
    return joint


def run_joint(config: Dict[str, Any], incremental: Dict[str, Any], *, overwrite: bool = False) -> Dict[str, Any]:
    """Runs the joint control of an incremental run; returns its results with per-milestone locality.

    ``overwrite`` restarts a control left unfinished in its folder: its milestone measurements cannot be
    resumed from a checkpoint, and it has a single experience anyway.
    """
    config = validate(config)
    milestones = incremental["train_iterations"]
    benchmark = build_benchmark({**config["data"], "n_experiences": 1}, config["seed"])
    probe, _ = draw_probe(benchmark.test_stream, config["evaluation"]["locality_probe_size"], config["seed"])
    joint = joint_config(config, milestones[-1], len(benchmark.train_stream[0].dataset))
    tracker = LocalityAtIterations(probe, milestones)
    results = run(joint, plugins=[tracker], overwrite=overwrite)
    results["locality_at_milestones"] = {
        "iterations": milestones,
        "layers": [tracker.layers.get(m) for m in milestones],
    }
    write_results(Path(joint["output"]["dir"]).expanduser() / "results.json", results)
    return results


def _mean_std(values: Sequence[Optional[float]]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    mean = statistics.fmean(values)
    if len(values) == 1:  # one seed: no spread to report
        return f"{mean:.3f}"
    return f"{mean:.3f} ± {statistics.stdev(values):.3f}"


def _first_last_locality(results: Dict[str, Any]) -> tuple:
    locality = results.get("locality") or {}
    mean = locality.get("mean") or []
    return (mean[0], mean[-1]) if mean else (None, None)


def _joint_first_last(results: Dict[str, Any]) -> tuple:
    layers = (results.get("locality_at_milestones") or {}).get("layers") or []
    means = [statistics.fmean(step) for step in layers if step]
    return (means[0], means[-1]) if means else (None, None)


def comparison_table(groups: Dict[str, Dict[str, List[Dict[str, Any]]]]) -> str:
    """Markdown table: one row per model/strategy, mean ± std over seeds.

    Args:
        groups: ``{label: {"incremental": [results per seed], "joint": [results per seed]}}``.
    """
    header = (
        "| run | seeds | params | avg incr. acc | last acc | forgetting (max) | locality after exp 1 | "
        "locality after last exp | joint acc | joint locality (same iterations) | wall time (s) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for label, runs in groups.items():
        inc = runs["incremental"]
        first_last = [_first_last_locality(r) for r in inc]
        joint_runs = runs.get("joint", [])
        joint = [_joint_first_last(r) for r in joint_runs]
        joint_acc = _mean_std([r["summary"]["last_accuracy"] for r in joint_runs]) if joint_runs else "–"
        joint_cell = (
            f"{_mean_std([j[0] for j in joint])} → {_mean_std([j[1] for j in joint])}" if joint else "–"
        )
        if joint_runs and len(joint_runs) != len(inc):  # controls run for fewer seeds than the incremental runs
            seeds = f" ({len(joint_runs)} seed{'s' if len(joint_runs) > 1 else ''})"
            joint_acc, joint_cell = joint_acc + seeds, joint_cell + seeds
        rows.append(
            f"| {label} | {len(inc)} | {inc[0].get('params', 0) / 1e6:.2f} M "
            f"| {_mean_std([r['summary']['avg_incremental_accuracy'] for r in inc])} "
            f"| {_mean_std([r['summary']['last_accuracy'] for r in inc])} "
            f"| {_mean_std([r['summary']['avg_forgetting_max'] for r in inc])} "
            f"| {_mean_std([f for f, _ in first_last])} | {_mean_std([l for _, l in first_last])} "
            f"| {joint_acc} | {joint_cell} | {_mean_std([r.get('wall_time_s') for r in inc])} |"
        )
    return header + "\n".join(rows) + "\n"


def compare(
    config: Dict[str, Any],
    *,
    models: Sequence[str] = ("lpa", "gpsa", "mhsa"),
    strategies: Optional[Sequence[str]] = None,
    seeds: Sequence[int] = (1993,),
    joint: bool = True,
    resume: bool = False,
    overwrite: bool = False,
) -> Dict[str, Any]:
    """Runs every model x strategy x seed (plus joint controls) and writes the comparison files.

    Args:
        config: the base config; ``output.dir`` becomes the comparison folder.
        models: attention types and ``timm:<name>`` specs to compare.
        strategies: strategy names (default: the config's strategy).
        seeds: seeds; mean ± std is over them.
        joint: also run the joint-training control of each incremental run.
        resume: reuse finished runs (their ``results.json``, joint controls included) and resume interrupted ones.
        overwrite: start every run afresh, deleting what earlier runs wrote in their folders.
    """
    config = validate(config)
    root = output_dir(config, model="all", strategy="all", seed="all")
    strategies = list(strategies or [config["strategy"]["name"]])
    groups: Dict[str, Dict[str, List[Dict[str, Any]]]] = {}
    for strategy in strategies:
        for model in models:
            label = f"{model} / {strategy}"
            groups[label] = {"incremental": [], "joint": []}
            for seed in seeds:
                run_cfg = select_model(config, model)
                slug = model_slug(run_cfg)
                if strategy != config["strategy"]["name"]:
                    run_cfg["strategy"] = switch_strategy(config["strategy"], strategy)
                run_cfg["seed"] = seed
                run_cfg["name"] = f"{run_name(config, model=slug, strategy=strategy, seed=seed)}-{strategy}-s{seed}"
                run_cfg["output"]["dir"] = str(root / f"{slug}-{strategy}-s{seed}")
                done = Path(run_cfg["output"]["dir"]) / "results.json"
                if resume and done.is_file():
                    results = read_results(done)
                else:
                    results = run(run_cfg, resume=resume, overwrite=overwrite)
                groups[label]["incremental"].append(results)
                joint_done = Path(run_cfg["output"]["dir"] + "-joint") / "results.json"
                if resume and joint_done.is_file():  # a finished control is reused, also with joint=False
                    groups[label]["joint"].append(read_results(joint_done))
                elif joint:
                    groups[label]["joint"].append(run_joint(run_cfg, results, overwrite=resume or overwrite))
    table = comparison_table(groups)
    atomic_write_bytes(root / "comparison.md", table.encode())
    atomic_write_bytes(root / "comparison.json", json.dumps(to_jsonable(groups), indent=1).encode())
    _figures(groups, root)
    return {"table": table, "groups": groups, "folder": str(root)}


def _figures(groups: Dict[str, Dict[str, List[Dict[str, Any]]]], root: Path) -> None:
    """Accuracy and locality figures over every seed (mean ± std), the joint controls dashed."""
    first = {label: runs["incremental"][0] for label, runs in groups.items()}
    seeds = max(len(runs["incremental"]) for runs in groups.values())
    over = f"mean ± std over {seeds} seeds" if seeds > 1 else "one seed"
    plot_accuracy_curves({label: [r["summary"]["seen_accuracies"] for r in runs["incremental"]]
                          for label, runs in groups.items()}, root / "accuracy_curves.png",
                         title=f"Accuracy on all classes seen so far\n({over})")
    locality = {label: [r["locality"]["layers"] for r in runs["incremental"] if (r.get("locality") or {}).get("layers")]
                for label, runs in groups.items()}
    locality = {label: series for label, series in locality.items() if series}
    for label, runs in groups.items():
        joint = [j["locality_at_milestones"]["layers"] for j in runs["joint"] if j.get("locality_at_milestones")]
        joint = [layers for layers in joint if all(step is not None for step in layers)]
        if joint:
            locality[f"{label}{JOINT_SUFFIX}"] = joint
    if locality:
        references = {r["locality"].get("uniform_distance") for r in first.values() if r.get("locality")}
        plot_locality(locality, root / "locality.png", title=f"Mean attention distance per layer ({over})",
                      reference=references.pop() if len(references) == 1 else None)
    # The per-image attention of every model side by side (first seed; the probe images are the same).
    maps = {label: output_dir(r["config"]) / "attention_maps.json" for label, r in first.items()}
    maps = {label: path for label, path in maps.items() if path.is_file()}
    if maps:
        plot_attention_comparison(maps, root / "attention_maps.png")
