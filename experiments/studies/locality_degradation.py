#!/usr/bin/env python
"""Does a ViT lose locality when it learns classes incrementally? A study on Split Fashion-MNIST (issue 31).

Two stages, on the `fashion_mnist` config made B50-style (a first experience of 5 classes, then 5 of one class;
2000 training images per class, 500 test images per class, 4 epochs on the first experience, 3 on the others):

1. **sweep**: settings under which a plain ViT (MHSA) could become local on the first experience, one seed each:
   the base, 12 epochs, all 6000 training images per class, CutMix (the confounder named in arXiv 2605.16390), a
   finer patch grid (patch 2: 14 x 14 tokens). Per-layer mean attention distance after the first experience,
   beside uniform attention's.
2. **main**: from the chosen setting (``--main-setting``), class-incremental runs of ViT, GPSA and LPA over 3 seeds,
   each beside its joint-training control with the same iterations (``avalanche-lpa --compare``), per-layer locality
   after every experience.

    python experiments/studies/locality_degradation.py --output runs/locality_study --jobs 2   # both stages (~70 min on 2 cores)
    python experiments/studies/locality_degradation.py --output runs/locality_study --report   # the tables and figure
    # ... --report --publish docs/results/locality_study: the committed copy the docs' tables are rebuilt from
    python experiments/studies/locality_degradation.py --smoke --output /tmp/study             # the whole path in seconds

Jobs run as separate processes of one thread each (``--jobs`` at a time); a finished job is reused when the study
is run again (``--resume`` of the command line), so an interrupted study continues.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

MODELS = ("mhsa", "gpsa", "lpa")
LABELS = {"mhsa": "ViT (MHSA)", "gpsa": "GPSA", "lpa": "LPA"}
SEEDS = (1993, 1994, 1995)

#: The study's split and budget, over the shipped `fashion_mnist` config.
BASE = [
    "data.n_experiences=6", "data.initial_classes=5", "data.max_train_per_class=2000",
    "data.max_test_per_class=500", "strategy.epochs_first=4", "strategy.train_epochs=3",
    "evaluation.progress_bar=false", "evaluation.attention_maps=0", "output.plots=false", "output.save_model=false",
]
#: The same path at toy size (synthetic images), for the test suite.
SMOKE = [
    "data.dataset=synthetic", "data.class_order=null", "data.n_experiences=3", "data.initial_classes=4",
    "model.overrides={img_size: 8, in_chans: 1, drop_path_rate: 0.0}", "strategy.epochs_first=1",
    "strategy.train_epochs=1", "strategy.finetune.epochs=1", "strategy.mem_size=12",
    "evaluation.locality_probe_size=16", "evaluation.progress_bar=false", "evaluation.attention_maps=0",
    "output.plots=false", "output.save_model=false",
]

#: Sweep settings: name -> (what it changes, overrides over BASE).
SETTINGS: Dict[str, Any] = {
    "base": ("5 classes x 2000 images, 4 epochs, patch 4 (7x7 tokens)", []),
    "long": ("12 epochs on the first experience", ["strategy.epochs_first=12"]),
    "all_images": ("all 6000 training images per class", ["data.max_train_per_class=null"]),
    "cutmix": ("CutMix (alpha 1, BCE loss)", ["strategy.loss=bce", "strategy.cutmix=1.0"]),
    "patch2": ("patch 2 (14x14 tokens)", ["model.overrides.patch_size=2"]),
}
SMOKE_SETTINGS = {"base": SETTINGS["base"], "cutmix": SETTINGS["cutmix"]}


def _config(overrides: Sequence[str], smoke: bool):
    from avalanche_lpa.config import load_config
    return load_config("fashion_mnist", list(SMOKE if smoke else BASE) + list(overrides))


def sweep_one(name: str, output: Path, smoke: bool) -> Dict[str, Any]:
    """Trains the plain ViT on the first experience of setting ``name``; writes and returns ``sweep/<name>.json``."""
    import torch
    from avalanche.core import SupervisedPlugin
    from avalanche_lpa.metrics import draw_probe, measure_locality, uniform_attention_distance
    from avalanche_lpa.runner import RunInterrupted, run
    from avalanche_lpa.runner.benchmark import build_benchmark

    description, overrides = (SMOKE_SETTINGS if smoke else SETTINGS)[name]
    folder = output / "sweep" / name
    config = _config(list(overrides) + ["model.attn_type=mhsa", f"name=sweep-{name}", f"output.dir={folder}"], smoke)
    benchmark = build_benchmark(config.data, config.seed)
    probe, _ = draw_probe(benchmark.test_stream, config.evaluation.locality_probe_size, config.seed)
    first_test = benchmark.test_stream[0].dataset.eval()

    class AfterFirstExperience(SupervisedPlugin):
        """Locality on the run's probe and accuracy on the first experience's test images, once trained."""

        found: Dict[str, Any] = {}

        def after_training_exp(self, strategy: Any, **kwargs: Any) -> None:
            model = strategy.model
            layers = [float(h.mean()) for h in measure_locality(model, probe, strategy.device).result()]
            correct = 0
            with torch.no_grad():
                model.eval()
                for x, y, *_ in torch.utils.data.DataLoader(first_test, batch_size=500):
                    correct += int((model(x.to(strategy.device)).argmax(-1).cpu() == y).sum())
                model.train()
            self.found = {"layers": layers, "accuracy_first": correct / len(first_test),
                          "uniform_distance": uniform_attention_distance(model)}

    probe_plugin = AfterFirstExperience()
    start = time.time()
    try:
        run(config, plugins=[probe_plugin], stop_after=1, overwrite=True)
    except RunInterrupted:  # stopped after the first experience, as asked
        pass
    layers = probe_plugin.found["layers"]
    result = {
        "setting": name, "description": description, "overrides": list(overrides), "model": "mhsa",
        "seed": config.seed, "layers": layers, "mean": statistics.fmean(layers),
        "uniform_distance": probe_plugin.found["uniform_distance"], "accuracy_first":
        probe_plugin.found["accuracy_first"], "wall_time_s": round(time.time() - start, 1),
    }
    (output / "sweep" / f"{name}.json").write_text(json.dumps(result, indent=1))
    return result


def _job(command: List[str], log: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    log.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)


def run_jobs(jobs: List[Any], parallel: int) -> None:
    """Runs ``(label, command, log)`` jobs, ``parallel`` at a time; says when each starts and ends; a failed job
    stops the study with the log's last lines (the finished ones stay)."""
    waiting, running, done = list(jobs), {}, 0
    while waiting or running:
        while waiting and len(running) < parallel:
            label, command, log = waiting.pop(0)
            print(f"  start {label}  (log: {log})", flush=True)
            running[label] = (_job(command, log), log, time.time())
        time.sleep(1)
        for label, (process, log, started) in list(running.items()):
            if process.poll() is None:
                continue
            del running[label]
            done += 1
            if process.returncode != 0:
                for other, *_ in running.values():
                    other.terminate()
                tail = log.read_text().strip().splitlines()[-5:]
                sys.exit(f"error: {label} failed (exit {process.returncode}); {log}:\n  " + "\n  ".join(tail))
            print(f"  done  {label} in {(time.time() - started) / 60:.1f} min  [{done}/{len(jobs)}]", flush=True)


def sweep(output: Path, parallel: int, smoke: bool) -> None:
    settings = SMOKE_SETTINGS if smoke else SETTINGS
    jobs = [(f"sweep {name}", [sys.executable, __file__, "--output", str(output), "--sweep-one", name]
             + (["--smoke"] if smoke else []), output / "logs" / f"sweep-{name}.txt")
            for name in settings if not (output / "sweep" / f"{name}.json").is_file()]
    print(f"stage 1/2: sweep of {len(settings)} settings, plain ViT, first experience ({len(jobs)} to run)")
    run_jobs(jobs, parallel)


def main_stage(output: Path, setting: str, parallel: int, smoke: bool, seeds: Sequence[int]) -> None:
    _, overrides = (SMOKE_SETTINGS if smoke else SETTINGS)[setting]
    sets = [item for value in list(SMOKE if smoke else BASE) + list(overrides) for item in ("--set", value)]
    jobs = []
    for model in MODELS:
        for seed in seeds:
            folder = output / "main" / f"{model}-s{seed}"
            command = ["avalanche-lpa", "--config", "fashion_mnist", "--compare", "--models", model, "--seeds",
                       str(seed), "--output", str(folder), "--resume", *sets]
            jobs.append((f"{LABELS[model]} seed {seed}", command, output / "logs" / f"main-{model}-s{seed}.txt"))
    print(f"stage 2/2: {len(jobs)} class-incremental runs from setting '{setting}', each with its joint control")
    run_jobs(jobs, parallel)


# --- the report: tables and figure from the results files -------------------------------------------------------


def _mean_std(values: Sequence[float], digits: int = 2) -> str:
    mean = statistics.fmean(values)
    return f"{mean:.{digits}f}" if len(values) == 1 else f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def load_study(output: Path) -> Dict[str, Any]:
    """The sweep results and, per model, the incremental and joint ``results.json`` files of the main stage."""
    sweep_results = [json.loads(p.read_text()) for p in sorted((output / "sweep").glob("*.json"))]
    main: Dict[str, Dict[str, List[Any]]] = {}
    for model in MODELS:
        runs = {"incremental": [], "joint": []}
        for path in sorted((output / "main").glob(f"{model}-s*/*/results.json")):
            runs["joint" if path.parent.name.endswith("-joint") else "incremental"].append(json.loads(path.read_text()))
        if runs["incremental"]:
            main[model] = runs
    return {"sweep": sweep_results, "main": main}


def sweep_table(study: Dict[str, Any]) -> str:
    order = list(SETTINGS)
    lines = ["| setting (plain ViT, first experience, seed 1993) | accuracy | locality per layer | mean | uniform | "
             "minutes |", "|---|---|---|---|---|---|"]
    for result in sorted(study["sweep"], key=lambda r: order.index(r["setting"]) if r["setting"] in order else 99):
        layers = " ".join(f"{v:.2f}" for v in result["layers"])
        lines.append(f"| {result['setting']}: {result['description']} | {result['accuracy_first']:.3f} | {layers} | "
                     f"{result['mean']:.2f} | {result['uniform_distance']:.2f} | {result['wall_time_s'] / 60:.1f} |")
    return "\n".join(lines)


def _drift(runs: List[Any], layer: int, joint: bool) -> List[float]:
    """Per seed: locality of ``layer`` after the last experience minus after the first (joint: same iterations)."""
    if joint:
        return [r["locality_at_milestones"]["layers"][-1][layer] - r["locality_at_milestones"]["layers"][0][layer]
                for r in runs]
    return [r["locality"]["layers"][-1][layer] - r["locality"]["layers"][0][layer] for r in runs]


def main_table(study: Dict[str, Any]) -> str:
    """Per model and layer: locality after the first and last experience, its drift, and the joint control's."""
    lines = ["| model | layer | after exp 1 | after last exp | drift | joint drift (same iterations) | "
             "drift beyond joint | last acc | joint acc |", "|---|---|---|---|---|---|---|---|---|"]
    for model, runs in study["main"].items():
        incremental, joint = runs["incremental"], runs["joint"]
        for layer in range(len(incremental[0]["locality"]["layers"][0])):
            drift, joint_drift = _drift(incremental, layer, False), _drift(joint, layer, True)
            beyond = [a - b for a, b in zip(drift, joint_drift)]
            first = [r["locality"]["layers"][0][layer] for r in incremental]
            last = [r["locality"]["layers"][-1][layer] for r in incremental]
            accuracy = _mean_std([r["summary"]["last_accuracy"] for r in incremental], 3) if layer == 0 else ""
            joint_acc = _mean_std([r["summary"]["last_accuracy"] for r in joint], 3) if layer == 0 else ""
            lines.append(f"| {LABELS[model] if layer == 0 else ''} | {layer + 1} | {_mean_std(first)} | "
                         f"{_mean_std(last)} | {_mean_std(drift)} | {_mean_std(joint_drift)} | {_mean_std(beyond)} | "
                         f"{accuracy} | {joint_acc} |")
    return "\n".join(lines)


def figure(study: Dict[str, Any], path: Path) -> Path:
    """Per-layer locality after every experience, incremental (solid) and joint control (dashed), per model."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    models = list(study["main"])
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.4), squeeze=False)
    for ax, model in zip(axes[0], models):
        incremental, joint = study["main"][model]["incremental"], study["main"][model]["joint"]
        steps = range(1, len(incremental[0]["locality"]["layers"]) + 1)
        for layer in range(len(incremental[0]["locality"]["layers"][0])):
            for runs, style, key in ((incremental, "-", "incremental"), (joint, "--", "joint")):
                series = [[(r["locality"]["layers"] if key == "incremental" else
                            r["locality_at_milestones"]["layers"])[s][layer] for r in runs] for s in range(len(steps))]
                means = [statistics.fmean(v) for v in series]
                ax.plot(list(steps), means, style, color=f"C{layer}",
                        label=f"layer {layer + 1}" if key == "incremental" else None)
        ax.axhline(incremental[0]["locality"]["uniform_distance"], color="grey", lw=0.8, ls=":", label="uniform")
        ax.set(title=LABELS[model], xlabel="experience", ylabel="mean attention distance (patches)")
    axes[0][0].legend(fontsize=7, title="solid: incremental, dashed: joint", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def report(output: Path) -> str:
    study = load_study(output)
    text = "Sweep:\n\n" + sweep_table(study) + "\n\nClass-incremental vs joint:\n\n" + main_table(study) + "\n"
    (output / "study.md").write_text(text)
    if study["main"]:
        figure(study, output / "locality_study.png")
    return text


def publish(output: Path, target: Path) -> Path:
    """Copies what the report reads (the sweep's files, each run's ``results.json`` and ``config.yaml``) and the
    report itself into ``target`` (the docs' committed copy: docs/results/locality_study)."""
    import shutil
    files = list((output / "sweep").glob("*.json")) + [
        path for pattern in ("main/*/*/results.json", "main/*/*/config.yaml") for path in output.glob(pattern)]
    files += [output / name for name in ("study.md", "locality_study.png") if (output / name).is_file()]
    for path in files:
        copy = target / path.relative_to(output)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy)
    return target


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, required=True, help="the study's folder")
    parser.add_argument("--jobs", type=int, default=2, help="processes at a time, one thread each (default 2)")
    parser.add_argument("--main-setting", default="base", help="the sweep setting the main stage runs (default base)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--stage", choices=("sweep", "main", "all"), default="all")
    parser.add_argument("--report", action="store_true", help="only write the tables and figure of a finished study")
    parser.add_argument("--smoke", action="store_true", help="synthetic images at toy size: the path in seconds")
    parser.add_argument("--publish", type=Path, help="also copy the results files and the report into this folder "
                        "(docs/results/locality_study)")
    parser.add_argument("--sweep-one", help=argparse.SUPPRESS)  # a sweep job's own process
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    settings = SMOKE_SETTINGS if args.smoke else SETTINGS
    if args.main_setting not in settings:
        print(f"error: --main-setting {args.main_setting!r} is not a sweep setting ({', '.join(settings)})",
              file=sys.stderr)
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "sweep").mkdir(exist_ok=True)
    if args.sweep_one:
        print(json.dumps(sweep_one(args.sweep_one, args.output, args.smoke)))
        return 0
    if not args.report:
        start = time.time()
        if args.stage in ("sweep", "all"):
            sweep(args.output, args.jobs, args.smoke)
        if args.stage in ("main", "all"):
            main_stage(args.output, args.main_setting, args.jobs, args.smoke, args.seeds)
        print(f"study finished in {(time.time() - start) / 60:.1f} min")
    print(report(args.output))
    print(f"tables in {args.output / 'study.md'}; figure in {args.output / 'locality_study.png'}")
    if args.publish:
        print(f"copied the results files and the report into {publish(args.output, args.publish)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
