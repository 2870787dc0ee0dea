"""The dataset table: complete entries, read by config, benchmark builder, model presets and runner alike."""
from dataclasses import replace

import pytest
import timm

from avalanche_lpa.data import DATASETS, DatasetInfo, dataset_info, register_dataset, synthetic_benchmark
from avalanche_lpa.data import transforms
from avalanche_lpa.config import ConfigError, load_config
from avalanche_lpa.runner.benchmark import build_benchmark, input_shape
from avalanche_lpa.config.reference import CONFIG_HELP
from avalanche_lpa.runner import build_model
from avalanche_lpa.models import PRESET_DATASETS, PRESETS, model_name


@pytest.mark.parametrize("name", list(DATASETS))
def test_every_entry_is_complete_and_consistent(name):
    info = DATASETS[name]
    channels, height, width = info.input_shape
    assert info.name == name and info.title and callable(info.loader)
    assert (info.classes(5) or 0) > 0 or info.measure_shape is not None  # an image folder counts its own
    assert len(info.mean) == len(info.std) == channels
    assert height % info.patch_size == 0 and width % info.patch_size == 0
    if info.files or info.avalanche_name:  # a dataset of files has its default root under Avalanche's location
        assert info.files and info.avalanche_name
    if info.download_size:  # downloadable: torchvision reads the files, Avalanche's classic benchmark splits them
        assert info.torchvision and info.benchmark and info.manual and (info.folder or info.files)


def test_an_inconsistent_entry_is_refused_when_made():
    good = DATASETS["cifar100"]
    with pytest.raises(ValueError, match="patch_size 5 must divide the 32x32 images"):
        replace(good, patch_size=5)
    with pytest.raises(ValueError, match="one value per channel"):
        replace(good, mean=(0.5,))
    with pytest.raises(ValueError, match="exactly one of num_classes and classes_per_experience"):
        replace(good, classes_per_experience=2)
    with pytest.raises(ValueError, match="files decide its classes .* gives no class count"):
        replace(good, measure_shape=lambda **options: (3, 32, 32))


def test_an_unknown_dataset_is_one_line_naming_the_known_ones():
    with pytest.raises(ValueError, match=r"^unknown dataset 'svhn'; valid: cifar100, fashion_mnist, imagenet100, "
                                         r"tiny_imagenet, core50, folder, synthetic$"):
        dataset_info("svhn")
    with pytest.raises(ConfigError, match=r"^data.dataset: unknown dataset 'svhn'; valid: cifar100, [a-z0-9_, ]+$"):
        load_config(None, ["data.dataset=svhn"])


def test_presets_statistics_and_reference_come_from_the_table():
    for preset, dataset in PRESET_DATASETS.items():
        info = dataset_info(dataset)
        assert (PRESETS[preset]["img_size"], PRESETS[preset]["patch_size"]) == (info.input_shape[-1], info.patch_size)
        cfg = timm.models.get_pretrained_cfg(model_name("lpa", preset))
        assert (tuple(cfg.input_size), tuple(cfg.mean), tuple(cfg.std)) == (info.input_shape, info.mean, info.std)
        assert cfg.num_classes == info.num_classes
    assert (transforms.CIFAR100_MEAN, transforms.FASHION_MNIST_STD) == (DATASETS["cifar100"].mean,
                                                                        DATASETS["fashion_mnist"].std)
    assert all(f"`{name}`" in CONFIG_HELP["data.dataset"] for name in DATASETS)


@pytest.fixture
def tiny_dataset(monkeypatch):
    """A dataset added as one entry: 3 classes of 2x12x12 images from an in-memory loader."""
    calls = []

    def load_tiny(n_experiences, class_order, seed, augment, max_train_per_class):
        calls.append(dict(augment=augment, max_train_per_class=max_train_per_class))
        return synthetic_benchmark(n_experiences=n_experiences, classes_per_experience=3 // n_experiences,
                                   img_size=12, in_chans=2, seed=seed, fixed_class_order=class_order)

    info = DatasetInfo(name="tiny3", title="Tiny-3", num_classes=3, input_shape=(2, 12, 12), mean=(0.5, 0.5),
                       std=(0.25, 0.25), patch_size=4, loader=load_tiny, options=("augment", "max_train_per_class"))
    monkeypatch.setitem(DATASETS, "tiny3", info)  # register_dataset, undone after the test
    assert register_dataset(info) is info
    return calls


def test_adding_a_dataset_is_adding_an_entry(tiny_dataset):
    config = load_config(None, ["data.dataset=tiny3", "data.n_experiences=3", "data.max_train_per_class=7",
                                "model.preset=tiny", "model.overrides={img_size: 12, in_chans: 2, patch_size: 4}"])
    data = config.data
    assert input_shape(data) == (2, 12, 12)
    benchmark = build_benchmark(data, seed=0)
    assert tiny_dataset == [dict(augment=True, max_train_per_class=7)]  # only the options the entry names
    assert benchmark.n_classes == 3 and len(benchmark.train_stream) == 3
    x, _, _ = benchmark.train_stream[0].dataset[0]
    model = build_model(config, benchmark.n_classes)
    assert model(x[None]).shape[0] == 1
    with pytest.raises(ConfigError, match="data.n_experiences=2 does not divide the 3 classes of tiny3"):
        build_benchmark(replace(data, n_experiences=2), seed=0)  # the split is checked with the entry's classes


def test_synthetic_takes_its_size_from_its_section_and_its_classes_from_the_table(monkeypatch):
    data = load_config(None, ["data.dataset=synthetic", "data.n_experiences=2", "data.synthetic.img_size=6",
                              "data.synthetic.in_chans=3"]).data
    assert input_shape(data) == (3, 6, 6)
    assert build_benchmark(data, seed=0).n_classes == 2 * DATASETS["synthetic"].classes_per_experience
    monkeypatch.setitem(DATASETS, "synthetic", replace(DATASETS["synthetic"], classes_per_experience=3))
    assert build_benchmark(data, seed=0).n_classes == 6


def _classes_per_experience(benchmark):
    return [len(exp.classes_in_this_experience) for exp in benchmark.train_stream]


def test_a_larger_first_experience_b50_style_on_every_kind_of_loader(tmp_path, monkeypatch):
    synthetic = load_config(None, ["data.dataset=synthetic", "data.n_experiences=3", "data.initial_classes=4"]).data
    benchmark = build_benchmark(synthetic, seed=0)
    assert _classes_per_experience(benchmark) == [4, 1, 1]
    assert sorted(benchmark.train_stream[0].classes_in_this_experience) == [0, 1, 2, 3]  # arrival order from 0

    from avalanche_lpa.data import datasets as data_module
    from tests.fake_datasets import make_fake_fashion_mnist_gz
    monkeypatch.setattr(data_module, "DEBIAN_FASHION_MNIST", make_fake_fashion_mnist_gz(tmp_path / "deb"))
    overrides = ["data.dataset=fashion_mnist", f"data.root={tmp_path / 'fm'}", "data.n_experiences=6",
                 "data.initial_classes=5", f"data.class_order={list(range(9, -1, -1))}"]
    for subsample in ([], ["data.max_train_per_class=2"]):  # Avalanche's classic benchmark path and ours
        data = load_config(None, overrides + subsample).data
        benchmark = build_benchmark(data, seed=0)
        assert _classes_per_experience(benchmark) == [5, 1, 1, 1, 1, 1]
        first = {int(y) for y in benchmark.train_stream[0].dataset.targets}
        assert first == {0, 1, 2, 3, 4}  # labels from zero in arrival order: original classes 9..5
        assert benchmark.classes_order_original_ids[:5] == [9, 8, 7, 6, 5]


@pytest.mark.parametrize("steps, first, message", [
    (3, 0, "data.initial_classes=0 must be between 1 and 5"),
    (3, 6, "data.initial_classes=6 must be between 1 and 5"),
    (3, 3, "2 experiences do not divide the other 3 classes of synthetic"),
    (1, 1, "with one experience must be all 2 classes"),  # synthetic: 2 classes per experience
])
def test_a_first_experience_that_does_not_fit_is_one_line(steps, first, message):
    settings = ["data.dataset=synthetic", f"data.n_experiences={steps}", f"data.initial_classes={first}"]
    with pytest.raises(ConfigError, match=message):  # where the config enters (--print-config too)
        load_config(None, settings)
    data = replace(load_config(None, settings[:1]).data, n_experiences=steps, initial_classes=first)
    with pytest.raises(ConfigError, match=message):  # and for a data section made in code
        build_benchmark(data, seed=0)


def test_a_loader_that_does_not_take_a_first_experience_size_is_named(tiny_dataset):
    with pytest.raises(ConfigError, match="loader of dataset 'tiny3' does not take data.initial_classes"):
        load_config(None, ["data.dataset=tiny3", "data.n_experiences=2", "data.initial_classes=1",
                           "model.preset=tiny", "model.overrides={img_size: 12, in_chans: 2, patch_size: 4}"])
