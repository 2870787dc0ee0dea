"""The dataset table: one :class:`DatasetInfo` per dataset, the only place that states a dataset's facts.

Config validation, the benchmark builder, the model presets and the runner all read :data:`DATASETS`, so adding
a dataset is adding an entry (``register_dataset(DatasetInfo(...))``) whose loader builds its benchmark.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

from avalanche.benchmarks.classic import CORe50, SplitCIFAR100, SplitFMNIST, SplitTinyImageNet
from avalanche.benchmarks.datasets import CORe50Dataset, TinyImagenet
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torchvision import datasets

__all__ = ["DATASETS", "DatasetInfo", "dataset_info", "register_dataset"]


@dataclass(frozen=True)
class DatasetInfo:
    """What the package knows about one dataset.

    Attributes:
        name: its key in configs (``data.dataset``).
        title: its name in messages (``"CIFAR-100"``).
        input_shape: ``(channels, height, width)`` of the images its loader yields (a loader keyword
            ``img_size`` / ``in_chans`` overrides it: ``data.synthetic``).
        mean: per-channel normalisation mean.
        std: per-channel normalisation standard deviation.
        patch_size: patch side of the model presets for these images (divides height and width).
        loader: builds the benchmark, called as ``loader(n_experiences=, class_order=, seed=, **options)``.
        options: the ``data`` config keys passed on to the loader as keywords (a section, such as
            ``data.synthetic``, as its keys).
        num_classes: classes of the benchmark (``None``: ``classes_per_experience`` per experience, or counted by
            the loader, ``measure_shape``).
        classes_per_experience: classes each experience adds, for a benchmark of no fixed size.
        measure_shape: for a dataset whose files decide its classes and image shape (an image folder): returns
            ``(channels, height, width)`` from the loader's keywords; its loader checks the split.
        avalanche_name: its folder under Avalanche's ``default_dataset_location`` (the default data root).
        folder: where its files sit below the data root.
        files: the files (or folders) its loader needs in ``folder``.
        torchvision: the torchvision dataset that reads (and downloads) the files.
        benchmark: Avalanche's classic benchmark over that dataset (``SplitCIFAR100``).
        download_size: the download, for the notice (``None``: it cannot be downloaded).
        gzipped: the files may come gzipped (``<file>.gz``) and are unpacked into ``folder``.
        manual: how to provide the files by hand, for errors (``{root}``, ``{folder}``, ``{packaged}`` are filled).
        crop_padding: zero padding of the random crop of training images.
    """

    name: str
    title: str
    input_shape: Tuple[int, int, int]
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    patch_size: int
    loader: Callable[..., Any]
    options: Tuple[str, ...] = ()
    num_classes: Optional[int] = None
    classes_per_experience: Optional[int] = None
    avalanche_name: Optional[str] = None
    folder: str = ""
    files: Tuple[str, ...] = ()
    torchvision: Optional[Callable[..., Any]] = None
    benchmark: Optional[Callable[..., Any]] = None
    download_size: Optional[str] = None
    gzipped: bool = False
    manual: str = ""
    crop_padding: int = 4
    measure_shape: Optional[Callable[..., Tuple[int, int, int]]] = None

    def __post_init__(self) -> None:
        channels, height, width = self.input_shape
        problems = []
        if self.measure_shape is not None:
            if self.num_classes is not None or self.classes_per_experience is not None:
                problems.append("a dataset whose files decide its classes (measure_shape) gives no class count")
        elif (self.num_classes is None) == (self.classes_per_experience is None):
            problems.append("give exactly one of num_classes and classes_per_experience")
        if self.measure_shape is None and (self.num_classes or self.classes_per_experience or 0) < 1 and not problems:
            problems.append("its classes must be at least 1")
        if not len(self.mean) == len(self.std) == channels:
            problems.append(f"mean and std need one value per channel ({channels})")
        if self.patch_size < 1 or height % self.patch_size or width % self.patch_size:
            problems.append(f"patch_size {self.patch_size} must divide the {height}x{width} images")
        if problems:
            raise ValueError(f"dataset {self.name!r}: {'; '.join(problems)}")

    def classes(self, n_experiences: int) -> Optional[int]:
        """Classes of its benchmark in ``n_experiences`` experiences (``None``: counted by its loader)."""
        if self.num_classes is not None:
            return self.num_classes
        return None if self.classes_per_experience is None else self.classes_per_experience * n_experiences


def _package_loader(name: str) -> Callable[..., Any]:
    """The loader ``name`` of :mod:`avalanche_lpa.data`, looked up when called.

    The loaders read this table (statistics, files), so the table cannot import them: it names them instead.
    """

    def load(**kwargs: Any) -> Any:
        return getattr(importlib.import_module(__package__), name)(**kwargs)

    load.__name__ = load.__qualname__ = name
    return load


# Keys of the data section that every loader of files takes.
_FILE_OPTIONS = ("root", "augment", "max_train_per_class", "max_test_per_class", "initial_classes")
# Loaders that can bring their images to a pretrained model's size and statistics take ``model_input`` (not a
# config key: the runner reads it from the model).
RESIZING = "model_input"
_CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
_TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
_CORE50_URL = "https://vlomonaco.github.io/core50/"
_CORE50_NC_LISTS = "batches_filelists/NC_inc/run0"  # data.core50.CORE50_NC_LISTS (the table cannot import it)

#: The datasets by config name, in the order messages list them.
DATASETS: Dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            # the authors' normalisation
            name="cifar100", title="CIFAR-100", num_classes=100, input_shape=(3, 32, 32),
            mean=(0.5071, 0.4867, 0.4408), std=(0.2675, 0.2565, 0.2761), patch_size=4,
            loader=_package_loader("split_cifar100"), options=_FILE_OPTIONS + ("auto_augment", "download", RESIZING),
            avalanche_name="cifar100", folder="cifar-100-python", files=("train", "test", "meta"),
            torchvision=datasets.CIFAR100, benchmark=SplitCIFAR100, download_size="about 170 MB",
            manual=f"on a machine with internet download {_CIFAR100_URL}, extract it into {{root}}",
        ),
        DatasetInfo(
            # mean and standard deviation of its training images
            name="fashion_mnist", title="Fashion-MNIST", num_classes=10, input_shape=(1, 28, 28),
            mean=(0.2860,), std=(0.3530,), patch_size=4,
            loader=_package_loader("split_fashion_mnist"), options=_FILE_OPTIONS + ("download", RESIZING),
            avalanche_name="fashionmnist", folder="FashionMNIST/raw",
            files=("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                   "t10k-labels-idx1-ubyte"),
            torchvision=datasets.FashionMNIST, benchmark=SplitFMNIST, download_size="about 30 MB", gzipped=True,
            manual="install the Debian package (apt-get install dataset-fashion-mnist, read from {packaged}), or put "
                   "the four *-ubyte.gz files from https://github.com/zalandoresearch/fashion-mnist into {folder}",
            crop_padding=2,
        ),
        DatasetInfo(
            # 224 px at the loader's default size; a class list (data.class_list) may pick other classes.
            # timm's ImageNet statistics, as the authors'.
            name="imagenet100", title="ImageNet-100", num_classes=100, input_shape=(3, 224, 224),
            mean=tuple(IMAGENET_DEFAULT_MEAN), std=tuple(IMAGENET_DEFAULT_STD), patch_size=16,
            loader=_package_loader("split_imagenet100"), options=_FILE_OPTIONS + ("auto_augment", "class_list", RESIZING),
            avalanche_name="imagenet", files=("train", "val"),
        ),
        DatasetInfo(
            # Avalanche's TinyImagenet reads (and downloads) it; ImageNet's statistics; patch 8: an 8x8 grid.
            name="tiny_imagenet", title="Tiny-ImageNet", num_classes=200, input_shape=(3, 64, 64),
            mean=tuple(IMAGENET_DEFAULT_MEAN), std=tuple(IMAGENET_DEFAULT_STD), patch_size=8,
            loader=_package_loader("split_tiny_imagenet"),
            options=_FILE_OPTIONS + ("auto_augment", "download", RESIZING), avalanche_name="tinyimagenet",
            folder="tiny-imagenet-200", files=("wnids.txt", "val/val_annotations.txt"),
            torchvision=TinyImagenet, benchmark=SplitTinyImageNet, download_size="about 240 MB",
            manual=f"on a machine with internet download {_TINY_IMAGENET_URL} and extract it into {{root}}",
            crop_padding=8,
        ),
        DatasetInfo(
            # Avalanche's CORe50Dataset downloads it (images and file lists); we read the NC lists of run 0 and split
            # the test list by class (data/core50.py). ImageNet's statistics, as Avalanche's CORe50; patch 16: an
            # 8x8 grid of the 128 px images.
            name="core50", title="CORe50", num_classes=50, input_shape=(3, 128, 128),
            mean=tuple(IMAGENET_DEFAULT_MEAN), std=tuple(IMAGENET_DEFAULT_STD), patch_size=16,
            loader=_package_loader("split_core50"), options=_FILE_OPTIONS + ("auto_augment", "download", RESIZING),
            avalanche_name="core50",
            files=(f"{_CORE50_NC_LISTS}/train_batch_00_filelist.txt", f"{_CORE50_NC_LISTS}/test_filelist.txt"),
            torchvision=CORe50Dataset, benchmark=CORe50, download_size="its 128 px images and file lists",
            manual=f"on a machine with internet download core50_128x128.zip and batches_filelists.zip from "
                   f"{_CORE50_URL} and extract both into {{root}}",
            crop_padding=16,
        ),
        DatasetInfo(
            # your images: <root>/train/<class>/*, <root>/test/<class>/*; data.folder gives (or the training images
            # decide) the size and statistics, so the shape and statistics here are placeholders.
            name="folder", title="image folder", input_shape=(3, 32, 32), mean=(0.5,) * 3, std=(0.25,) * 3,
            patch_size=4, loader=_package_loader("split_folder"), measure_shape=_package_loader("folder_shape"),
            options=_FILE_OPTIONS + ("auto_augment", "folder", RESIZING), avalanche_name="folder", files=("train", "test"),
            manual="put your images into {root}/train/<class>/ and {root}/test/<class>/",
        ),
        DatasetInfo(
            # in-memory class prototypes (no files); data.synthetic sets its size; pixels about standard normal.
            name="synthetic", title="synthetic", classes_per_experience=2, input_shape=(1, 8, 8),
            mean=(0.0,), std=(1.0,), patch_size=2, loader=_package_loader("split_synthetic"), options=("synthetic", "initial_classes"),
        ),
    )
}


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    """Adds (or replaces) a dataset of the table; returns it."""
    DATASETS[info.name] = info
    return info


def dataset_info(name: str) -> DatasetInfo:
    """The entry of dataset ``name``.

    Raises:
        ValueError: no such dataset (one line naming the known ones).
    """
    try:
        return DATASETS[name]
    except (KeyError, TypeError):  # TypeError: an unhashable name from a config
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}") from None
