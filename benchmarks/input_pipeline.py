"""Images/s of the recipe's training loader against the bare loader a user would write, side by side.

Both draw the same images (one experience of Split CIFAR-100 plus a replay memory of earlier classes) through the
same transform (the authors' RandomCrop + timm RandAugment + ToTensor + Normalize) and the same repeated-
augmentation sampler, with the same batch size and number of workers:

  recipe  what ``strategy.train(experience, num_workers=W)`` builds with the ``lpa`` recipe: the experience's
          Avalanche dataset (``.train()``) concatenated with the memory (``ConcatReplayPlugin``), Avalanche's
          ``make_train_dataloader`` and then ``RepeatedAugmentationPlugin``'s loader over it (Avalanche's
          collate of ``(x, y, task label)``), iterated one epoch per round as the training loop does
  restart the recipe's loader with workers restarted every epoch (Avalanche's default, ``persistent_workers``
          off; our loaders used it before issue 24), only with workers
  bare    torchvision's ``CIFAR100`` with the same transform, a ``Subset`` of the same images, ``DataLoader``
          with ``pin_memory`` (where there is a GPU) and ``persistent_workers``, torch's default collate

The data are fake CIFAR-100 files of the real size in torchvision's layout (``benchmarks/fake_data.py``).
Every round runs one epoch of each candidate at each worker count (order rotated each round) after one warm-up
epoch each; the loaders are built once, as the training loop builds one per experience. The report gives median
images/s and the median of per-round ratios recipe / bare.

    python benchmarks/input_pipeline.py                                  # 0, 2 and all workers, full experience
    python benchmarks/input_pipeline.py --train-per-class 100 --rounds 3 --workers 0 2
    python benchmarks/input_pipeline.py --train-per-class 200 --rounds 9 --workers 0 --auto-augment none
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Dict, List

import torch
from torch.utils.data import DataLoader, Subset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import avalanche_lpa.models  # noqa: E402,F401  (registers the timm models)
from avalanche_lpa.data import split_cifar100  # noqa: E402
from avalanche_lpa.data.transforms import (  # noqa: E402
    AUTHORS_AUTO_AUGMENT,
    CIFAR100_MEAN,
    CIFAR100_STD,
    train_transform,
)
from avalanche_lpa.plugins import RepeatedAugmentationPlugin, RepeatedAugmentationSampler  # noqa: E402
from avalanche_lpa.training import build_strategy  # noqa: E402
from benchmarks.fake_data import trust_fake_cifar, write_fake_cifar100  # noqa: E402

# The standard CIL class order of the B0 configs (experiments/configs/cifar100_b0_10steps.yaml), first 20 classes.
ORDER = [87, 0, 52, 58, 44, 91, 68, 97, 51, 15, 94, 92, 10, 72, 49, 78, 61, 14, 8, 86]


def memory_per_class(memory_size: int, experience: int, per_class: int) -> int:
    """Images per earlier class in the memory (the herding memory's equal share, at most what a class has)."""
    return min(memory_size // (10 * experience), per_class) if experience else 0


def recipe_loader(benchmark, experience: int, memory_size: int, batch: int, workers: int, per_class: int) -> DataLoader:
    """The loader the ``lpa`` recipe trains experience ``experience`` with (memory: as many images of the earlier
    experiences as the herding memory holds; which ones does not change the cost)."""
    import timm

    strategy = build_strategy("lpa", timm.create_model("lpa_vit_tiny"), device="cpu", train_mb_size=batch)
    exp = benchmark.train_stream[experience]
    data = exp.dataset.train()  # Avalanche's train_dataset_adaptation
    if experience:  # ConcatReplayPlugin.after_train_dataset_adaptation
        per_exp = 10 * memory_per_class(memory_size, experience, per_class)
        memory = [benchmark.train_stream[j].dataset.subset(range(per_exp)) for j in range(experience)]
        for part in memory:
            data = data.concat(part.train())
    strategy.experience, strategy.adapted_dataset = exp, data
    strategy.make_train_dataloader(num_workers=workers)  # what strategy.train(..., num_workers=W) calls
    plugin = next(p for p in strategy.plugins if isinstance(p, RepeatedAugmentationPlugin))
    plugin.before_training_exp(strategy)
    return strategy.dataloader


def bare_loader(root: Path, experience: int, memory_size: int, batch: int, workers: int, per_class: int,
                auto_augment: str, repeats: int = 3) -> DataLoader:
    """The same images through torchvision's dataset and a plain ``DataLoader``."""
    from torchvision.datasets import CIFAR100

    label = {c: i for i, c in enumerate(ORDER)}
    transform = train_transform(32, padding=4, hflip=0.5, auto_augment=auto_augment, mean=CIFAR100_MEAN,
                                std=CIFAR100_STD)
    dataset = CIFAR100(str(root), train=True, transform=transform, target_transform=label.get)
    by_class: Dict[int, List[int]] = {}
    for index, target in enumerate(dataset.targets):
        by_class.setdefault(target, []).append(index)
    take = lambda classes, n: [i for c in classes for i in by_class[c][:n]]  # noqa: E731
    indices = take(ORDER[10 * experience: 10 * experience + 10], per_class)
    indices += take(ORDER[: 10 * experience], memory_per_class(memory_size, experience, per_class))
    sampler = RepeatedAugmentationSampler(len(indices), repeats=repeats, seed=0, multiple_of=batch)
    return DataLoader(Subset(dataset, indices), batch_size=batch, sampler=sampler, drop_last=True,
                      num_workers=workers, pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0)


def restarting(loader: DataLoader) -> DataLoader:
    """``loader`` with its workers restarted every epoch (the same dataset, sampler and collate)."""
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=loader.sampler, drop_last=loader.drop_last,
                      collate_fn=loader.collate_fn, num_workers=loader.num_workers, pin_memory=loader.pin_memory,
                      persistent_workers=False)


def epoch_rate(loader: DataLoader, epoch: int) -> float:
    """Images per second of one epoch (``iter`` included: a loader without persistent workers starts them here)."""
    loader.sampler.set_epoch(epoch)
    images = 0
    start = time.perf_counter()
    for batch in loader:
        images += len(batch[0])
    return images / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="folder for the fake CIFAR-100 (default: a temporary folder)")
    parser.add_argument("--train-per-class", type=int, default=500, help="training images per class (real: 500)")
    parser.add_argument("--experience", type=int, default=1, help="0-based; from 1 on, with a replay memory")
    parser.add_argument("--memory", type=int, default=2000, help="replay memory size (the recipe: 2000)")
    parser.add_argument("--batch", type=int, default=256, help="the recipe's train_mb_size")
    parser.add_argument("--workers", nargs="+", default=["0", "2", "all"], help="worker counts; 'all' = CPU count")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--auto-augment", default=AUTHORS_AUTO_AUGMENT,
                        help="timm policy, or 'none' (crop + flip only: shows the per-item cost of the dataset layers)")
    parser.add_argument("--seed", type=int, default=0, help="torch seed of the augmentations")
    parser.add_argument("--json", default="benchmarks/results/input_pipeline.json")
    args = parser.parse_args(argv)
    if not 0 <= args.experience < 2:
        parser.error("--experience must be 0 or 1 (the classes of ORDER)")
    warnings.filterwarnings("ignore")
    torch.manual_seed(args.seed)
    if args.auto_augment == "none":
        args.auto_augment = None
    workers = sorted({os.cpu_count() if w == "all" else int(w) for w in args.workers})
    trust_fake_cifar()
    with tempfile.TemporaryDirectory() as tmp:
        root = write_fake_cifar100(Path(args.data or tmp), args.train_per_class, 1)
        order = ORDER + [c for c in range(100) if c not in ORDER]
        benchmark = split_cifar100(root, n_experiences=10, class_order=order,
                                   auto_augment=args.auto_augment, download=False,
                                   max_train_per_class=args.train_per_class if args.train_per_class < 500 else None)
        loaders = {}
        for w in workers:
            loaders[("recipe", w)] = recipe_loader(benchmark, args.experience, args.memory, args.batch, w,
                                                    args.train_per_class)
            if w:
                loaders[("restart", w)] = restarting(loaders[("recipe", w)])
            loaders[("bare", w)] = bare_loader(root, args.experience, args.memory, args.batch, w,
                                               args.train_per_class, args.auto_augment)
        for key, loader in loaders.items():  # warm-up: persistent workers start, page cache, allocator
            epoch_rate(loader, 0)
        rates = {key: [] for key in loaders}
        keys = list(loaders)
        for r in range(args.rounds):
            for key in keys[r % len(keys):] + keys[: r % len(keys)]:
                rates[key].append(epoch_rate(loaders[key], r + 1))
        del loaders  # persistent workers end with their loader
    report = {"experience": args.experience, "train_per_class": args.train_per_class, "memory": args.memory,
              "batch": args.batch, "rounds": args.rounds, "auto_augment": args.auto_augment,
              "cpu_count": os.cpu_count(), "torch": torch.__version__, "workers": {}}
    print(f"experience {args.experience}, {args.train_per_class} images/class, memory {args.memory}, batch "
          f"{args.batch}, {args.rounds} rounds, {os.cpu_count()} CPUs")
    print(f"  {'workers':>7}{'bare img/s':>12}{'recipe img/s':>14}{'recipe/bare':>13}{'restart/bare':>14}")
    for w in workers:
        def ratio(name):
            return statistics.median(a / b for a, b in zip(rates[(name, w)], rates[("bare", w)]))

        row = {"bare_images_per_s": statistics.median(rates[("bare", w)]),
               "recipe_images_per_s": statistics.median(rates[("recipe", w)]), "ratio": ratio("recipe"),
               "restart_ratio": ratio("restart") if w else None}
        report["workers"][str(w)] = row
        restart = f"{row['restart_ratio']:>14.3f}" if w else f"{'-':>14}"
        print(f"  {w:>7}{row['bare_images_per_s']:>12.0f}{row['recipe_images_per_s']:>14.0f}{row['ratio']:>13.3f}"
              f"{restart}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
