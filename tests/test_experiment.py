"""The experiment layer end to end: configs, real-data loaders on fake files, runs, resume, CLI errors."""
import dataclasses
import json
import runpy
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import yaml
from PIL import Image

from avalanche_lpa.config.shipped import CONFIG_DIR
from avalanche_lpa.data import dataset_info
from avalanche_lpa.data import datasets as data_module
from avalanche_lpa.data import imagenet100
from avalanche_lpa.runner.benchmark import build_benchmark, class_mapping
from avalanche_lpa.runner.checkpoint import CheckpointError, load_checkpoint
from avalanche_lpa.cli import main
from avalanche_lpa.runner import compare
from avalanche_lpa.config import ConfigError, load_config
from avalanche_lpa.runner import RunInterrupted, evaluate_saved_run, run

from .fake_datasets import make_fake_cifar100, make_fake_fashion_mnist_gz

REPO = Path(__file__).resolve().parents[1]
CONFIGS = CONFIG_DIR  # the shipped configs (package data)
TINY_MODEL = "{img_size: 8, patch_size: 2, in_chans: 1, embed_dim: 18, depth: 2, num_heads: 9}"


def synthetic_config(tmp_path, *extra, name="syn"):
    return load_config(
        None,
        [
            "data.dataset=synthetic", "data.n_experiences=3", "model.preset=tiny", f"model.overrides={TINY_MODEL}",
            "strategy.name=replay", "strategy.mem_size=24", "strategy.train_epochs=2", "strategy.train_mb_size=16",
            "strategy.lr=0.003", "evaluation.progress_bar=false", "evaluation.locality_probe_size=24",
            f"output.dir={tmp_path / name}", "seed=7", *extra,
        ],
    )


# -- fake datasets in torchvision's layouts (tests/fake_datasets.py) ---------------------------------------
@pytest.fixture
def fake_cifar(tmp_path, monkeypatch):
    # The fake files cannot match torchvision's md5 sums: only the checksum is patched, the loading is real.
    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", lambda *args, **kwargs: True)
    return make_fake_cifar100(tmp_path / "data")


# -- configs -------------------------------------------------------------------------------------------------
# The standard CIL order of CIFAR-100 (iCaRL, PODNet, DyTox; the authors' cifar100_order1.yaml), first task.
CIL_ORDER_FIRST_TASKS = [87, 0, 52, 58, 44, 91, 68, 97, 51, 15, 94, 92, 10, 72, 49, 78, 61, 14, 8, 86]
# The authors' imagenet100_order1.yaml, first two tasks (indices into the sorted class list).
IMAGENET_ORDER_FIRST_TASKS = [68, 56, 78, 8, 23, 84, 90, 65, 74, 76, 40, 89, 3, 92, 55, 9, 26, 80, 43, 38]


def test_shipped_configs_validate_and_use_the_standard_class_orders(fake_cifar):
    for path in CONFIGS.glob("*.yaml"):
        load_config(path)
    for steps in (10, 20, 50):
        config = load_config(CONFIGS / f"cifar100_b0_{steps}steps.yaml")
        assert config.data.n_experiences == steps and config.strategy.name == "lpa"
        order = config.data.class_order
        assert order[:20] == CIL_ORDER_FIRST_TASKS and sorted(order) == list(range(100)) and order[-1] == 39
    split = data_module.split_cifar100(fake_cifar, n_experiences=10, class_order=order, seed=1993)
    assert list(split.classes_order_original_ids)[:10] == CIL_ORDER_FIRST_TASKS[:10]
    imagenet = load_config(CONFIGS / "imagenet100_10steps.yaml").data.class_order
    assert imagenet[:20] == IMAGENET_ORDER_FIRST_TASKS and sorted(imagenet) == list(range(100))


def test_unknown_keys_and_bad_values_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) epochz in 'strategy'; valid keys: .*train_epochs"):
        load_config(None, ["strategy.epochz=3"])
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) bogus at the top level; valid keys:"):
        load_config(None, ["bogus=1"])
    with pytest.raises(ConfigError, match=r"data.n_experiences: expected an integer, got 'ten'"):
        load_config(None, ["data.n_experiences=ten"])
    with pytest.raises(ConfigError, match=r"strategy.lpa_warmup: expected false, true or a mapping of LPAWarmupPlugin"):
        load_config(None, ["strategy.lpa_warmup=3"])
    with pytest.raises(ConfigError, match=r"unknown key\(s\) ramp in 'strategy.lpa_warmup' \(LPAWarmupPlugin's "
                                         r"arguments\); valid keys: start_factor, epochs, iterations, schedule"):
        load_config(None, ["strategy.lpa_warmup.ramp=3"])
    with pytest.raises(ConfigError, match="unknown strategy 'sgdx'"):
        load_config(None, ["strategy.name=sgdx"])
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) width in 'model.overrides'"):
        load_config(None, ["model.overrides={width: 3}"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_switching_a_validated_config_gives_the_new_strategy_its_own_defaults():
    # compare switches strategies on validated configs, where every option is filled in: a value that is only
    # the old strategy's default must not override the new strategy's (the bug: lpa_warmup ran without warm-up).
    from avalanche_lpa.config import switch_strategy, validate

    config = load_config(CONFIGS / "fashion_mnist.yaml")
    warm = validate({**config.as_dict(), "strategy": switch_strategy(config.strategy, "lpa_warmup")}).strategy
    assert warm["lpa_warmup"]["start_factor"] == 0.0 and warm["lr"] == config.strategy["lr"]  # the budget stays
    dytox = validate({**config.as_dict(), "strategy": switch_strategy(config.strategy, "dytox")}).strategy
    assert dytox["finetune"]["frozen"][0] == "backbone.encoder.patch_embed"  # DyTox's freeze set, not LocalityViT's
    assert (dytox["finetune"]["epochs"], dytox["finetune"]["lr"]) == (10, 1e-3)  # what the config set is kept
    assert dytox["replay_mode"] == "balanced_batches"  # an option the config set is kept
    replay = validate({**config.as_dict(), "strategy": switch_strategy(config.strategy, "replay")}).strategy
    assert replay["decay_embeddings"] is False and replay["lr_schedule"] is False


def test_strategy_flag_keeps_the_budget_and_drops_recipe_only_options():
    config = load_config(CONFIGS / "cifar100_quick.yaml", values={"strategy.name": "naive"})
    assert config.strategy.name == "naive"
    assert config.strategy["train_epochs"] == 4 and "mem_size" not in config.strategy


# -- data ------------------------------------------------------------------------------------------------------
def test_cifar_loader_reads_torchvision_layout_and_maps_labels_from_zero(fake_cifar):
    order = load_config(CONFIGS / "cifar100_b0_10steps.yaml").data.class_order
    bench = data_module.split_cifar100(fake_cifar, n_experiences=10, class_order=order)
    assert bench.train_stream[0].classes_in_this_experience == list(range(10))
    assert len(bench.train_stream[0].dataset) == 40
    x, y, _ = bench.test_stream[1].dataset[0]
    assert x.shape == (3, 32, 32) and 10 <= y < 20
    assert class_mapping(bench)["class_order"] == order
    small = data_module.split_cifar100(fake_cifar, n_experiences=5, class_order=order, max_train_per_class=2)
    assert sum(len(e.dataset) for e in small.train_stream) == 200


def test_missing_cifar_names_layout_and_flag(tmp_path):
    with pytest.raises(data_module.DatasetNotFoundError, match=r"cifar-100-python/\{train,test,meta\}.*--data-root"):
        data_module.split_cifar100(tmp_path, download=False)


def test_fashion_mnist_unpacks_gzipped_files_once(tmp_path, monkeypatch):
    debian = make_fake_fashion_mnist_gz(tmp_path / "debian")
    monkeypatch.setattr(data_module, "DEBIAN_FASHION_MNIST", debian)
    root = tmp_path / "data"
    bench = data_module.split_fashion_mnist(root, n_experiences=5, class_order=list(range(10)))
    assert (root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file()
    assert [e.classes_in_this_experience for e in bench.train_stream] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    x, y, _ = bench.train_stream[0].dataset[0]
    assert x.shape == (1, 28, 28)
    monkeypatch.setattr(data_module, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    with pytest.raises(data_module.DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data_module.split_fashion_mnist(tmp_path / "empty", download=False)


def test_imagenet100_from_a_folder_with_and_without_class_list(tmp_path):
    root = tmp_path / "imagenet"
    wnids = ["n0003", "n0001", "n0004", "n0002", "n0005"]
    for split in ("train", "val"):
        for wnid in wnids:
            (root / split / wnid).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (40, 36), color=(i * 50, 10, 200)).save(root / split / wnid / f"{i}.png")
    class_list = tmp_path / "classes.txt"
    class_list.write_text("n0004\nn0002\nn0003\nn0001\n")
    bench = imagenet100.split_imagenet100(root, class_list, n_experiences=2, class_order=[0, 1, 2, 3], img_size=32)
    assert bench.n_classes == 4
    x, y, _ = bench.test_stream[0].dataset[0]
    assert x.shape == (3, 32, 32)
    x, _, _ = bench.train_stream[0].dataset[0]
    assert x.shape == (3, 32, 32)  # random-resized crop whatever the size (ImageNet's transform)
    with pytest.warns(UserWarning, match="are not the authors' ImageNet-100"):
        default = imagenet100.split_imagenet100(root, None, n_experiences=5, class_order=list(range(5)), img_size=32)
    assert default.n_classes == 5
    # On a folder holding the authors' classes (plus others) the default picks exactly them, silently.
    authors = imagenet100.authors_imagenet100()
    assert len(authors) == 100 and authors == sorted(authors) and authors[0] == "n01440764"
    full = tmp_path / "full"
    for split in ("train", "val"):
        for wnid in authors + ["n99999999"]:
            (full / split / wnid).mkdir(parents=True)
    assert imagenet100.imagenet100_classes(full) == authors
    with pytest.raises(data_module.DatasetNotFoundError, match="class folder"):
        bad = tmp_path / "bad.txt"
        bad.write_text("n9999\n")
        imagenet100.split_imagenet100(root, bad, n_experiences=1, img_size=32)


# -- runs --------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_cifar_script_end_to_end_on_fake_cifar(fake_cifar, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    argv = [
        "split_cifar100.py", "--config", str(CONFIGS / "cifar100_quick.yaml"), "--data-root", str(fake_cifar),
        "--output", str(out), "--device", "cpu",
        "--set", "data.n_experiences=2", "--set", "data.num_workers=0", "--set", "evaluation.progress_bar=false",
        "--set", "model.overrides={patch_size: 8, embed_dim: 18, depth: 1, num_heads: 9}",
        "--set", "strategy.epochs_first=1", "--set", "strategy.train_epochs=1", "--set", "strategy.mem_size=20",
        "--set", "strategy.finetune.epochs=1", "--set", "evaluation.locality_probe_size=16",
    ]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / "experiments" / "split_cifar100.py"), run_name="__main__")
    assert exit_info.value.code == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert len(results["accuracy_matrix"]) == 2 and len(results["locality"]["layers"]) == 2
    assert results["config"]["data"]["dataset"] == "cifar100" and results["versions"]["torch"]
    classes = json.loads((out / "classes.json").read_text())
    assert classes["class_order"][:3] == [87, 0, 52] and classes["label_of_original_class"]["87"] == 0
    for name in ("config.yaml", "model.pt", "log.txt", "checkpoint.pkl", "accuracy_curves.png", "locality.png"):
        assert (out / name).is_file(), name
    assert (out / "locality.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert yaml.safe_load((out / "config.yaml").read_text())["strategy"]["name"] == "lpa"


def test_offline_without_data_prints_layout_not_traceback(tmp_path, capsys, monkeypatch):
    def offline(*args, **kwargs):  # the network is never touched: every urllib request fails as offline
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    code = main(["--data-root", str(tmp_path / "none"), "--output", str(tmp_path / "out")],
                description="", default_config=CONFIGS / "cifar100_b0_10steps.yaml")
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: CIFAR-100 not found") and "cifar-100-python/{train,test,meta}" in err
    assert "download" in err and "failed" in err and "URLError" in err
    assert "--data-root" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "none").exists()


def test_cli_bad_key_and_bad_type(capsys):
    for flag, expected in (("data.colour=1", "unknown config key(s) colour in 'data'"),
                           ("strategy.train_epochs=2.5", "strategy.train_epochs: expected an integer, got 2.5")):
        assert main(["--set", flag], description="", default_config=CONFIGS / "cifar100_quick.yaml") == 2
        assert expected in capsys.readouterr().err


@pytest.mark.slow
def test_resume_after_interruption_equals_uninterrupted_run(tmp_path):
    straight = run(synthetic_config(tmp_path, "evaluation.loggers=[text, csv]", name="straight"))
    interrupted = synthetic_config(tmp_path, "evaluation.loggers=[text, csv]", name="resumed")
    with pytest.raises(RunInterrupted):
        run(interrupted, stop_after=2)
    progress = json.loads((tmp_path / "resumed" / "progress.json").read_text())
    assert progress["finished_experiences"] == 2
    with pytest.raises(ConfigError, match="pass --resume"):
        run(interrupted)  # an existing run is never overwritten silently
    resumed = run(interrupted, resume=True)
    assert resumed["accuracy_matrix"] == straight["accuracy_matrix"]
    assert resumed["locality"]["layers"] == straight["locality"]["layers"]
    assert resumed["train_iterations"] == straight["train_iterations"]
    a = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the CSV curves of the experiences before the interruption are kept, not emptied by the resumed session
    csv_files = ("csv/training_results.csv", "csv/eval_results.csv")
    for name in csv_files:
        assert (tmp_path / "resumed" / name).read_text() == (tmp_path / "straight" / name).read_text()
    before = {name: (tmp_path / "resumed" / name).read_bytes() for name in csv_files}
    evaluate_saved_run(tmp_path / "resumed")  # --eval-only: nothing of the training run's files changes
    assert {name: (tmp_path / "resumed" / name).read_bytes() for name in csv_files} == before


@pytest.mark.slow
def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    config = synthetic_config(tmp_path, name="corrupt")
    with pytest.raises(RunInterrupted):
        run(config, stop_after=1)
    path = tmp_path / "corrupt" / "checkpoint.pkl"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="corrupt.*--overwrite"):
        run(config, resume=True)
    with pytest.raises(CheckpointError):
        load_checkpoint(object(), path)
    assert len(run(config, overwrite=True)["accuracy_matrix"]) == 3  # the advice given works


@pytest.mark.slow
def test_eval_only_reevaluates_the_saved_model(tmp_path):
    results = run(synthetic_config(tmp_path, name="saved"))
    again = evaluate_saved_run(tmp_path / "saved")
    stream_acc = next(v for k, v in again["metrics"].items() if k.startswith("Top1_Acc_Stream"))
    assert stream_acc == pytest.approx(results["summary"]["last_accuracy"])
    assert (tmp_path / "saved" / "eval_results.json").is_file()


@pytest.mark.slow
def test_compare_writes_table_with_joint_control(tmp_path):
    config = synthetic_config(tmp_path, "data.n_experiences=2", name="cmp")
    outcome = compare(config, models=("lpa", "mhsa"), seeds=(1, 2), joint=True)
    table = (Path(outcome["folder"]) / "comparison.md").read_text()
    assert "| lpa / replay | 2 |" in table and "| mhsa / replay | 2 |" in table
    joint = outcome["groups"]["lpa / replay"]["joint"][0]
    incremental = outcome["groups"]["lpa / replay"]["incremental"][0]
    assert joint["locality_at_milestones"]["iterations"] == incremental["train_iterations"]
    assert all(step is not None for step in joint["locality_at_milestones"]["layers"])
    assert (Path(outcome["folder"]) / "locality.png").is_file()


def test_a_model_that_cannot_take_the_datasets_images_is_refused_before_the_folder_is_written(tmp_path):
    # Before: the run wrote config.yaml, classes.json and log.txt, then failed at the first batch with a traceback.
    with pytest.raises(ConfigError, match=r"model.overrides: the model takes 1x8x8 images, the dataset gives 1x16x16"):
        run(synthetic_config(tmp_path, "data.synthetic.img_size=16", name="mismatch"))
    assert not (tmp_path / "mismatch").exists()


def test_subsampling_takes_none_or_a_positive_count():
    from avalanche_lpa.data.splits import subsample_per_class

    dataset = torch.utils.data.TensorDataset(torch.zeros(6, 1))
    dataset.targets = [0, 0, 0, 1, 1, 1]
    assert len(subsample_per_class(dataset, 2, seed=0)) == 4 and subsample_per_class(dataset, None, 0) is dataset
    for bad in (-1, 0, 2.5):  # -1 dropped one image per class, 0 failed in max(), 2.5 in slicing
        with pytest.raises(ValueError, match="must be None \\(all images\\) or an integer of at least 1"):
            subsample_per_class(dataset, bad, seed=0)


def test_class_order_and_split_are_checked_against_the_dataset(tmp_path):
    with pytest.raises(ConfigError, match="data.class_order must list each of the 6 synthetic class ids"):
        run(synthetic_config(tmp_path, "data.class_order=[0, 1, 2]"))
    with pytest.raises(ConfigError, match="n_experiences=3 does not divide the 10 classes of fashion_mnist"):
        build_benchmark(dataclasses.replace(load_config(CONFIGS / "fashion_mnist.yaml").data, n_experiences=3), 0)


@pytest.mark.slow
def test_compare_resume_adds_seeds_and_reuses_finished_controls(tmp_path):
    config = synthetic_config(tmp_path, "data.n_experiences=2", name="cmp2")
    compare(config, models=("lpa",), seeds=(1,), joint=True)
    outcome = compare(config, models=("lpa",), seeds=(1, 2), joint=False, resume=True)
    group = outcome["groups"]["lpa / replay"]
    assert len(group["incremental"]) == 2 and len(group["joint"]) == 1
    assert "(1 seed)" in outcome["table"] and "| lpa / replay | 2 |" in outcome["table"]


def test_runs_that_unpack_the_debian_fashion_mnist_at_the_same_time_both_succeed(tmp_path, monkeypatch):
    # Two runs started together (a comparison on two shells) both unpack the Debian files into the shared
    # Avalanche folder; with one shared temporary name the second run's rename took the first one's file away.
    import shutil

    monkeypatch.setattr(data_module, "DEBIAN_FASHION_MNIST", make_fake_fashion_mnist_gz(tmp_path / "debian"))
    root = tmp_path / "avalanche"
    fashion = dataset_info("fashion_mnist")
    copy = shutil.copyfileobj
    other_run = []

    def copy_while_another_run_unpacks(source, target, *args):
        if not other_run:  # the other run starts while this one copies its first file, and finishes first
            other_run.append(None)
            other_run[0] = data_module._dataset_root(fashion, root, False, data_module.DEBIAN_FASHION_MNIST)
        return copy(source, target, *args)

    monkeypatch.setattr(data_module.shutil, "copyfileobj", copy_while_another_run_unpacks)
    assert data_module._dataset_root(fashion, root, False, data_module.DEBIAN_FASHION_MNIST) == other_run[0] == root
    raw = root / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(fashion.files)  # no temporary left
    bench = data_module.split_fashion_mnist(root, n_experiences=5, download=False)
    assert len(bench.train_stream[0].dataset) == 2 * 3
