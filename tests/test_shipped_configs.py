"""Every shipped config, run end to end through the real command line on fake data in its dataset's layout.

The configs are discovered (``avalanche_lpa/config/shipped/*.yaml``, so a new config is covered without editing this
file), and so is each script's default config, which runs through its script with no ``--config`` at all. Each
run keeps the config's own transforms (RandAugment included), samplers, replay, loss, distillation,
finetuning and schedule; only sizes are overridden: the tiny preset shrunk further, a few images per class,
1 epoch, 1 finetuning epoch, a small memory and batch, the fewest experiences of at least 3 that divide the
classes. One config (the paper's B0-10) also runs under ``torchrun`` with 2 CPU processes.
"""
from __future__ import annotations

import json
import math
import os
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import pytest

import avalanche_lpa.cli as cli
from avalanche_lpa.config.shipped import CONFIG_DIR
from avalanche_lpa.data import dataset_info
from avalanche_lpa.data import datasets as data_module
from avalanche_lpa.data import imagenet100
from avalanche_lpa.config import load_config

from .fake_datasets import (
    make_fake_cifar100, make_fake_core50, make_fake_cub, make_fake_fashion_mnist_gz, make_fake_imagenet, make_fake_tiny_imagenet,
)
from .processes import free_port

# End-to-end runs (whole runs, scripts, kills and resumes): CI runs them, the inner loop (-m "not slow") does not.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((REPO / "experiments").glob("*.py"))
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))
FIGURES = ("accuracy_curves.png", "locality.png", "attention_maps.png")


class _Captured(Exception):
    pass


def _default_config(script: Path) -> Path:
    """The config ``script`` runs without ``--config`` (read by running it with ``cli.main`` intercepted)."""
    seen: Dict[str, Path] = {}

    def capture(argv, *, default_config, **kwargs):
        seen["config"] = Path(default_config)
        raise _Captured

    original, cli.main = cli.main, capture
    try:
        runpy.run_path(str(script), run_name="__main__")
    except _Captured:
        pass
    finally:
        cli.main = original
    return seen["config"].resolve()


DEFAULTS = {_default_config(script): script for script in SCRIPTS}
DATASET_SCRIPTS = {load_config(config).data.dataset: script for config, script in DEFAULTS.items()}


def test_every_script_has_a_shipped_default_config():
    assert len(DEFAULTS) == len(SCRIPTS) and all(config in CONFIGS for config in DEFAULTS)
    assert set(DATASET_SCRIPTS) == {"cifar100", "fashion_mnist", "imagenet100"}


FOLDER_CLASSES = 6  # the fake image folders' classes (ImageNet-R and CUB-200 layouts)


def _n_experiences(n_classes: int) -> int:
    return next(steps for steps in range(3, n_classes + 1) if n_classes % steps == 0)


def _split(config: Path) -> Dict[str, int]:
    """The split a shrunk run of ``config`` uses: the fewest experiences of at least 3 (a B50 config keeps B50, and
    CORe50 NC its nine batches)."""
    data = load_config(config).data
    counted = dataset_info(data.dataset).num_classes or FOLDER_CLASSES  # an image folder: the fake folders'
    classes = len(data.class_order) if data.class_order is not None else counted
    if data.dataset == "core50":
        return {"data.n_experiences": data.n_experiences, "data.initial_classes": data.initial_classes}
    if data.initial_classes is not None:
        return {"data.n_experiences": 1 + classes // 2, "data.initial_classes": classes // 2}
    return {"data.n_experiences": _n_experiences(classes)}


def size_overrides(config: Path, weights: Optional[Path] = None) -> List[str]:
    """``--set`` flags that shrink ``config``'s sizes and nothing else (a pretrained timm model: a tiny one of the same
    family, its weights from the local file ``weights``)."""
    loaded = load_config(config)
    data, strategy = loaded.data, loaded.strategy
    values = {
        **_split(config),
        "data.max_train_per_class": 5,
        "data.max_test_per_class": 1,
        "data.num_workers": 0,
        "model.preset": "tiny",
        "model.overrides.embed_dim": 18,
        "model.overrides.depth": 1,
        "model.overrides.num_heads": 9,
        "strategy.train_mb_size": 8,
        "strategy.eval_mb_size": 64,
        "evaluation.locality_probe_size": 16,
        "evaluation.progress_bar": False,
    }
    if data.dataset in ("imagenet100", "folder"):  # 224 px images: a 7x7 patch grid keeps the tiny model tiny
        values.update({"model.overrides.img_size": 224, "model.overrides.patch_size": 32})
    if loaded.model.kwargs.get("pretrained"):  # the config's timm family, tiny, its weights from a local file
        values["model.kwargs"] = {**loaded.model.kwargs, **TINY_VIT, "pretrained_cfg_overlay": {"file": str(weights), "custom_load": False}}
    for key, value in (("epochs_first", 1), ("train_epochs", 1), ("mem_size", 40)):
        if key in strategy:
            values[f"strategy.{key}"] = value
    if strategy.get("finetune"):  # on: one epoch of it (a size, not the path)
        values["strategy.finetune.epochs"] = 1
    flags: List[str] = []
    for key, value in values.items():
        flags += ["--set", f"{key}={json.dumps(value)}"]
    return flags


TINY_VIT = {"embed_dim": 18, "depth": 1, "num_heads": 2}


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory) -> Dict[str, Path]:
    root = tmp_path_factory.mktemp("fake-data")
    wnids = [f"n0{i:07d}" for i in range(FOLDER_CLASSES)]
    return {
        "cifar100": make_fake_cifar100(root / "cifar", train_per_class=5, test_per_class=1),
        "fashion_mnist": make_fake_fashion_mnist_gz(root / "fmnist" / "FashionMNIST" / "raw", per_class=2).parents[1],
        "imagenet100": make_fake_imagenet(root / "imagenet", imagenet100.authors_imagenet100()),
        "imagenet_r": make_fake_imagenet(root / "imagenet-r-src", wnids, train_per_class=5, val_per_class=0) / "train",
        "cub200": make_fake_cub(root / "CUB_200_2011", FOLDER_CLASSES),
        "tiny_imagenet": make_fake_tiny_imagenet(root / "tiny"),
        "core50": make_fake_core50(root / "core50"),
    }


@pytest.fixture(scope="module")
def timm_weights(tmp_path_factory) -> Path:
    """Weights of the shipped pretrained configs' timm family, made tiny, as a local file (nothing downloads)."""
    import timm
    import torch
    path = tmp_path_factory.mktemp("weights") / "vit_base_tiny.pth"
    torch.save(timm.create_model("vit_base_patch16_224", **TINY_VIT).state_dict(), path)
    return path


def _data_root(config: Path, fake: Dict[str, Path]) -> Path:
    dataset = load_config(config).data.dataset
    if dataset == "folder":  # the layout each config's dataset is distributed in
        return fake["cub200"] if config.name.startswith("cub200") else fake["imagenet_r"]
    return fake[dataset]


def _command(config: Path, data_root: Path, out: Path, weights: Optional[Path] = None) -> List[str]:
    dataset = load_config(config).data.dataset
    script = DEFAULTS.get(config) or DATASET_SCRIPTS.get(dataset, "avalanche-lpa")  # no script: the console
    chosen = [] if DEFAULTS.get(config) == script else ["--config", str(config)]
    return [str(script), *chosen, "--data-root", str(data_root), "--output", str(out), "--device", "cpu",
            "--no-download", *size_overrides(config, weights)]


def _check_run(out: Path, config: Path, world_size: Optional[int] = None) -> None:
    results = json.loads((out / "results.json").read_text())
    steps = _split(config)["data.n_experiences"]
    matrix = results["accuracy_matrix"]
    assert len(matrix) == steps and all(math.isfinite(a) for row in matrix for a in row)
    assert results["config"]["strategy"]["name"] == load_config(config).strategy.name
    if world_size is not None:
        assert results["world_size"] == world_size
    for name in FIGURES:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert not list(out.glob("*.tmp"))


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_shipped_config_runs_end_to_end(config, fake_data, timm_weights, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", lambda *args, **kwargs: True)
    # Fashion-MNIST: only the fake folder, never the Debian package that may be installed on this machine.
    monkeypatch.setattr(data_module, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian-package")
    out = tmp_path / "run"
    argv = _command(config, _data_root(config, fake_data), out, timm_weights)
    if argv[0] == "avalanche-lpa":  # a config without a script of its own: the console command
        assert cli.console(argv[1:]) == 0, capsys.readouterr().err[-3000:]
    else:
        monkeypatch.setattr("sys.argv", argv)
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_path(argv[0], run_name="__main__")
        assert exit_info.value.code == 0, capsys.readouterr().err[-3000:]
    _check_run(out, config)
    # the run used the config's own recipe: its augmentation policy and strategy, not a default
    assert load_config(out / "config.yaml").data.auto_augment == load_config(config).data.auto_augment
    assert (out / "model.pt").is_file() and (out / "checkpoint.pkl").is_file()



def test_b0_10_config_runs_under_torchrun(fake_data, tmp_path):
    config = next(c for c in CONFIGS if c.name == "cifar100_b0_10steps.yaml")
    out = tmp_path / "run"
    # tests/fake_datasets.py runs the script with CIFAR's md5 check patched, in every worker.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           str(REPO / "tests" / "fake_datasets.py"), *_command(config, fake_data["cifar100"], out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    _check_run(out, config, world_size=2)
