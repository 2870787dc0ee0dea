"""Where the time of a real run goes: the B0-10 recipe on fake data of the real shapes, phase by phase.

Runs the user's command (``experiments/split_cifar100.py`` / ``split_imagenet100.py`` with the shipped B0-10
config) in a subprocess on fake data in the real layout (``benchmarks/fake_data.py``: CIFAR-100's pickles with
their md5 check off, or ImageNet JPEG folders), for a few epochs, and reads the seconds per phase of each
experience from the run's ``progress.json`` (``phase_times_s``, written by the runner's phase timer). After
``--experiences`` experiences the run is interrupted (Ctrl-C, as a user would; the finished ones are kept).

The projection to the authors' run keeps every per-experience cost (memory update, evaluation, locality probe,
attention maps, checkpoint, the setup of each experience's training, the rest) and scales what happens inside the
training epochs (``epochs`` and ``epoch_waits`` of the phase record: compute and loader waits) by ``epochs_first``
(500) / ``train_epochs`` (600) over the epochs run, and finetuning by ``finetune.epochs`` (20) over the finetuning
epochs run. The goal (issue 24): everything but training and finetuning at most 2% of the projection.

    python benchmarks/run_cost.py                                  # CIFAR-100 at its real size, tiny + cifar presets
    python benchmarks/run_cost.py --presets tiny --experiences 3 --epochs 1 --finetune-epochs 1
    python benchmarks/run_cost.py --dataset imagenet100 --presets imagenet --train-per-class 6 --test-per-class 2
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from avalanche_lpa.timing import PHASES  # noqa: E402
from avalanche_lpa.training import strategy_options  # noqa: E402
from benchmarks.fake_data import write_fake_cifar100, write_fake_imagenet  # noqa: E402

SCRIPTS = {"cifar100": "split_cifar100.py", "imagenet100": "split_imagenet100.py"}
SCALED = {"train", "data_wait", "finetune"}  # phases that grow with epochs; the others are per experience


def launch(args, preset: str, data: Path, out: Path) -> List[Dict[str, float]]:
    """Runs the experiment script for ``args.experiences`` experiences; returns their ``phase_times_s``."""
    sets = [f"model.preset={preset}", f"strategy.epochs_first={args.epochs}", f"strategy.train_epochs={args.epochs}",
            f"strategy.finetune.epochs={args.finetune_epochs}", "evaluation.progress_bar=false", "output.plots=false"]
    if args.workers is not None:
        sets.append(f"data.num_workers={args.workers}")
    if args.train_per_class is not None:
        sets += [f"data.max_train_per_class={args.train_per_class}", f"data.max_test_per_class={args.test_per_class}"]
    if args.batch is not None:
        sets += [f"strategy.train_mb_size={args.batch}"]
    script = REPO / "experiments" / SCRIPTS[args.dataset]
    command = [sys.executable, str(REPO / "benchmarks" / "fake_data.py"), str(script),
               "--data-root", str(data), "--output", str(out), "--device", "cpu", "--overwrite"]
    for item in sets:
        command += ["--set", item]
    progress, console = out / "progress.json", out.with_name(out.name + "-console.txt")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    with open(console, "w") as log:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            stopping = 0.0
            while proc.poll() is None:
                time.sleep(0.5)
                done = progress.is_file() and json.loads(progress.read_text())["finished_experiences"]
                finished = done and done >= args.experiences and args.experiences < 10
                if finished and time.monotonic() - stopping > 5:
                    # The next experience has started: stop it as Ctrl-C would, again until it stops (an
                    # interrupt that lands in a loader's __del__ is swallowed there).
                    proc.send_signal(signal.SIGINT)
                    stopping = time.monotonic()
        finally:
            if proc.poll() is None:
                proc.kill()
    output = console.read_text()
    print("".join(line for line in output.splitlines(keepends=True) if line.startswith("experience ")), end="")
    if not progress.is_file():
        raise RuntimeError(f"the run wrote no progress.json:\n{output[-3000:]}")
    phases = json.loads(progress.read_text())["phase_times_s"][: args.experiences]
    if len(phases) < args.experiences:
        raise RuntimeError(f"the run stopped after {len(phases)} experiences:\n{output[-3000:]}")
    return phases


def project(phases: List[Dict[str, float]], epochs: int, finetune_epochs: int) -> List[Dict[str, float]]:
    """Each experience's seconds at the authors' epochs (``other``: the wall time outside every phase)."""
    authors = strategy_options("lpa")
    projected = []
    for index, seconds in enumerate(phases):
        row = {name: seconds[name] for name in PHASES}
        row["other"] = max(seconds["wall"] - sum(row.values()), 0.0)
        more = (authors["epochs_first"] if index == 0 else authors["train_epochs"]) / epochs - 1
        row["train"] += (seconds["epochs"] - seconds["epoch_waits"]) * more  # the setup stays
        row["data_wait"] += seconds["epoch_waits"] * more
        row["finetune"] *= authors["finetune"]["epochs"] / finetune_epochs if finetune_epochs else 0.0
        projected.append(row)
    return projected


def summarise(phases: List[Dict[str, float]], projected: List[Dict[str, float]]) -> Dict[str, Any]:
    names = list(PHASES) + ["other"]
    measured_total = {n: sum(p.get(n, max(p["wall"] - sum(p[m] for m in PHASES), 0.0)) for p in phases) for n in names}
    training = measured_total["train"] or 1.0
    projected_total = {n: sum(p[n] for p in projected) for n in names}
    whole = sum(projected_total.values())
    overhead = [n for n in names if n not in ("train", "finetune")]
    first, last = phases[0], phases[-1]
    return {
        "measured_s": measured_total,
        "fraction_of_training": {n: measured_total[n] / training for n in names},
        "projected_s": projected_total,
        "projected_share": {n: projected_total[n] / whole for n in names},
        "projected_overhead_share": sum(projected_total[n] for n in overhead) / whole,
        "growth_last_over_first": {n: (last[n] / first[n] if first[n] > 0 else None) for n in PHASES},
        "per_experience": phases,
    }


def print_report(label: str, summary: Dict[str, Any]) -> None:
    names = list(PHASES) + ["other"]
    per = summary["per_experience"]
    print(f"\n{label}: {len(per)} experiences")
    print(f"  {'phase':<15}{'measured s':>11}{'/ training':>11}{'projected s':>13}{'share':>8}"
          f"{'exp 1 s':>9}{f'exp {len(per)} s':>9}")
    for n in names:
        first = per[0].get(n, float("nan")) if n != "other" else float("nan")
        last = per[-1].get(n, float("nan")) if n != "other" else float("nan")
        print(f"  {n:<15}{summary['measured_s'][n]:>11.2f}{summary['fraction_of_training'][n]:>11.4f}"
              f"{summary['projected_s'][n]:>13.0f}{100 * summary['projected_share'][n]:>7.2f}%"
              f"{first:>9.2f}{last:>9.2f}")
    print(f"  everything but training and finetuning: {100 * summary['projected_overhead_share']:.2f}% of the "
          "projected run (goal <= 2%)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=sorted(SCRIPTS), default="cifar100")
    parser.add_argument("--presets", nargs="+", default=["tiny", "cifar"], help="model presets to run")
    parser.add_argument("--experiences", type=int, default=10, help="experiences to run (of 10)")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs per experience")
    parser.add_argument("--finetune-epochs", type=int, default=2, help="finetuning epochs per experience (>0)")
    parser.add_argument("--train-per-class", type=int, help="subsample (default: all; CIFAR-100: 500)")
    parser.add_argument("--test-per-class", type=int, default=100, help="with --train-per-class")
    parser.add_argument("--imagenet-size", type=int, default=256, help="side of the fake ImageNet JPEGs")
    parser.add_argument("--batch", type=int, help="train_mb_size (default: the recipe's 256)")
    parser.add_argument("--workers", type=int, help="data.num_workers (default: the config's)")
    parser.add_argument("--data", help="folder for the fake dataset (default: a temporary folder; reused if there)")
    parser.add_argument("--json", default="benchmarks/results/run_cost.json")
    args = parser.parse_args(argv)
    if not 1 <= args.experiences <= 10 or args.epochs < 1 or args.finetune_epochs < 1:
        parser.error("need 1 <= --experiences <= 10, --epochs >= 1 and --finetune-epochs >= 1")
    report: Dict[str, Any] = {"dataset": args.dataset, "epochs": args.epochs, "finetune_epochs": args.finetune_epochs,
                              "train_per_class": args.train_per_class, "cpu_count": os.cpu_count(), "presets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data or Path(tmp) / "data")
        if args.dataset == "cifar100":
            write_fake_cifar100(data, args.train_per_class or 500, args.test_per_class if args.train_per_class else 100)
        else:
            wnids = [f"n{i:08d}" for i in range(100)]
            write_fake_imagenet(data, wnids, args.train_per_class or 1300, args.test_per_class if args.train_per_class
                                else 50, size=args.imagenet_size)
        for preset in args.presets:
            phases = launch(args, preset, data, Path(tmp) / f"run-{preset}")
            summary = summarise(phases, project(phases, args.epochs, args.finetune_epochs))
            report["presets"][preset] = summary
            print_report(f"{args.dataset}, preset {preset}, {args.epochs} epoch(s), finetuning "
                         f"{args.finetune_epochs} epoch(s), {args.train_per_class or 'all'} images/class", summary)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
