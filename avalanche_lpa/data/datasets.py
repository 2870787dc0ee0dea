"""The real datasets' locations and downloads, and Split CIFAR-100 and Split Fashion-MNIST.

Datasets live where Avalanche keeps them (``default_dataset_location(name)``, ``~/.avalanche/data/<name>``)
unless ``$AVALANCHE_LPA_DATA`` or an explicit root (``--data-root``) says otherwise. A missing CIFAR-100 or
Fashion-MNIST is downloaded there through torchvision, as Avalanche's own benchmarks do, unless
``download=False`` (``--no-download``); a dataset that is missing and cannot be downloaded, or a data root that
is a file or unreadable, raises :class:`DatasetNotFoundError` whose one-line message names the expected layout,
what failed and how to provide the files. What each dataset's files, statistics and sizes are is the dataset
table's (:mod:`.registry`); CIFAR-100 and Fashion-MNIST load through one function over it, :func:`split_torchvision`.
"""
from __future__ import annotations

import contextlib
import gzip
import io
import os
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from avalanche.benchmarks.datasets import default_dataset_location

from ..errors import one_line
from .integrity import DatasetNotFoundError, check_files
from .registry import DATASETS, DatasetInfo, dataset_info
from .splits import classic_split
from .transforms import ModelInput, eval_transform, resized, train_transform

__all__ = [
    "AVALANCHE_DATASET_NAMES",
    "DEBIAN_FASHION_MNIST",
    "DatasetNotFoundError",
    "check_data_root",
    "data_location",
    "default_data_root",
    "split_cifar100",
    "split_fashion_mnist",
    "split_torchvision",
]

#: Where the Debian package ``dataset-fashion-mnist`` keeps the gzipped files (:func:`split_fashion_mnist` reads them).
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


#: Avalanche's folder name of each dataset under its default dataset location (the table's ``avalanche_name``).
AVALANCHE_DATASET_NAMES = {name: info.avalanche_name for name, info in DATASETS.items() if info.avalanche_name}


def _root_help(holds: str) -> str:
    return f"pass the folder that holds {holds} with --data-root (or set $AVALANCHE_LPA_DATA)"


def default_data_root(dataset: str = "cifar100") -> Path:
    """``$AVALANCHE_LPA_DATA`` if set, else Avalanche's default location of ``dataset`` (``~/.avalanche/data/<name>``)."""
    env = os.environ.get("AVALANCHE_LPA_DATA")
    if env:
        return Path(env).expanduser()
    info = DATASETS.get(dataset)  # a name outside the table is Avalanche's folder name itself
    name = info.avalanche_name if info is not None and info.avalanche_name else dataset
    return Path(default_dataset_location(name)).expanduser()


def data_location(dataset: str, root: Optional[os.PathLike] = None) -> Optional[Path]:
    """The folder a dataset of the table reads its files from (``None`` for one without files: ``synthetic``).

    Args:
        dataset: its name in :data:`~avalanche_lpa.data.DATASETS`.
        root: the data root (``data.root``); ``None``: :func:`default_data_root`.
    """
    info = dataset_info(dataset)
    if not info.files:
        return None
    base = Path(root).expanduser() if root is not None else default_data_root(info.name)
    return base / info.folder if info.folder else base


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
            f"{name} not found (expected {expected}) and the download into {root} failed ({one_line(error, kind=True)}); {manual}"
        ) from None


def _gzipped_sources(info: DatasetInfo, root: Path, packaged: Optional[Path]) -> List[Path]:
    """Folders that hold every file of ``info`` gzipped: the root, the folders down to its files, ``packaged``."""
    below = [root]
    for part in Path(info.folder).parts:
        below.append(below[-1] / part)
    candidates = below + ([packaged] if packaged is not None else [])
    return [d for d in candidates if all((d / f"{name}.gz").is_file() for name in info.files)]


def _unpack(info: DatasetInfo, source: Path, folder: Path) -> None:
    """Un-gzips the files of ``info`` from ``source`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in info.files:
        # A temporary file of this process's own: runs started together (a --compare on two shells) each unpack
        # in full and the last rename wins, with the same bytes.
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
        try:
            with gzip.open(source / f"{name}.gz", "rb") as src, os.fdopen(handle, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(temporary, folder / name)
        except (EOFError, gzip.BadGzipFile, zlib.error) as error:  # a truncated or garbled archive
            raise DatasetNotFoundError(
                f"{info.title}: {source / (name + '.gz')} is damaged ({one_line(error, 120, kind=True)}); replace it "
                "(or remove it to use another source), or pass another folder with --data-root"
            ) from None
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)


def _dataset_root(info: DatasetInfo, root: Optional[os.PathLike], download: bool,
                  packaged: Optional[Path] = None) -> Path:
    """A folder with ``<folder>/<files>`` of ``info``: already there, unpacked from gzipped files (the root's own
    or ``packaged``, a system package's folder), or downloaded with torchvision if allowed."""
    holds = f"{info.folder or Path(info.files[0]).parts[0]}/"  # the folder the root holds, for messages
    root = check_data_root(root if root is not None else default_data_root(info.name), holds)
    folder = root / info.folder
    missing = [name for name in info.files if not (folder / name).is_file()]
    if not missing:
        check_files(info, root, download)
        return root
    sources = _gzipped_sources(info, root, packaged) if info.gzipped else []
    if sources:
        _unpack(info, sources[0], folder)
        check_files(info, root, download)
        return root
    expected = f"{folder}/{{{','.join(info.files)}}}"
    manual = f"{info.manual.format(root=root, folder=folder, packaged=packaged)}, or {_root_help(holds)}"
    if not download or info.download_size is None:
        elsewhere = f" or the gzipped files in {packaged}," if packaged is not None else ""
        why = ("downloading is off (--no-download / data.download: false); drop --no-download to download it there"
               if info.download_size is not None else "it cannot be downloaded")
        partly = f" (missing: {', '.join(missing)})" if len(missing) < len(info.files) else ""
        raise DatasetNotFoundError(
            f"{info.title} not found: expected {expected}{partly}{elsewhere} and {why}, or {manual}"
        )
    _download(info.title, info.torchvision, root, expected, info.download_size, manual)
    if any(not (folder / name).is_file() for name in info.files):  # e.g. an archive of another layout
        raise DatasetNotFoundError(f"{info.title} was downloaded but {expected} is incomplete; {manual}")
    check_files(info, root, download)
    return root


def table_transforms(info: DatasetInfo, augment: bool, auto_augment: Optional[str],
                     model_input: Optional[ModelInput] = None, random_resized_crop: Optional[bool] = None) -> Tuple:
    """Training and evaluation transforms of a table dataset at its own size (a crop with the entry's padding and a
    flip, ``auto_augment`` if given, the entry's statistics), or brought to a pretrained model's (``model_input``).

    Args:
        random_resized_crop: as :func:`~avalanche_lpa.data.train_transform` (``None``: for images above 32 px).
    """
    train_tf = train_transform(
        info.input_shape[-1], padding=info.crop_padding if augment else 0, hflip=0.5 if augment else 0.0,
        auto_augment=auto_augment if augment else None, mean=info.mean, std=info.std,
        random_resized_crop=random_resized_crop,
    )
    eval_tf = eval_transform(mean=info.mean, std=info.std)
    if model_input is not None:
        native = info.input_shape[-1]
        train_tf = resized(train_tf, model_input.size, model_input.mean, model_input.std, native)
        eval_tf = resized(eval_tf, model_input.size, model_input.mean, model_input.std, native)
    return train_tf, eval_tf


def split_torchvision(
    dataset: str,
    root: Optional[os.PathLike] = None,
    n_experiences: int = 10,
    class_order: Optional[Sequence[int]] = None,
    seed: int = 1993,
    augment: bool = True,
    auto_augment: Optional[str] = None,
    max_train_per_class: Optional[int] = None,
    max_test_per_class: Optional[int] = None,
    download: bool = True,
    packaged: Optional[Path] = None,
    initial_classes: Optional[int] = None,
    model_input: Optional[ModelInput] = None,
):
    """The class-incremental split of a torchvision dataset of the table (CIFAR-100, Fashion-MNIST), as
    Avalanche's classic benchmark of it (``SplitCIFAR100``, ``SplitFMNIST``).

    Args:
        dataset: its name in :data:`~avalanche_lpa.data.DATASETS` (files, statistics, crop padding).
        root: folder holding the entry's ``<folder>/<files>`` (torchvision's layout); ``None``:
            :func:`default_data_root`.
        n_experiences: number of experiences.
        class_order: original class ids in arrival order (``None``: Avalanche's shuffle with ``seed``).
        seed: seed of the class shuffle (when no order is given) and of subsampling.
        augment: random crop (the entry's padding) and horizontal flip on training images.
        auto_augment: timm auto-augment policy added to them (the authors: ``"rand-m9-mstd0.5-inc1"``).
        max_train_per_class: keep at most this many training images per class (quick runs).
        max_test_per_class: the same for test images.
        download: download the dataset into ``root`` when it is missing there.
        packaged: a folder of the gzipped files (a system package's), tried before downloading.
        initial_classes: classes of the first experience (a B50 split: half); ``None``: equal shares.
        model_input: bring the images to a pretrained model's size and normalisation (``None``: the table's).
    """
    info = dataset_info(dataset)
    root = _dataset_root(info, root, download, packaged)
    train_tf, eval_tf = table_transforms(info, augment, auto_augment, model_input)
    return classic_split(
        info.benchmark, info.torchvision, str(root), n_experiences=n_experiences, class_order=class_order, seed=seed,
        max_train_per_class=max_train_per_class, max_test_per_class=max_test_per_class, train_tf=train_tf,
        eval_tf=eval_tf, initial_classes=initial_classes,
    )


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
    initial_classes: Optional[int] = None,
    model_input: Optional[ModelInput] = None,
):
    """Split CIFAR-100 (Avalanche's ``SplitCIFAR100``) read from ``<root>/cifar-100-python``.

    :func:`split_torchvision` of ``"cifar100"``: ``n_experiences`` is 10, 20 or 50 for the B0 protocol; the other
    arguments as there.
    """
    return split_torchvision(
        "cifar100", root, n_experiences, class_order, seed, augment, auto_augment, max_train_per_class,
        max_test_per_class, download, initial_classes=initial_classes, model_input=model_input,
    )


def split_fashion_mnist(
    root: Optional[os.PathLike] = None,
    n_experiences: int = 5,
    class_order: Optional[Sequence[int]] = None,
    seed: int = 1993,
    augment: bool = True,
    max_train_per_class: Optional[int] = None,
    max_test_per_class: Optional[int] = None,
    download: bool = True,
    initial_classes: Optional[int] = None,
    model_input: Optional[ModelInput] = None,
):
    """Split Fashion-MNIST (Avalanche's ``SplitFMNIST``; 28 px, 1 channel).

    Looks for ``<root>/FashionMNIST/raw`` (torchvision's layout); if only the gzipped files exist (e.g. the
    Debian package ``dataset-fashion-mnist`` in ``/usr/share/datasets/fashion-mnist``) they are unpacked
    into ``<root>/FashionMNIST/raw`` once; otherwise Fashion-MNIST is downloaded there (unless
    ``download=False``). :func:`split_torchvision` of ``"fashion_mnist"``; arguments as there.
    """
    # DEBIAN_FASHION_MNIST is read here, when called, so that it can be moved (tests, other distributions).
    return split_torchvision(
        "fashion_mnist", root, n_experiences, class_order, seed, augment, None, max_train_per_class,
        max_test_per_class, download, packaged=DEBIAN_FASHION_MNIST, initial_classes=initial_classes,
        model_input=model_input,
    )
