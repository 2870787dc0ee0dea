"""Fake datasets in the real layouts, for the run-cost and input-pipeline benchmarks (random pixels, real sizes).

* :func:`write_fake_cifar100`: ``cifar-100-python/{train,test,meta}`` in torchvision's pickle layout (50,000 +
  10,000 images of 32 px at the defaults). torchvision checks the files' md5 sums, which fake files cannot match:
  :func:`trust_fake_cifar` turns that check off in this process (the loading itself stays torchvision's).
* ``python benchmarks/fake_data.py SCRIPT ARGS...`` runs a script with that check off (run_cost.py does).
* :func:`write_fake_imagenet`: ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG`` (ImageFolder layout) for the
  100 classes of the ImageNet-100 class list, as JPEG files of a given size.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Sequence

import numpy as np


def write_fake_cifar100(root: Path, train_per_class: int = 500, test_per_class: int = 100, seed: int = 0) -> Path:
    """Writes fake CIFAR-100 under ``root/cifar-100-python`` (skipped if it is there already); returns ``root``."""
    folder = Path(root) / "cifar-100-python"
    if all((folder / name).is_file() for name in ("train", "test", "meta")):
        return Path(root)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        labels = np.tile(np.arange(100), per_class)  # interleaved classes, as the real file
        images = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        with open(folder / split, "wb") as f:
            pickle.dump({"data": images, "fine_labels": labels.tolist(), "coarse_labels": (labels // 5).tolist()}, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"class{i}" for i in range(100)], "coarse_label_names": []}, f)
    return Path(root)


def trust_fake_cifar() -> None:
    """Makes torchvision accept the fake files (their md5 sums cannot match the real ones)."""
    import torchvision.datasets.cifar

    torchvision.datasets.cifar.check_integrity = lambda *args, **kwargs: True


def write_fake_imagenet(root: Path, wnids: Sequence[str], train_per_class: int, val_per_class: int,
                        size: int = 256, seed: int = 0) -> Path:
    """Writes JPEG images of ``size`` px (smooth random colours) into ``root/{train,val}/<wnid>/``; returns ``root``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        for wnid in wnids:
            folder = Path(root) / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                path = folder / f"{wnid}_{i}.JPEG"
                if not path.is_file():
                    small = rng.integers(0, 256, size=(size // 16, size // 16, 3), dtype=np.uint8)
                    Image.fromarray(small).resize((size, size), Image.BILINEAR).save(path, quality=90)
    return Path(root)


def _launch() -> None:
    """``python benchmarks/fake_data.py SCRIPT ARGS...``: runs SCRIPT as ``__main__`` with CIFAR's md5 check off."""
    import runpy
    import signal
    import sys

    trust_fake_cifar()
    # Ctrl-C (SIGINT) stops the run also when this was started in the background, where it is ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    _launch()
