"""Prints the README's Split Fashion-MNIST tables from the run folders the README's commands write.

    python docs/results/fashion_mnist/make_tables.py runs/fmnist            # every table of docs/results.md
    python docs/results/fashion_mnist/make_tables.py runs/fmnist --dytox    # the DyTox comparison of docs/dytox.md

Every number is a mean ± sample standard deviation over the seeds found (``<model>-<strategy>-s<seed>``
folders, each with its ``results.json``); ``-joint`` folders are the joint-training controls.
"""
import glob
import json
import statistics
import sys
from pathlib import Path


def mean_std(values, digits=3):
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    mean = statistics.fmean(values)
    return f"{mean:.{digits}f}" if len(values) == 1 else f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def load(folder):
    incremental, joint = [], []
    for path in sorted(glob.glob(str(folder) + "-s*/results.json")):
        name = Path(path).parent.name
        (joint if name.endswith("-joint") else incremental).append(json.load(open(path)))
    return incremental, joint


def row(label, runs, joint=None):
    summary = lambda key: mean_std([r["summary"][key] for r in runs])
    locality = [r["locality"]["mean"] for r in runs]
    cells = [label, str(len(runs)), summary("avg_incremental_accuracy"), summary("last_accuracy"),
             summary("avg_forgetting_max"), mean_std([m[0] for m in locality], 2), mean_std([m[-1] for m in locality], 2)]
    if joint is not None:
        layers = [r["locality_at_milestones"]["layers"] for r in joint]
        first = [statistics.fmean(m[0]) for m in layers]
        last = [statistics.fmean(m[-1]) for m in layers]
        cells += [mean_std([r["summary"]["last_accuracy"] for r in joint]),
                  f"{mean_std(first, 2)} → {mean_std(last, 2)}" if layers else "–"]
    return "| " + " | ".join(cells) + " |"


def new_and_old(runs):
    """Accuracy on the experience just learned, and on the earlier ones, after each experience."""
    matrices = [r["accuracy_matrix"] for r in runs]
    steps = len(matrices[0])
    new = [statistics.fmean(m[i][i] for m in matrices) for i in range(steps)]
    old = [statistics.fmean(statistics.fmean(m[i][:i]) for m in matrices) for i in range(1, steps)]
    return " ".join(f"{v:.2f}" for v in new), " ".join(f"{v:.2f}" for v in old)


HEADER = "| run | seeds | avg incr. acc | last acc | forgetting (max) | locality after exp 1 | after exp 5 |"


def main_table(root) -> str:
    """The README's table (LPA vs GPSA vs ViT with the `lpa` recipe, joint controls) from the runs below ``root``."""
    lines = [HEADER + " joint acc | joint locality (same iterations) |", "|" + "---|" * 9]
    for label, model in [("LPA", "lpa"), ("GPSA", "gpsa"), ("ViT (MHSA)", "mhsa")]:
        runs, joint = load(Path(root) / "main" / f"{model}-lpa")
        lines.append(row(label, runs, joint))
    return "\n".join(lines)


VARIANTS = [("LPA, `lpa`", "main/lpa-lpa"), ("LPA, `lpa_warmup`", "warmup/lpa-lpa_warmup"),
            ("LPA, Avalanche `replay` (the floor)", "replay/lpa-replay"),
            ("DyTox (GPSA), `dytox`", "dytox/gpsa-dytox"), ("DyTox+LPA, `dytox`", "dytox/lpa-dytox")]
ABLATIONS = [("CPU settings", "main/lpa-lpa"), ("− finetuning", "abl_noft/lpa-lpa"),
             ("+ the authors' distillation", "abl_kd/lpa-lpa"), ("+ the authors' lr schedule", "abl_sched/lpa-lpa"),
             ("+ the authors' replay by concatenation", "abl_concat/lpa-lpa")]
LAYERS = [("LPA, `lpa`", "main/lpa-lpa"), ("GPSA, `lpa`", "main/gpsa-lpa"), ("ViT, `lpa`", "main/mhsa-lpa"),
          ("LPA, `replay`", "replay/lpa-replay"), ("DyTox (GPSA)", "dytox/gpsa-dytox"), ("DyTox+LPA", "dytox/lpa-dytox")]


def variants_table(root) -> str:
    """The warm-up preset, the replay floor and DyTox (docs/results.md)."""
    return "\n".join([HEADER, "|" + "---|" * 7] + [row(label, load(Path(root) / f)[0]) for label, f in VARIANTS])


def ablation_table(root) -> str:
    """The ablation of the CPU settings, with new- and old-class accuracies (docs/results.md)."""
    lines = [HEADER + " new-class acc after exp 1…5 | old-class acc after exp 2…5 |", "|" + "---|" * 9]
    for label, folder in ABLATIONS:
        runs = load(Path(root) / folder)[0]
        new, old = new_and_old(runs)
        lines.append(row(label, runs)[:-1] + f"| {new} | {old} |")
    return "\n".join(lines)


def layers_table(root) -> str:
    """Mean attention distance per local block, after experience 1 → after experience 5 (docs/results.md)."""
    lines = ["| run | block 1 | block 2 | block 3 | block 4 |", "|---|---|---|---|---|"]
    for label, folder in LAYERS:
        layers = [r["locality"]["layers"] for r in load(Path(root) / folder)[0]]
        cells = [f"{statistics.fmean(l[0][b] for l in layers):.2f} → {statistics.fmean(l[-1][b] for l in layers):.2f}"
                 for b in range(len(layers[0][0]))]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(root):
    print(main_table(root), variants_table(root), ablation_table(root), sep="\n\n")
    print("\nMean attention distance per layer (local blocks 1-4), after experience 1 → after experience 5\n")
    print(layers_table(root))


#: The DyTox comparison (docs/dytox.md): the LPA authors' DyTox and Douillard's, the same CPU budget, each with
#: its own distillation; folder below the root, as the commands there write it.
DYTOX_ROWS = [
    ("DyTox (GPSA), the LPA authors' (`dytox`, old-sample KD)", "dytox_kd/gpsa-dytox"),
    ("DyTox+LPA, the LPA authors' (`dytox`, old-sample KD)", "dytox_kd/lpa-dytox"),
    ("DyTox (GPSA), Douillard's (`dytox_douillard`)", "dytox_douillard/gpsa-dytox_douillard"),
    ("DyTox+LPA, Douillard's recipe (`dytox_douillard`)", "dytox_douillard/lpa-dytox_douillard"),
]


def dytox_table(root) -> str:
    """The DyTox comparison table of docs/dytox.md from the runs below ``root``."""
    root = Path(root)
    lines = [HEADER, "|" + "---|" * 7]
    lines += [row(label, load(root / folder)[0]) for label, folder in DYTOX_ROWS]
    return "\n".join(lines)


if __name__ == "__main__":
    if "--dytox" in sys.argv:
        print(dytox_table(next((a for a in sys.argv[1:] if a != "--dytox"), "runs/fmnist")))
    else:
        main(sys.argv[1] if len(sys.argv) > 1 else "runs/fmnist")
