"""The real datasets: Split CIFAR-100, Split Fashion-MNIST and ImageNet-100, their locations and downloads.

Datasets live where Avalanche keeps them (``default_dataset_location(name)``, ``~/.avalanche/data/<name>``)
unless ``$AVALANCHE_LPA_DATA`` or an explicit root (``--data-root``) says otherwise. A missing CIFAR-100 or
Fashion-MNIST is downloaded there through torchvision, as Avalanche's own benchmarks do, unless
``download=False`` (``--no-download``); a dataset that is missing and cannot be downloaded, or a data root that
is a file or unreadable, raises :class:`DatasetNotFoundError` whose one-line message names the expected layout,
what failed and how to provide the files.
"""
from __future__ import annotations

import contextlib
import gzip
import io
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from avalanche.benchmarks.classic import SplitCIFAR100, SplitFMNIST
from avalanche.benchmarks.datasets import default_dataset_location
from torchvision import datasets

from .splits import class_incremental_split, classic_split, subsample_per_class
from .transforms import (
    CIFAR100_MEAN,
    CIFAR100_STD,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    eval_transform,
    train_transform,
)

__all__ = [
    "AVALANCHE_DATASET_NAMES",
    "DEBIAN_FASHION_MNIST",
    "DatasetNotFoundError",
    "IMAGENET100_WNIDS",
    "authors_imagenet100",
    "check_data_root",
    "default_data_root",
    "imagenet100_classes",
    "split_cifar100",
    "split_fashion_mnist",
    "split_imagenet100",
]

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not on disk; the message says where it was expected and how to provide it."""


#: Avalanche's folder name of each dataset under its default dataset location.
AVALANCHE_DATASET_NAMES = {"cifar100": "cifar100", "fashion_mnist": "fashionmnist", "imagenet100": "imagenet"}


def _root_help(holds: str) -> str:
    return f"pass the folder that holds {holds} with --data-root (or set $AVALANCHE_LPA_DATA)"


def default_data_root(dataset: str = "cifar100") -> Path:
    """``$AVALANCHE_LPA_DATA`` if set, else Avalanche's default location of ``dataset`` (``~/.avalanche/data/<name>``)."""
    env = os.environ.get("AVALANCHE_LPA_DATA")
    if env:
        return Path(env).expanduser()
    return Path(default_dataset_location(AVALANCHE_DATASET_NAMES.get(dataset, dataset))).expanduser()


def _one_line(error: BaseException) -> str:
    """``Type: message`` on one line (torchvision's download errors span several)."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def check_data_root(root: os.PathLike, holds: str) -> Path:
    """``root`` expanded; an existing root that is a file or cannot be read is a :class:`DatasetNotFoundError`.

    Args:
        root: the data root (it may not exist yet: downloads create it).
        holds: what the root should hold, for the message (e.g. ``"cifar-100-python/"``).
    """
    root = Path(root).expanduser()
    try:
        is_file = root.exists() and not root.is_dir()
        unreadable = root.is_dir() and not os.access(root, os.R_OK | os.X_OK)
    except PermissionError:  # a parent folder is not searchable
        is_file, unreadable = False, True
    if is_file:
        raise DatasetNotFoundError(f"data root {root} is a file, not a folder; {_root_help(holds)}")
    if unreadable:
        raise DatasetNotFoundError(
            f"cannot read data root {root} (permission denied); make it readable or {_root_help(holds)}"
        )
    return root


def _download(name: str, torchvision_dataset, root: Path, expected: str, size: str, manual: str) -> None:
    """Downloads ``name`` into ``root`` with torchvision (as Avalanche's benchmarks do); one-line error on failure.

    Args:
        name: the dataset's name, for messages.
        torchvision_dataset: the torchvision class, called with ``download=True``.
        root: where the files go (torchvision's layout below it).
        expected: the files looked for, for the error.
        size: the download size, for the notice.
        manual: how to provide the files by hand, for the error.
    """
    print(f"{name} is not in {root}: downloading it there ({size}; --no-download turns this off)", flush=True)
    created = None  # the topmost folder the download creates, removed again (if left empty) when it fails
    if not root.exists():
        created = root
        while not created.parent.exists():
            created = created.parent
    chatter = io.StringIO()  # torchvision prints every failed mirror on several lines; our error says it in one
    try:
        with contextlib.redirect_stdout(chatter):
            torchvision_dataset(str(root), train=True, download=True)
    except Exception as error:  # URLError, HTTPError, timeouts, md5 mismatch (RuntimeError), disk errors ...
        if created is not None:  # leave no empty folders behind; anything partly downloaded stays
            for folder, _, _ in sorted(os.walk(created), key=lambda entry: -len(entry[0])):
                with contextlib.suppress(OSError):
                    os.rmdir(folder)
        raise DatasetNotFoundError(
            f"{name} not found (expected {expected}) and the download into {root} failed ({_one_line(error)}); {manual}"
        ) from None


_CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"


def _cifar100_missing(folder: Path) -> List[str]:
    return [name for name in ("train", "test", "meta") if not (folder / name).is_file()]


def _cifar100_root(root: Optional[os.PathLike], download: bool) -> Path:
    """A folder with ``cifar-100-python/{train,test,meta}``, downloading CIFAR-100 into it if allowed."""
    root = check_data_root(root if root is not None else default_data_root("cifar100"), "cifar-100-python/")
    folder = root / "cifar-100-python"
    missing = _cifar100_missing(folder)
    if not missing:
        return root
    manual = (
        f"on a machine with internet download {_CIFAR100_URL}, extract it into {root}, "
        f"or {_root_help('cifar-100-python/')}"
    )
    if not download:
        raise DatasetNotFoundError(
            f"CIFAR-100 not found: expected {folder}/{{train,test,meta}} (missing: {', '.join(missing)}) and "
            f"downloading is off (--no-download / data.download: false); drop --no-download to download it "
            f"there, or {manual}"
        )
    _download("CIFAR-100", datasets.CIFAR100, root, f"{folder}/{{train,test,meta}}", "about 170 MB", manual)
    if _cifar100_missing(folder):  # e.g. an archive of another layout
        raise DatasetNotFoundError(f"CIFAR-100 was downloaded but {folder}/{{train,test,meta}} is incomplete; {manual}")
    return root


def split_cifar100(
    root: Optional[os.PathLike] = None,
    n_experiences: int = 10,
    class_order: Optional[Sequence[int]] = None,
    seed: int = 1993,
    augment: bool = True,
    auto_augment: Optional[str] = None,
    max_train_per_class: Optional[int] = None,
    max_test_per_class: Optional[int] = None,
    download: bool = True,
):
    """Split CIFAR-100 (Avalanche's ``SplitCIFAR100``) read from ``<root>/cifar-100-python``.

    Args:
        root: folder holding ``cifar-100-python/{train,test,meta}`` (torchvision's layout); ``None``:
            :func:`default_data_root`.
        n_experiences: number of experiences (10, 20 or 50 for the B0 protocol).
        class_order: original class ids in arrival order (``None``: Avalanche's shuffle with ``seed``).
        seed: seed of the class shuffle (when no order is given) and of subsampling.
        augment: random crop (padding 4) and horizontal flip on training images.
        auto_augment: timm auto-augment policy added to them (the authors: ``"rand-m9-mstd0.5-inc1"``).
        max_train_per_class: keep at most this many training images per class (quick runs).
        max_test_per_class: the same for test images.
        download: download CIFAR-100 into ``root`` when it is missing there.
    """
    root = _cifar100_root(root, download)
    mean, std = CIFAR100_MEAN, CIFAR100_STD
    train_tf = train_transform(
        32, padding=4 if augment else 0, hflip=0.5 if augment else 0.0,
        auto_augment=auto_augment if augment else None, mean=mean, std=std,
    )
    eval_tf = eval_transform(mean=mean, std=std)
    return classic_split(
        SplitCIFAR100, datasets.CIFAR100, str(root), n_experiences=n_experiences, class_order=class_order, seed=seed,
        max_train_per_class=max_train_per_class, max_test_per_class=max_test_per_class, train_tf=train_tf,
        eval_tf=eval_tf,
    )


_FMNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _fashion_mnist_root(root: Optional[os.PathLike], download: bool = True) -> Path:
    """A folder with ``FashionMNIST/raw/<files>`` un-gzipped: already there, unpacked from gzipped files (the
    Debian package ``dataset-fashion-mnist``), or downloaded with torchvision if allowed."""
    root = check_data_root(root if root is not None else default_data_root("fashion_mnist"), "FashionMNIST/raw/")
    raw = root / "FashionMNIST" / "raw"
    if all((raw / name).is_file() for name in _FMNIST_FILES):
        return root
    sources = [
        d for d in (root, root / "FashionMNIST", raw, DEBIAN_FASHION_MNIST)
        if all((d / f"{n}.gz").is_file() for n in _FMNIST_FILES)
    ]
    if not sources:
        expected = f"{raw}/{{{','.join(_FMNIST_FILES)}}}"
        manual = (
            f"install the Debian package (apt-get install dataset-fashion-mnist, read from {DEBIAN_FASHION_MNIST}), "
            f"or put the four *-ubyte.gz files from https://github.com/zalandoresearch/fashion-mnist into {raw}, "
            f"or {_root_help('FashionMNIST/raw/')}"
        )
        if not download:
            raise DatasetNotFoundError(
                f"Fashion-MNIST not found: expected {expected} or the gzipped files in {DEBIAN_FASHION_MNIST}, and "
                f"downloading is off (--no-download / data.download: false); drop --no-download to download it "
                f"there, or {manual}"
            )
        _download("Fashion-MNIST", datasets.FashionMNIST, root, expected, "about 30 MB", manual)
        if not all((raw / name).is_file() for name in _FMNIST_FILES):
            raise DatasetNotFoundError(f"Fashion-MNIST was downloaded but {expected} is incomplete; {manual}")
        return root
    raw.mkdir(parents=True, exist_ok=True)
    for name in _FMNIST_FILES:
        # A temporary file of this process's own: runs started together (a --compare on two shells) each unpack
        # in full and the last rename wins, with the same bytes.
        handle, temporary = tempfile.mkstemp(dir=raw, prefix=f".{name}.", suffix=".tmp")
        try:
            with gzip.open(sources[0] / f"{name}.gz", "rb") as src, os.fdopen(handle, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(temporary, raw / name)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
    return root


def split_fashion_mnist(
    root: Optional[os.PathLike] = None,
    n_experiences: int = 5,
    class_order: Optional[Sequence[int]] = None,
    seed: int = 1993,
    augment: bool = True,
    max_train_per_class: Optional[int] = None,
    max_test_per_class: Optional[int] = None,
    download: bool = True,
):
    """Split Fashion-MNIST (Avalanche's ``SplitFMNIST``; 28 px, 1 channel).

    Looks for ``<root>/FashionMNIST/raw`` (torchvision's layout); if only the gzipped files exist (e.g. the
    Debian package ``dataset-fashion-mnist`` in ``/usr/share/datasets/fashion-mnist``) they are unpacked
    into ``<root>/FashionMNIST/raw`` once; otherwise Fashion-MNIST is downloaded there (unless
    ``download=False``). Arguments as in :func:`split_cifar100`.
    """
    root = _fashion_mnist_root(root, download)
    mean, std = FASHION_MNIST_MEAN, FASHION_MNIST_STD
    train_tf = train_transform(28, padding=2 if augment else 0, hflip=0.5 if augment else 0.0,
                               auto_augment=None, mean=mean, std=std)
    eval_tf = eval_transform(mean=mean, std=std)
    return classic_split(
        SplitFMNIST, datasets.FashionMNIST, str(root), n_experiences=n_experiences, class_order=class_order,
        seed=seed, max_train_per_class=max_train_per_class, max_test_per_class=max_test_per_class, train_tf=train_tf,
        eval_tf=eval_tf,
    )


class _ClassSubsetFolder(datasets.ImageFolder):
    """``ImageFolder`` restricted to ``classes`` (WordNet ids), labelled in that order."""

    def __init__(self, root: str, classes: Sequence[str]) -> None:
        self._wanted = list(classes)
        super().__init__(root)

    def find_classes(self, directory: str) -> Tuple[List[str], Dict[str, int]]:
        missing = [c for c in self._wanted if not (Path(directory) / c).is_dir()]
        if missing:
            raise DatasetNotFoundError(
                f"ImageNet-100: {len(missing)} class folder(s) missing under {directory} (first: {missing[0]}); "
                "check --class-list against the folder"
            )
        return self._wanted, {c: i for i, c in enumerate(self._wanted)}


#: The authors' ImageNet-100 (``val_100.txt``, the subset DyTox uses too): the first 100 ImageNet-1k classes
#: in sorted WordNet-id order, one id per line.
IMAGENET100_WNIDS = Path(__file__).with_name("imagenet100_wnids.txt")


def authors_imagenet100() -> List[str]:
    """The 100 WordNet ids of the authors' ImageNet-100, in label order."""
    return IMAGENET100_WNIDS.read_text().split()


def imagenet100_classes(root: os.PathLike, class_list: Optional[os.PathLike] = None) -> List[str]:
    """The 100 WordNet ids: from ``class_list`` (one per line) or the first 100 folders of ``<root>/train``.

    On a full ImageNet-1k folder the first 100 folders in sorted order are exactly the authors' subset
    (:func:`authors_imagenet100`).
    """
    if class_list is not None:
        path = Path(class_list).expanduser()
        if not path.is_file():
            raise DatasetNotFoundError(f"class list {path} does not exist; pass a file with one WordNet id per line")
        wnids = [line.split()[0] for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
        if len(set(wnids)) != len(wnids):
            raise ValueError(f"class list {path} repeats a WordNet id; each class must appear once")
        return wnids
    train = Path(root).expanduser() / "train"
    return sorted(d.name for d in train.iterdir() if d.is_dir())[:100]


def split_imagenet100(
    root: Optional[os.PathLike] = None,
    class_list: Optional[os.PathLike] = None,
    n_experiences: int = 10,
    class_order: Optional[Sequence[int]] = None,
    seed: int = 1993,
    augment: bool = True,
    auto_augment: Optional[str] = None,
    img_size: int = 224,
    max_train_per_class: Optional[int] = None,
    max_test_per_class: Optional[int] = None,
):
    """ImageNet-100 from a local ImageNet folder (``<root>/train/<wnid>/*``, ``<root>/val/<wnid>/*``).

    Args:
        root: the ImageNet folder.
        class_list: file with one WordNet id per line; without it the first 100 classes of ``<root>/train``
            in sorted order, which on a full ImageNet folder is the authors' subset (a warning says when the
            picked classes differ from it).
        img_size: training crop / evaluation size (224 in the paper).
        augment: the authors' training transform (random-resized crop, flip, ``auto_augment``); else the
            evaluation transform.

    The other arguments are as in :func:`split_cifar100`.
    """
    root = check_data_root(root if root is not None else default_data_root("imagenet100"), "train/ and val/")
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise DatasetNotFoundError(
                f"ImageNet not found: expected {root / split}/<wnid>/<images>; pass the folder with --data-root"
            )
    wnids = imagenet100_classes(root, class_list)
    if class_list is None and wnids != authors_imagenet100():
        warnings.warn(
            f"the first {len(wnids)} class folders of {root / 'train'} ({wnids[0]} ... {wnids[-1]}) are not the "
            f"authors' ImageNet-100 ({IMAGENET100_WNIDS.name}); pass --class-list to choose the classes",
            stacklevel=2,
        )
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    eval_tf = eval_transform(mean=mean, std=std, crop_size=img_size)
    train_tf = (train_transform(img_size, auto_augment=auto_augment, mean=mean, std=std, random_resized_crop=True)
                if augment else eval_tf)
    train = subsample_per_class(_ClassSubsetFolder(str(root / "train"), wnids), max_train_per_class, seed)
    test = subsample_per_class(_ClassSubsetFolder(str(root / "val"), wnids), max_test_per_class, seed)
    return class_incremental_split(
        train, test, n_experiences, class_order, seed, train_transform=train_tf, eval_transform=eval_tf
    )
