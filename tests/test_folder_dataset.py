"""Your own images (issue 30.1, 30.6): ``data.dataset: folder`` over ``train/<class>/*`` and ``test/<class>/*``,
its computed and cached statistics, its one-line errors, and Split Fashion-MNIST written out as PNG folders giving
the built-in loader's accuracy matrix."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from avalanche_lpa.cli import console
from avalanche_lpa.config import ConfigError, load_config
from avalanche_lpa.data import STATS_FILE, dataset_info, folder_statistics
from avalanche_lpa.data import datasets as data_module
from avalanche_lpa.data import folder as folder_module
from avalanche_lpa.runner import run
from avalanche_lpa.runner.benchmark import build_benchmark, class_mapping, input_shape

from .fake_datasets import make_fake_fashion_mnist_gz

CLASSES = ("cat", "dog", "emu", "fox")


def make_image_folder(root: Path, classes=CLASSES, train=3, test=2, size=(12, 10), mode="RGB") -> Path:
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("test", test)):
        for name in classes:
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
                Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / split / name / f"{i}.png")
    return root


def folder_overrides(root, *extra):
    return ["data.dataset=folder", f"data.root={root}", "data.n_experiences=2", "data.class_order=null",
            "model.preset=tiny", "model.overrides={img_size: 8, in_chans: 3, patch_size: 4}", *extra]


def test_a_folder_is_a_benchmark_with_computed_and_cached_statistics(tmp_path, monkeypatch):
    root = make_image_folder(tmp_path / "images")
    data = load_config(None, folder_overrides(root, "data.class_order=[3, 2, 1, 0]")).data
    assert input_shape(data) == (3, 10, 10)  # the shorter side of the training images
    stats = json.loads((root / STATS_FILE).read_text())
    assert stats["img_size"] == 10 and stats["images"] == {"train": 12, "test": 8}
    assert all(0.4 < m < 0.6 for m in stats["mean"]) and all(0.25 < s < 0.33 for s in stats["std"])  # uniform noise

    def no_decoding(path):
        raise AssertionError("the cached statistics are read, the images not decoded again")
    monkeypatch.setattr(folder_module, "_load", no_decoding)
    assert folder_statistics(root)["signature"] == stats["signature"]
    monkeypatch.undo()

    scans = []
    listed = folder_module.scan_image_folder
    monkeypatch.setattr(folder_module, "scan_image_folder", lambda *a: scans.append(a) or listed(*a))
    benchmark = build_benchmark(data, seed=0)
    assert len(scans) == 1  # the benchmark lists the folder once, its statistics included
    monkeypatch.undo()
    x, y, _ = benchmark.train_stream[0].dataset[0]
    assert tuple(x.shape) == (3, 10, 10)
    assert class_mapping(benchmark)["class_names_in_arrival_order"] == ["fox", "emu", "dog", "cat"]
    assert sorted(int(t) for t in benchmark.train_stream[0].dataset.targets) == [0, 0, 0, 1, 1, 1]

    (root / "train" / "cat" / "3.png").write_bytes((root / "train" / "cat" / "0.png").read_bytes() + b"\0")
    assert folder_statistics(root)["images"]["train"] == 13  # files changed: computed again


def test_grey_images_a_given_size_and_statistics_skip_the_computation(tmp_path):
    root = make_image_folder(tmp_path / "grey", size=(8, 8), mode="L")
    data = load_config(None, folder_overrides(
        root, "data.folder={img_size: 16, in_chans: 1, mean: [0.5], std: [0.25]}", "data.initial_classes=2",
        "data.n_experiences=3")).data
    assert input_shape(data) == (1, 16, 16)
    benchmark = build_benchmark(data, seed=0)
    assert not (root / STATS_FILE).exists()  # nothing to compute
    assert [len(e.classes_in_this_experience) for e in benchmark.train_stream] == [2, 1, 1]
    assert tuple(benchmark.test_stream[0].dataset[0][0].shape) == (1, 16, 16)


def _broken(root: Path, what: str) -> Path:
    make_image_folder(root)
    if what == "empty class":
        for image in (root / "test" / "emu").iterdir():
            image.unlink()
    elif what == "classes differ":
        (root / "test" / "dog").rename(root / "test" / "wolf")
    elif what == "unreadable image":
        (root / "test" / "fox" / "1.png").write_bytes(b"not a png")
    elif what == "no root":
        return root.parent / "nowhere"
    return root


@pytest.mark.parametrize("what, message", [
    ("no root", "image folder .*nowhere does not exist; pass --data-root"),
    ("empty class", "class 'emu' has no test images in .*test/emu; add images"),
    ("classes differ", "train and test classes of .* differ \\(only in train: dog; only in test: wolf\\)"),
    ("unreadable image", "test/fox/1.png cannot be read as an image"),
])
def test_a_damaged_folder_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, what, message):
    root = _broken(tmp_path / "images", what)
    out = tmp_path / "run"
    argv = ["--config", "fashion_mnist", "--set", "evaluation.progress_bar=false", "--output", str(out)]
    for override in folder_overrides(root):
        argv += ["--set", override]
    assert console(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert re.search(message, err), err
    assert not out.exists()


def test_experiences_that_do_not_split_the_classes_are_one_line(tmp_path, capsys):
    root = make_image_folder(tmp_path / "images")
    argv = ["--config", "fashion_mnist", "--output", str(tmp_path / "run")]
    for override in folder_overrides(root, "data.n_experiences=3"):
        argv += ["--set", override]
    assert console(argv) == 2
    assert "data.n_experiences=3 does not divide the 4 classes of" in capsys.readouterr().err


def _fashion_mnist_as_png_folders(raw_root: Path, folder: Path) -> None:
    """Every image of the (fake) Fashion-MNIST files as ``<split>/<class>/<index>.png``."""
    from torchvision.datasets import FashionMNIST
    for split, train in (("train", True), ("test", False)):
        dataset = FashionMNIST(str(raw_root), train=train)
        for index, (image, label) in enumerate(dataset):
            target = folder / split / f"class{label:02d}"
            target.mkdir(parents=True, exist_ok=True)
            image.save(target / f"{index:05d}.png")


def test_fashion_mnist_as_png_folders_gives_the_built_in_loaders_accuracy_matrix(tmp_path, monkeypatch):
    # The fake files hold each class's images together, in the order ImageFolder lists them, so both loaders see
    # the same images in the same order; without augmentation both pipelines feed identical tensors.
    monkeypatch.setattr(data_module, "DEBIAN_FASHION_MNIST", make_fake_fashion_mnist_gz(tmp_path / "deb", 6))
    common = ["data.n_experiences=5", "data.augment=false", "data.max_train_per_class=null",
              "data.max_test_per_class=null", "strategy.epochs_first=1", "strategy.train_epochs=1",
              "strategy.finetune.epochs=1", "strategy.mem_size=20", "strategy.train_mb_size=16",
              "evaluation.locality_probe_size=16", "evaluation.progress_bar=false", "evaluation.attention_maps=0"]
    builtin = load_config("fashion_mnist", common + [f"data.root={tmp_path / 'fm'}", f"output.dir={tmp_path / 'a'}"])
    built_in_results = run(builtin)
    _fashion_mnist_as_png_folders(tmp_path / "fm", tmp_path / "png")
    info = dataset_info("fashion_mnist")
    folder = load_config("fashion_mnist", common + [
        "data.dataset=folder", f"data.root={tmp_path / 'png'}", f"output.dir={tmp_path / 'b'}",
        f"data.folder={{img_size: 28, in_chans: 1, mean: {list(info.mean)}, std: {list(info.std)}}}",
    ])
    folder_results = run(folder)
    assert folder_results["accuracy_matrix"] == built_in_results["accuracy_matrix"]
    assert folder_results["locality"]["mean"] == built_in_results["locality"]["mean"]
    names = json.loads((tmp_path / "b" / "classes.json").read_text())["class_names_in_arrival_order"]
    assert names == [f"class{c:02d}" for c in range(10)]


def test_cub_and_imagenet_r_as_they_are_distributed(tmp_path):
    # CUB-200-2011: images/<class>/*, images.txt (id path), train_test_split.txt (id 1|0)
    cub = make_image_folder(tmp_path / "cub_src", classes=("001.Albatross", "002.Auklet"), train=3, test=0)
    (tmp_path / "cub" / "images").mkdir(parents=True)
    lines, split = [], []
    for n, path in enumerate(sorted((cub / "train").glob("*/*.png")), start=1):
        target = tmp_path / "cub" / "images" / path.parent.name / path.name
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(path.read_bytes())
        lines.append(f"{n} {path.parent.name}/{path.name}")
        split.append(f"{n} {0 if path.name == '0.png' else 1}")
    (tmp_path / "cub" / "images.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "cub" / "train_test_split.txt").write_text("\n".join(split) + "\n")
    data = load_config(None, folder_overrides(tmp_path / "cub")).data
    benchmark = build_benchmark(data, seed=0)
    assert [len(e.dataset) for e in benchmark.train_stream] == [2, 2]
    assert [len(e.dataset) for e in benchmark.test_stream] == [1, 1]
    assert sorted(class_mapping(benchmark)["class_names_in_arrival_order"]) == ["001.Albatross", "002.Auklet"]

    # ImageNet-R: <class>/* alone, a fixed 20% of each class for testing, the same for every run seed
    flat = make_image_folder(tmp_path / "r_src", classes=("n01443537", "n01484850"), train=10, test=0)
    (tmp_path / "imagenet-r").mkdir()
    for folder in sorted((flat / "train").iterdir()):
        folder.rename(tmp_path / "imagenet-r" / folder.name)
    with pytest.raises(Exception, match="set data.folder.test_fraction"):
        build_benchmark(load_config(None, folder_overrides(tmp_path / "imagenet-r")).data, seed=0)
    # a test_fraction where the files already say which images are for testing is refused, not ignored
    for root, has in ((tmp_path / "cub", "CUB train_test_split.txt"), (tmp_path / "r_src", "train/ and test/")):
        (root / "test").mkdir(exist_ok=True)
        with pytest.raises(ConfigError, match=f"already has {re.escape(has)}; set data.folder.test_fraction to null"):
            build_benchmark(load_config(None, folder_overrides(root, "data.folder={test_fraction: 0.2}")).data, 0)
    data = load_config(None, folder_overrides(tmp_path / "imagenet-r", "data.folder={test_fraction: 0.2}")).data
    for seed in (0, 1):  # the run seed changes the class order, not which images are for testing
        benchmark = build_benchmark(data, seed=seed)
        assert [len(e.dataset) for e in benchmark.test_stream] == [2, 2]
        assert [len(e.dataset) for e in benchmark.train_stream] == [8, 8]
    test_images = {name: [p.name for p in paths] for name, paths in
                   folder_module.scan_image_folder(tmp_path / "imagenet-r", 0.2)[1]["test"].items()}
    assert all(len(names) == 2 for names in test_images.values())


def test_split_tiny_imagenet_reads_avalanches_layout_and_offline_is_one_line(tmp_path, capsys):
    from .fake_datasets import make_fake_tiny_imagenet
    root = make_fake_tiny_imagenet(tmp_path / "tiny")
    data = load_config(None, ["data.dataset=tiny_imagenet", f"data.root={root}", "data.n_experiences=10",
                              "data.max_train_per_class=1"]).data
    assert input_shape(data) == (3, 64, 64)
    benchmark = build_benchmark(data, seed=0)
    assert benchmark.n_classes == 200 and len(benchmark.train_stream) == 10
    assert len(benchmark.train_stream[0].dataset) == 20 and len(benchmark.test_stream[0].dataset) == 20
    assert tuple(benchmark.test_stream[0].dataset[0][0].shape) == (3, 64, 64)
    assert "Files already downloaded" not in capsys.readouterr().out  # Avalanche's chatter stays out of the console


@pytest.mark.parametrize("download, message", [
    (True, r"Tiny-ImageNet not found \(expected .*tiny-imagenet-200/\{wnids.txt,val/val_annotations.txt\}\) and the "
           r"download into .* failed .*cs231n.stanford.edu/tiny-imagenet-200.zip"),
    (False, r"Tiny-ImageNet not found: .* downloading is off"),
])
def test_tiny_imagenet_offline_or_not_downloaded_is_one_line_and_nothing_written(tmp_path, capsys, blocked_network,
                                                                                 download, message):
    out = tmp_path / "run"
    argv = ["--config", "fashion_mnist", "--data-root", str(tmp_path / "nothing"), "--output", str(out),
            "--set", "data.dataset=tiny_imagenet", "--set", "data.class_order=null", "--set", "data.n_experiences=10",
            "--set", "model.overrides={img_size: 64, in_chans: 3}"] + ([] if download else ["--no-download"])
    assert console(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err), err
    assert not out.exists()
