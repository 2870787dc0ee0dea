"""Images/s of one Avalanche training epoch with LPAViT against a bare PyTorch loop, side by side.

Same model architecture, data (an in-memory tensor dataset), batch size and optimizer for every candidate:

  bare      a plain loop: DataLoader(shuffle) -> forward -> cross-entropy -> backward -> AdamW step
  naive     Avalanche ``Naive`` (growing head, Avalanche's loaders and callbacks, no metrics)
  naive+ev  the same with our ``cil_evaluator`` (accuracy, forgetting, BWT and the locality metric, which
            works only at the end of an evaluation phase)
  recipe    ``build_strategy("naive", ...)`` with the recipe's per-iteration plugins: LR schedule, LPA warm-up

Every round runs one epoch of each candidate (order rotated each round) on a fresh copy of the same initial
model; what is timed is the epoch (for Avalanche ``strategy.train``, which includes its per-experience setup:
head adaptation, optimizer update, loader creation), not building the strategy. The report gives median
images/s and the median of per-round ratios to ``bare``.

    python benchmarks/e2e_throughput.py                         # tiny preset, 2048 images, batch 64, 5 rounds
    python benchmarks/e2e_throughput.py --model lpa_vit_cifar --images 1024 --batch 32
    python benchmarks/e2e_throughput.py --device cuda --model lpa_vit_cifar --images 8192 --batch 128 --precision bf16

On CUDA the data stay on the CPU, as a dataset on disk would, and every batch is copied to the GPU (Avalanche
does this for its strategies; the bare loop does the same); the clock stops after ``torch.cuda.synchronize``.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import avalanche_lpa.models  # noqa: E402,F401  (registers the timm models)
from avalanche_lpa.data import TargetTensorDataset  # noqa: E402
from avalanche_lpa.metrics import cil_evaluator  # noqa: E402
from avalanche_lpa.training import build_strategy  # noqa: E402


def make_data(n: int, classes: int, shape, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(n // classes)
    return TargetTensorDataset(torch.randn(len(labels), *shape, generator=g), labels)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_epoch(model, data, batch: int, device: torch.device, precision: str = "fp32") -> float:
    """Seconds for one epoch of a plain training loop (forward under autocast for ``precision="bf16"``)."""
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    _sync(device)
    start = time.perf_counter()
    for x, y in DataLoader(data, batch_size=batch, shuffle=True):
        x, y = x.to(device), y.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    _sync(device)
    return time.perf_counter() - start


def avalanche_epoch(kind: str, model, experience, batch: int, device: torch.device, precision: str = "fp32") -> float:
    """Seconds of ``strategy.train(experience)`` for one epoch (building the strategy is not timed: once per run)."""
    options = dict(train_mb_size=batch, train_epochs=1, lr=1e-3, eval_mb_size=batch, precision=precision)
    if kind == "recipe":
        options.update(lr_schedule={"warmup_epochs": 0.5}, lpa_warmup=True)
    evaluator = cil_evaluator(loggers=[]) if kind == "naive+ev" else None
    strategy = build_strategy("naive", model, device=device, evaluator=evaluator or _silent_evaluator(), **options)
    _sync(device)
    start = time.perf_counter()
    strategy.train(experience, num_workers=0)
    _sync(device)
    return time.perf_counter() - start


def _silent_evaluator():
    from avalanche.training.plugins import EvaluationPlugin

    return EvaluationPlugin(loggers=[])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="lpa_vit_tiny")
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="forward-pass precision")
    parser.add_argument("--json", default="benchmarks/results/e2e_throughput.json")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available here")
    warnings.filterwarnings("ignore")

    from avalanche.benchmarks import nc_benchmark

    base = timm.create_model(args.model, drop_path_rate=0.0)
    shape = (base.in_chans, *base.img_size)
    data = make_data(args.images, args.classes, shape)
    experience = nc_benchmark(data, data, n_experiences=1, task_labels=False, seed=0).train_stream[0]
    fixed = timm.create_model(args.model, drop_path_rate=0.0, num_classes=args.classes)

    candidates = {
        "bare": lambda: bare_epoch(copy.deepcopy(fixed), data, args.batch, device, args.precision),
        "naive": lambda: avalanche_epoch("naive", copy.deepcopy(base), experience, args.batch, device, args.precision),
        "naive+ev": lambda: avalanche_epoch("naive+ev", copy.deepcopy(base), experience, args.batch, device,
                                            args.precision),
        "recipe": lambda: avalanche_epoch("recipe", copy.deepcopy(base), experience, args.batch, device,
                                          args.precision),
    }
    names = list(candidates)
    candidates["bare"]()  # warm-up (allocator, thread pools; on CUDA the context and kernel selection)
    rates = {n: [] for n in names}
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            rates[name].append(len(data) / candidates[name]())
    report = {"model": args.model, "images": args.images, "batch": args.batch, "rounds": args.rounds,
              "device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
              "precision": args.precision, "threads": torch.get_num_threads(), "torch": torch.__version__,
              "candidates": {}}
    print(f"{args.model}, {args.images} images, batch {args.batch}, {args.rounds} rounds, {device}, {args.precision}, "
          f"{torch.get_num_threads()} threads")
    print(f"  {'candidate':<10}{'images/s':>10}{'/ bare':>9}")
    for name in names:
        ratio = statistics.median(a / b for a, b in zip(rates[name], rates["bare"]))
        report["candidates"][name] = {"images_per_s": statistics.median(rates[name]), "ratio_to_bare": ratio}
        print(f"  {name:<10}{statistics.median(rates[name]):>10.1f}{ratio:>9.3f}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
