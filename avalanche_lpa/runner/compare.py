"""LPA vs GPSA vs ViT (and any strategies) over seeds, with a joint-training control per model.

Attention drifts with training time alone, so every model also gets a *joint* run: all classes in one
experience, trained for the same number of iterations as its incremental run, with the locality probed at
the iterations where the incremental run finished each experience. Locality degradation caused by
incremental learning is the difference between the two curves.

``compare(...)`` writes ``comparison.md`` (mean +- std over seeds), ``comparison.json`` and the accuracy and
locality figures into the output folder; each run keeps its own folder below it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..config.overrides import select_model, switch_strategy
from ..config.schema import RunConfig
from ..config.load import updated
from ..config.validation import validate
from ..errors import ConfigError
from ..files import atomic_write_bytes
from ..metrics import LocalityAtIterations, draw_probe
from ..report import (
    JOINT_SUFFIX,
    comparison_table,
    plot_accuracy_curves,
    plot_attention_comparison,
    plot_locality,
    read_results,
    to_jsonable,
    write_results,
)
from .benchmark import build_benchmark
from .folder import output_dir, run_name
from .model import model_input, model_slug
from .runs import check_runnable, run

__all__ = ["compare", "comparison_cells", "comparison_folder", "joint_config", "run_joint"]


def joint_config(config: RunConfig, total_iterations: int, train_size: int) -> RunConfig:
    """The joint-training control of ``config``: one experience, as many iterations as the incremental run."""
    per_epoch = math.ceil(train_size / config.strategy["train_mb_size"])
    epochs = max(1, math.ceil(total_iterations / per_epoch))
    values: Dict[str, Any] = {"name": f"{config.name}-joint", "data.n_experiences": 1, "data.initial_classes": None,
                              "strategy.train_epochs": epochs}
    if "epochs_first" in config.strategy:
        values["strategy.epochs_first"] = epochs
    folder = Path(config.output.dir)
    values["output.dir"] = str(folder.with_name(folder.name + "-joint"))
    return updated(config, values)


def run_joint(config: Any, incremental: Dict[str, Any], *, overwrite: bool = False) -> Dict[str, Any]:
    """Runs the joint control of an incremental run; returns its results with per-milestone locality.

    ``overwrite`` restarts a control left unfinished in its folder: its milestone measurements cannot be
    resumed from a checkpoint, and it has a single experience anyway.
    """
    config = validate(config)
    milestones = incremental["train_iterations"]
    one = updated(config, {"data.n_experiences": 1, "data.initial_classes": None})
    benchmark = build_benchmark(one.data, config.seed, model_input=model_input(config))
    probe, _ = draw_probe(benchmark.test_stream, config.evaluation.locality_probe_size, config.seed)
    joint = joint_config(config, milestones[-1], len(benchmark.train_stream[0].dataset))
    tracker = LocalityAtIterations(probe, milestones)
    results = run(joint, plugins=[tracker], overwrite=overwrite)
    results["locality_at_milestones"] = {
        "iterations": milestones,
        "layers": [tracker.layers.get(m) for m in milestones],
    }
    write_results(output_dir(joint) / "results.json", results)
    return results


def _literal(text: str) -> str:
    """``text`` as a template that formats to itself."""
    return text.replace("{", "{{").replace("}", "}}")


def comparison_folder(config: RunConfig) -> Path:
    """The folder of a comparison: ``output.dir`` with ``all`` for the model, strategy and seed."""
    return output_dir(config, model="all", strategy="all", seed="all")


def comparison_cells(config: Any, *, models: Sequence[str] = ("lpa", "gpsa", "mhsa"),
                     strategies: Optional[Sequence[str]] = None, seeds: Sequence[int] = (1993,)
                     ) -> List[Tuple[str, RunConfig]]:
    """Every run of a comparison as ``(group label, config)``, each validated and checked runnable, so a cell that
    cannot run (a timm name that does not exist, a strategy the runner refuses) stops the comparison before its
    first run trains (and ``--print-config`` with ``--compare``).

    Raises:
        ConfigError: a cell's config is invalid (one line naming the model, strategy and seed).
    """
    config = validate(config)
    root = comparison_folder(config)
    cells: List[Tuple[str, RunConfig]] = []
    for strategy in list(strategies or [config.strategy.name]):
        for model in models:
            for seed in seeds:
                try:
                    values: Dict[str, Any] = {**select_model(model), "seed": seed}
                    if strategy != config.strategy.name:
                        values["strategy"] = switch_strategy(config.strategy, strategy)
                    run_cfg = updated(config, values)
                    slug = model_slug(run_cfg)
                    # filled in here, and kept templates: a brace of the user's (written {{ }}) stays one
                    name = run_name(config, model=slug, strategy=strategy, seed=seed)
                    run_cfg = updated(run_cfg, {
                        "name": _literal(f"{name}-{strategy}-s{seed}"),
                        "output.dir": _literal(str(root / f"{slug}-{strategy}-s{seed}")),
                    })
                    check_runnable(run_cfg)
                except ConfigError as error:
                    raise ConfigError(f"--compare, model {model} with strategy {strategy}: {error}") from None
                cells.append((f"{model} / {strategy}", run_cfg))
    return cells


def compare(
    config: Any,
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
        config: the base config (a :class:`~avalanche_lpa.config.RunConfig` or a mapping); ``output.dir`` becomes the
            comparison folder.
        models: attention types and ``timm:<name>`` specs to compare.
        strategies: strategy names (default: the config's strategy).
        seeds: seeds; mean ± std is over them.
        joint: also run the joint-training control of each incremental run.
        resume: reuse finished runs (their ``results.json``, joint controls included) and resume interrupted ones.
        overwrite: start every run afresh, deleting what earlier runs wrote in their folders.
    """
    config = validate(config)
    root = comparison_folder(config)
    groups: Dict[str, Dict[str, List[Dict[str, Any]]]] = {}
    for label, run_cfg in comparison_cells(config, models=models, strategies=strategies, seeds=seeds):
        group = groups.setdefault(label, {"incremental": [], "joint": []})
        done = Path(run_cfg.output.dir) / "results.json"
        if resume and done.is_file():
            results = read_results(done)
        else:
            results = run(run_cfg, resume=resume, overwrite=overwrite)
        group["incremental"].append(results)
        joint_done = Path(run_cfg.output.dir + "-joint") / "results.json"
        if resume and joint_done.is_file():  # a finished control is reused, also with joint=False
            group["joint"].append(read_results(joint_done))
        elif joint:
            group["joint"].append(run_joint(run_cfg, results, overwrite=resume or overwrite))
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
    maps = {label: output_dir(validate(r["config"])) / "attention_maps.json" for label, r in first.items()}
    maps = {label: path for label, path in maps.items() if path.is_file()}
    if maps:
        plot_attention_comparison(maps, root / "attention_maps.png")
