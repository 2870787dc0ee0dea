"""What a checkpoint inside an experience costs: size of ``checkpoint.pkl`` and seconds to write and read it.

The strategy is built by the runner's own code from a shipped config, on fake data of the real sizes (CIFAR-100:
50,000 + 10,000 random 32x32 images in torchvision's layout; ImageNet-100: 100 x 1,300 + 100 x 50 empty JPEG
files, which an ``ImageFolder`` lists without opening), and put where a checkpoint inside experience 2 finds it:
its training loader made, AdamW holding its moments after one step, the distillation teacher copied. The model
keeps the head it was built with and the replay memory is left empty (a few KiB of head weights and of indices
into the dataset less than in a real run).

    python benchmarks/checkpoint_cost.py                  # both configs, 3 writes each
    python benchmarks/checkpoint_cost.py --configs cifar100_b0_10steps --repeats 1

Writes ``benchmarks/results/checkpoint_cost.json`` and prints a table.
"""
from __future__ import annotations

import argparse
import copy
import json
import pickle
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from avalanche_lpa.config import load_config  # noqa: E402
from avalanche_lpa.runner import build_model  # noqa: E402
from avalanche_lpa.runner.benchmark import build_benchmark  # noqa: E402
from avalanche_lpa.runner.checkpoint import load_checkpoint, save_checkpoint_atomic  # noqa: E402
from avalanche_lpa.runner.loggers import evaluator  # noqa: E402
from avalanche_lpa.runner.midway import checkpoint_plugin  # noqa: E402
from avalanche_lpa.plugins import OldSampleDistillationPlugin  # noqa: E402
from avalanche_lpa.training import build_strategy  # noqa: E402


def fake_cifar100(root: Path) -> Path:
    """CIFAR-100 in torchvision's layout with random images (500 / 100 per class, as the real one)."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 500), ("test", 100)):
        labels = np.repeat(np.arange(100), per_class)
        images = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        with open(folder / split, "wb") as handle:
            pickle.dump({"data": images, "fine_labels": labels.tolist(), "coarse_labels": (labels // 5).tolist()},
                        handle)
    with open(folder / "meta", "wb") as handle:
        pickle.dump({"fine_label_names": [f"class{i}" for i in range(100)], "coarse_label_names": []}, handle)
    return root


def fake_imagenet100(root: Path) -> Path:
    """The authors' 100 ImageNet classes, 1,300 training and 50 validation files each (empty)."""
    wnids = (REPO / "avalanche_lpa" / "data" / "imagenet100_wnids.txt").read_text().split()
    for split, count in (("train", 1300), ("val", 50)):
        for wnid in wnids:
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(count):
                (folder / f"{wnid}_{i}.JPEG").touch()
    return root


def strategy_inside_experience_2(config):
    """The run's strategy as it stands during experience 2 (index 1) of the config."""
    torch.manual_seed(0)
    benchmark = build_benchmark(config.data, config.seed, download=False)
    model = build_model(config, benchmark.n_classes)
    strategy = build_strategy(config.strategy, model, evaluator=evaluator([], config), device="cpu",
                              num_classes=benchmark.n_classes)
    checkpoint_plugin(strategy)
    strategy.experience = benchmark.train_stream[1]
    strategy.clock.train_exp_counter = 1
    strategy.is_training = True
    strategy.train_dataset_adaptation()
    strategy.make_train_dataloader(num_workers=0, shuffle=True)
    for group in strategy.optimizer.param_groups:
        for param in group["params"]:
            param.grad = torch.zeros_like(param)
    strategy.optimizer.step()  # AdamW's two moments per parameter now exist
    for plugin in strategy.plugins:
        if isinstance(plugin, OldSampleDistillationPlugin):
            plugin.teacher = copy.deepcopy(strategy.model).eval()
    return strategy, sum(p.numel() for p in strategy.model.parameters())


def measure(name: str, data_root: Path, repeats: int) -> dict:
    config = load_config(name,
                         [f"data.root={data_root}", "data.num_workers=0", "device=cpu"])
    strategy, params = strategy_inside_experience_2(config)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "checkpoint.pkl"
        writes, reads = [], []
        for _ in range(repeats):
            started = time.perf_counter()
            save_checkpoint_atomic(strategy, path)
            writes.append(time.perf_counter() - started)
            started = time.perf_counter()
            load_checkpoint(copy.copy(strategy), path, map_location="cpu")
            reads.append(time.perf_counter() - started)
        size = path.stat().st_size
    return {"config": name, "params": params, "size_mib": size / 2**20, "write_s": statistics.median(writes),
            "read_s": statistics.median(reads), "repeats": repeats}


def main() -> None:
    import torchvision.datasets.cifar

    # The fake files cannot match torchvision's md5 sums: only the checksum is skipped, the loading is real.
    torchvision.datasets.cifar.check_integrity = lambda *args, **kwargs: True
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["cifar100_b0_10steps", "imagenet100_10steps"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.configs:
            root = Path(scratch) / name
            (fake_imagenet100 if name.startswith("imagenet") else fake_cifar100)(root)
            rows.append(measure(name, root, args.repeats))
            print(f"{name}: {rows[-1]['params'] / 1e6:.2f} M parameters, checkpoint {rows[-1]['size_mib']:.1f} MiB, "
                  f"write {rows[-1]['write_s']:.2f} s, read {rows[-1]['read_s']:.2f} s", flush=True)
    out = REPO / "benchmarks" / "results" / "checkpoint_cost.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__}
    out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
