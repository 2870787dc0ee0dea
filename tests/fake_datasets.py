"""Small fake datasets in the layouts the real loaders read (torchvision's CIFAR-100 pickles and Fashion-MNIST
idx files, ImageNet's ``train/`` and ``val/`` folders of JPEGs), plus a launcher that runs a script with the
CIFAR md5 check patched (for subprocesses such as torchrun workers, where pytest's monkeypatch cannot reach).

Fake files cannot match torchvision's md5 sums: only the checksum is patched, the loading code is real.
"""
from __future__ import annotations

import gzip
import pickle
import runpy
import struct
import sys
from pathlib import Path
from typing import Dict, Iterable, List

import numpy as np
from PIL import Image


def make_fake_cifar100(root: Path, train_per_class: int = 4, test_per_class: int = 2) -> Path:
    """``root/cifar-100-python/{train,test,meta}`` with random 32x32 images; returns ``root``."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        labels = np.repeat(np.arange(100), per_class)
        images = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        with open(folder / split, "wb") as f:
            pickle.dump({"data": images, "fine_labels": labels.tolist(), "coarse_labels": (labels // 5).tolist()}, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"class{i}" for i in range(100)], "coarse_label_names": []}, f)
    return root


def _idx(path: Path, array: np.ndarray) -> None:
    magic = 2049 if array.ndim == 1 else 2051
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", n) for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def make_fake_fashion_mnist_gz(folder: Path, per_class: int = 3) -> Path:
    """The four gzipped idx files of Fashion-MNIST (random 28x28 images) in ``folder``; returns ``folder``."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        labels = np.repeat(np.arange(10), per_class)
        _idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (len(labels), 28, 28)))
        _idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


def make_fake_imagenet(root: Path, wnids: Iterable[str], train_per_class: int = 2, val_per_class: int = 1,
                       size: int = 40) -> Path:
    """``root/{train,val}/<wnid>/*.JPEG`` with random images; returns ``root``."""
    rng = np.random.default_rng(0)
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        for wnid in wnids:
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, size=(size, size + 4, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{wnid}_{i}.JPEG", quality=90)
    return root


def make_fake_cub(root: Path, classes: int = 6, per_class: int = 4, size: int = 40) -> Path:
    """CUB-200-2011's layout: ``root/images/<NNN.Name>/*.jpg``, ``images.txt`` (id, path) and
    ``train_test_split.txt`` (id, 1 for training: all but each class's last image); returns ``root``."""
    rng = np.random.default_rng(0)
    images, split = [], []
    for c in range(1, classes + 1):
        folder = root / "images" / f"{c:03d}.Bird_{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, size=(size, size + 6, 3), dtype=np.uint8)).save(folder / f"b{i}.jpg")
            images.append(f"{len(images) + 1} {folder.name}/b{i}.jpg")
            split.append(f"{len(split) + 1} {int(i < per_class - 1)}")
    (root / "images.txt").write_text("\n".join(images) + "\n")
    (root / "train_test_split.txt").write_text("\n".join(split) + "\n")
    return root


def make_fake_tiny_imagenet(root: Path, train_per_class: int = 2, size: int = 64) -> Path:
    """Tiny-ImageNet's layout below ``root/tiny-imagenet-200`` (200 classes, as Avalanche's reader wants):
    ``wnids.txt``, ``train/<wnid>/images/*.JPEG``, ``val/images/*.JPEG`` with ``val/val_annotations.txt``; returns
    ``root``."""
    rng = np.random.default_rng(0)
    data = root / "tiny-imagenet-200"
    wnids = [f"n{i:08d}" for i in range(200)]
    (data / "val" / "images").mkdir(parents=True)
    (data / "wnids.txt").write_text("\n".join(wnids) + "\n")
    annotations = []
    for index, wnid in enumerate(wnids):
        folder = data / "train" / wnid / "images"
        folder.mkdir(parents=True)
        for i in range(train_per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{wnid}_{i}.JPEG")
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
            data / "val" / "images" / f"val_{index}.JPEG")
        annotations.append(f"val_{index}.JPEG\t{wnid}\t0\t0\t{size}\t{size}")
    (data / "val" / "val_annotations.txt").write_text("\n".join(annotations) + "\n")
    return root


def make_fake_core50(root: Path, train_per_class: int = 2, test_per_class: int = 1, size: int = 128) -> Path:
    """CORe50's layout in ``root`` as Avalanche downloads it, as far as the NC protocol of run 0 reads it:
    ``core50_128x128/s<session>/o<object>/C_<ss>_<oo>_<nnn>.png`` (sessions 1, 2 for training, 3 for testing) and
    ``batches_filelists/NC_inc/run0/train_batch_00..08_filelist.txt`` + ``test_filelist.txt``, whose labels number
    the 50 objects in a shuffled order (as the protocol's runs relabel them) and whose batches bring 10, then 8 x 5
    of them; returns ``root``."""
    rng = np.random.default_rng(0)
    label_of = {obj: int(label) for obj, label in zip(range(1, 51), rng.permutation(50))}
    arrival = [int(label) for label in rng.permutation(50)]  # the protocol's class order of the fake run 0
    lines: Dict[str, List[str]] = {}
    for obj, label in label_of.items():
        batch = arrival.index(label)
        batch = 0 if batch < 10 else 1 + (batch - 10) // 5
        for session, count, split in ((1, train_per_class, f"train_batch_{batch:02d}"), (3, test_per_class, "test")):
            folder = root / "core50_128x128" / f"s{session}" / f"o{obj}"
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                name = f"C_{session:02d}_{obj:02d}_{index:03d}.png"
                colour = rng.integers(0, 256, 3, dtype=np.uint8)
                Image.fromarray(np.broadcast_to(colour, (size, size, 3)).copy()).save(folder / name)
                lines.setdefault(split, []).append(f"s{session}/o{obj}/{name} {label}")
    lists = root / "batches_filelists" / "NC_inc" / "run0"
    lists.mkdir(parents=True)
    for split, entries in lines.items():
        (lists / f"{split}_filelist.txt").write_text("\n".join(entries) + "\n")
    return root


def _launch() -> None:
    """``python tests/fake_datasets.py SCRIPT ARGS...``: runs SCRIPT as ``__main__`` with CIFAR's md5 check off."""
    import torchvision.datasets.cifar

    torchvision.datasets.cifar.check_integrity = lambda *args, **kwargs: True
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    _launch()
