"""CORe50 NC by name: the protocol's file lists and images in Avalanche's layout (a fake of it), the nine batches
as experiences with per-experience test sets, one-line errors for missing or damaged files, offline."""
import re
from pathlib import Path

import pytest

from avalanche_lpa.cli import console
from avalanche_lpa.config import load_config
from avalanche_lpa.data.core50 import CORE50_NC_LISTS, _lists, core50_nc_order
from avalanche_lpa.runner.benchmark import build_benchmark, class_mapping, input_shape

from .fake_datasets import make_fake_core50


@pytest.fixture(scope="module")
def core50(tmp_path_factory) -> Path:
    return make_fake_core50(tmp_path_factory.mktemp("core50"))


def _data(root: Path, *overrides: str):
    return load_config("core50_nc", [f"data.root={root}", *overrides]).data


def test_the_nine_nc_batches_are_the_experiences_each_with_its_classes_test_images(core50):
    data = _data(core50)
    assert input_shape(data) == (3, 128, 128)
    benchmark = build_benchmark(data, seed=0)
    batches, test_list = _lists(core50)
    assert benchmark.n_classes == 50 and len(benchmark.train_stream) == len(benchmark.test_stream) == 9
    # Experience i holds exactly the training images of NC batch i, and the test images of its classes.
    order = core50_nc_order(batches)
    for index, (train, test) in enumerate(zip(benchmark.train_stream, benchmark.test_stream)):
        labels = {label for _, label in batches[index]}
        arrival = [order.index(label) for label in sorted(labels)]  # class ids from zero in arrival order
        assert sorted(train.classes_in_this_experience) == sorted(arrival) == sorted(test.classes_in_this_experience)
        assert len(train.dataset) == len(batches[index]) and len(test.dataset) == len(labels)
    assert [len(exp.classes_in_this_experience) for exp in benchmark.train_stream] == [10] + [5] * 8
    image, _, *rest = benchmark.test_stream[0].dataset[0]
    assert tuple(image.shape) == (3, 128, 128)
    mapping = class_mapping(benchmark)  # classes.json: the objects' folders in arrival order
    assert mapping["class_order"] == order and all(re.fullmatch(r"o\d+", n) for n in mapping["class_names_in_arrival_order"])
    assert len(set(mapping["class_names_in_arrival_order"])) == 50


def test_a_class_order_or_another_split_of_the_50_objects(core50):
    benchmark = build_benchmark(_data(core50, "data.n_experiences=10", "data.initial_classes=null",
                                      f"data.class_order={list(range(50))}"), seed=0)
    assert [sorted(exp.classes_in_this_experience) for exp in benchmark.train_stream][:2] == [[0, 1, 2, 3, 4],
                                                                                              [5, 6, 7, 8, 9]]


@pytest.mark.parametrize("damage, message", [
    ("lists", r"CORe50 not found: expected .*/core50/\{batches_filelists/NC_inc/run0/train_batch_00_filelist.txt,"
              r"batches_filelists/NC_inc/run0/test_filelist.txt\} and downloading is off .* extract both into .*, "
              r"or pass the folder that holds batches_filelists/ with --data-root"),
    ("images", r"CORe50: the file lists are in .* but not the images \(.*core50_128x128/\); download "
               r"core50_128x128.zip"),
    ("line", r"CORe50: line 2 of .*train_batch_03_filelist.txt is not '<image path> <label>' \('garbled'\)"),
    ("order", r"data.class_order must list each of the 50 core50 class ids 0..49 once \(got 3 ids\)"),
])
def test_missing_or_damaged_core50_is_one_line_and_nothing_written(core50, tmp_path, capsys, damage, message):
    import shutil
    root = tmp_path / "core50"
    shutil.copytree(core50, root)
    flags = []
    if damage == "lists":
        shutil.rmtree(root / "batches_filelists")
    elif damage == "images":
        shutil.rmtree(root / "core50_128x128")
    elif damage == "line":
        path = root / CORE50_NC_LISTS / "train_batch_03_filelist.txt"
        lines = path.read_text().splitlines()
        path.write_text("\n".join([lines[0], "garbled"] + lines[1:]) + "\n")
    else:
        flags = ["--set", "data.class_order=[1, 1, 2]"]
    out = tmp_path / "run"
    argv = ["--config", "core50_nc", "--data-root", str(root), "--output", str(out), "--no-download", *flags]
    assert console(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err), err
    assert not out.exists()


def test_core50_offline_is_one_line_naming_where_to_get_it(tmp_path, capsys, blocked_network):
    out = tmp_path / "run"
    assert console(["--config", "core50_nc", "--data-root", str(tmp_path / "nothing"), "--output", str(out)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1, err
    assert re.search(r"CORe50 not found \(expected .*\) and the download into .* failed .*"
                     r"vlomonaco.github.io/core50/ and extract both into", err), err
    assert "CORe50 is not in" in captured.out and "--no-download turns this off" in captured.out
    assert not out.exists() and not (tmp_path / "nothing").exists()
    assert blocked_network  # it did try to download
