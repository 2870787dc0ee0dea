"""Whether the files of a dataset read: a damaged file (truncated, garbled, changed) is one line naming it and the
fix, found on the disk before a run starts, so that torchvision (whose datasets Avalanche builds with
``download=True``) never goes to the network for it; an image of a folder dataset that does not decode, one line
naming it when a loader reads it."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

from torchvision import datasets

from ..errors import one_line
from .registry import DatasetInfo

__all__ = ["DatasetNotFoundError", "check_files", "read_image"]


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not on disk; the message says where it was expected and how to provide it."""


def _checksums(torchvision_dataset: Any) -> Dict[str, str]:
    """``{file: md5}`` torchvision knows for a dataset's files (CIFAR's pickles; none for MNIST's raw idx files)."""
    listed = list(getattr(torchvision_dataset, "train_list", [])) + list(getattr(torchvision_dataset, "test_list", []))
    meta = getattr(torchvision_dataset, "meta", None)
    if isinstance(meta, dict) and "filename" in meta:
        listed.append([meta["filename"], meta["md5"]])
    return {name: md5 for name, md5 in listed}


def _file_problem(info: DatasetInfo, path: Path) -> Optional[str]:
    """Why a file of ``info`` cannot be read (``None`` when it reads): its checksum differs from torchvision's, or
    its idx header and contents disagree (MNIST's family, truncated files)."""
    md5 = _checksums(info.torchvision).get(path.name)
    if md5 is not None:
        # Looked up on torchvision's module when called, as torchvision's own check is (tests patch it there).
        return None if datasets.cifar.check_integrity(str(path), md5) else "its checksum differs from the original's"
    if isinstance(info.torchvision, type) and issubclass(info.torchvision, datasets.MNIST):
        try:
            datasets.mnist.read_sn3_pascalvincent_tensor(str(path), strict=False)
        except Exception as error:  # a truncated or garbled idx file: torch/numpy raise several types
            return f"it does not read as an idx file: {one_line(error, 120, kind=True)}"
    return None


def check_files(info: DatasetInfo, root: Path, download: bool = False) -> None:
    """Raises :class:`DatasetNotFoundError` (one line naming the file and the fix) if a file of ``info`` in ``root``
    is damaged: truncated, garbled or changed. Reads only the disk: a damaged file never sends torchvision (whose
    datasets Avalanche builds with ``download=True``) to the network.

    Args:
        info: the dataset's table entry.
        root: the data root holding ``<folder>/<files>``.
        download: whether the run may download (the fix it suggests).
    """
    folder = root / info.folder
    for name in info.files:
        problem = _file_problem(info, folder / name)
        if problem is None:
            continue
        if info.download_size is None:
            fix = f"replace it ({info.manual.format(root=root, folder=folder, packaged='')})"
        elif download:
            fix = "delete it and run again to download it anew"
        else:
            fix = "delete it and run again without --no-download to download it anew, or copy it again"
        raise DatasetNotFoundError(f"{info.title}: {folder / name} is damaged ({problem}); {fix}, or pass another "
                                   "folder with --data-root")


def read_image(path: str) -> Any:
    """An image file as an RGB PIL image (torchvision's ``default_loader``); one that does not decode is a
    :class:`DatasetNotFoundError` naming it, raised when a loader reads it (the images of ImageNet are too many to
    read before a run starts)."""
    try:
        return datasets.folder.default_loader(path)
    except (OSError, ValueError, SyntaxError) as error:  # PIL: UnidentifiedImageError, truncated files, bad headers
        raise DatasetNotFoundError(
            f"{path} cannot be read as an image ({one_line(error, 120, kind=True)}); replace or remove it (a class "
            "keeps its other images), or pass another folder with --data-root"
        ) from None
