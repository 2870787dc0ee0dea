"""Damaged data is one line (issue 27.5): for every dataset of the table with files, a truncated, garbled or
changed file gives one line naming the file and the fix, exit 2, nothing written; ``--no-download`` never opens a
network connection (the loaders run here with sockets blocked and the damaged files in place)."""
import hashlib
from pathlib import Path

import pytest
import torch

from avalanche_lpa.cli import main
from avalanche_lpa.data import DATASETS, DatasetNotFoundError, authors_imagenet100, split_imagenet100
from avalanche_lpa.data import datasets as data_module
from avalanche_lpa.data import integrity
from avalanche_lpa.errors import user_message

from .fake_datasets import make_fake_cifar100, make_fake_fashion_mnist_gz, make_fake_imagenet


@pytest.fixture(autouse=True)
def no_network(blocked_network):
    """Every attempt to open a connection is recorded and refused; the test fails if there was one."""
    attempts = blocked_network
    yield attempts
    assert attempts == [], "a loader opened a network connection"


@pytest.fixture
def cifar(tmp_path, monkeypatch):
    """A fake CIFAR-100 whose files count as the originals: torchvision's checksums are those of the fake files,
    so a file changed after this point fails its check as a damaged real file would."""
    root = make_fake_cifar100(tmp_path / "data")
    originals = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in (root / "cifar-100-python").iterdir()}

    def check_integrity(path, md5=None):
        path = Path(path)
        return path.is_file() and hashlib.md5(path.read_bytes()).hexdigest() == originals.get(path.name)

    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", check_integrity)
    return root


def _cli(*args):
    return main(list(args), description="", default_config=Path(data_module.__file__).parents[1] / "config" /
                "shipped" / "cifar100_b0_10steps.yaml")


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


@pytest.mark.parametrize("name", ["train", "test", "meta"])
def test_a_damaged_cifar_file_is_one_line_and_no_download(cifar, tmp_path, capsys, name):
    _truncate(cifar / "cifar-100-python" / name)
    out = tmp_path / "out"
    # Before: a 30-line traceback ending in urllib's URLError, exit 1 (torchvision went to the network).
    assert _cli("--data-root", str(cifar), "--no-download", "--output", str(out)) == 2
    err = _one_line(capsys)
    assert err == (f"error: CIFAR-100: {cifar / 'cifar-100-python' / name} is damaged (its checksum differs from the "
                   "original's); delete it and run again without --no-download to download it anew, or copy it "
                   "again, or pass another folder with --data-root")
    assert not out.exists()


def test_a_damaged_cifar_file_is_named_when_downloads_are_allowed_too(cifar, tmp_path, capsys):
    (cifar / "cifar-100-python" / "train").write_bytes(b"garbage")
    assert _cli("--data-root", str(cifar), "--output", str(tmp_path / "out")) == 2
    err = _one_line(capsys)
    assert f"{cifar / 'cifar-100-python' / 'train'} is damaged" in err  # never overwritten or re-downloaded unasked
    assert "delete it and run again to download it anew" in err
    assert not (tmp_path / "out").exists()


def test_intact_fake_files_load(cifar):
    benchmark = data_module.split_cifar100(cifar, n_experiences=10, class_order=list(range(100)), download=False)
    assert benchmark.n_classes == 100


@pytest.fixture
def fashion_root(tmp_path, monkeypatch):
    """Fashion-MNIST unpacked into the data root from gzipped files (as from the Debian package)."""
    monkeypatch.setattr(data_module, "DEBIAN_FASHION_MNIST", make_fake_fashion_mnist_gz(tmp_path / "debian"))
    root = tmp_path / "fmnist"
    data_module.split_fashion_mnist(root, n_experiences=5, class_order=list(range(10)), download=False)
    return root


@pytest.mark.parametrize("name", DATASETS["fashion_mnist"].files)
def test_a_truncated_fashion_mnist_file_is_one_line(fashion_root, tmp_path, capsys, name):
    path = fashion_root / "FashionMNIST" / "raw" / name
    _truncate(path)
    out = tmp_path / "out"
    code = _cli("--data-root", str(fashion_root), "--no-download", "--set", "data.dataset=fashion_mnist",
                "--set", "data.n_experiences=5", "--set", "data.class_order=null", "--output", str(out))
    err = _one_line(capsys)
    assert code == 2 and err.startswith(f"error: Fashion-MNIST: {path} is damaged (it does not read as an idx file")
    assert "delete it and run again without --no-download" in err and not out.exists()


def test_a_damaged_gzipped_source_is_one_line(tmp_path, monkeypatch):
    debian = make_fake_fashion_mnist_gz(tmp_path / "debian")
    _truncate(debian / "train-images-idx3-ubyte.gz")
    monkeypatch.setattr(data_module, "DEBIAN_FASHION_MNIST", debian)
    with pytest.raises(DatasetNotFoundError) as error:
        data_module.split_fashion_mnist(tmp_path / "root", n_experiences=5, download=False)
    message = str(error.value)
    assert message.startswith(f"Fashion-MNIST: {debian / 'train-images-idx3-ubyte.gz'} is damaged (")
    assert "\n" not in message and "replace it" in message


def test_an_image_that_does_not_decode_is_one_line_naming_it(tmp_path):
    wnids = authors_imagenet100()
    root = make_fake_imagenet(tmp_path / "imagenet", wnids)
    broken = sorted((root / "train" / wnids[0]).iterdir())[0]
    broken.write_bytes(b"not a jpeg")
    benchmark = split_imagenet100(root, n_experiences=10, class_order=list(range(100)), img_size=32)
    dataset = benchmark.train_stream[0].dataset
    with pytest.raises(DatasetNotFoundError) as error:
        for index in range(len(dataset)):
            dataset[index]
    assert str(error.value).startswith(f"{broken} cannot be read as an image (") and "\n" not in str(error.value)
    # Read by a DataLoader worker, PyTorch re-raises it with the worker's traceback: the user reads the line.
    loader = torch.utils.data.DataLoader(dataset, batch_size=len(dataset), num_workers=1)
    with pytest.raises(DatasetNotFoundError) as wrapped:
        next(iter(loader))
    assert "Original Traceback" in str(wrapped.value)
    assert user_message(wrapped.value) == str(error.value)


def test_every_dataset_with_files_checks_them():
    # A dataset of the table with files is either checked when it is loaded (its torchvision class's files) or read
    # image by image (ImageNet's and image folders; CORe50's file lists are parsed, a bad line one error): no table
    # entry is left to torchvision's download-on-damage.
    for info in DATASETS.values():
        if not info.files:
            continue
        checked = info.torchvision is not None and all(
            integrity._checksums(info.torchvision).get(name) or issubclass(info.torchvision, integrity.datasets.MNIST)
            for name in info.files)
        assert checked or info.name in ("imagenet100", "folder", "tiny_imagenet", "core50"), info.name

