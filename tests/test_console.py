"""The console command (``avalanche-lpa``, ``python -m avalanche_lpa``): shipped configs by name, ``configs``,
``--print-config`` and a ``--help`` that keeps its examples."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from avalanche_lpa.config.shipped import CONFIG_DIR, config_names, config_path, describe, resolve_config
from avalanche_lpa.cli import DEFAULT_CONFIG, console
from avalanche_lpa.config import load_config, load_yaml

REPO = Path(__file__).resolve().parents[1]
SYNTHETIC = [
    "--device", "cpu", "--set", "data.dataset=synthetic", "--set", "data.n_experiences=2",
    "--set", "data.class_order=null",
    "--set", "model.overrides={img_size: 8, patch_size: 2, in_chans: 1, embed_dim: 18, depth: 1, num_heads: 9}",
    "--set", "strategy.epochs_first=1", "--set", "strategy.train_epochs=1", "--set", "strategy.finetune.epochs=1",
    "--set", "strategy.mem_size=20", "--set", "strategy.train_mb_size=16", "--set", "evaluation.progress_bar=false",
    "--set", "evaluation.locality_probe_size=16",
]


def test_configs_lists_every_shipped_config_with_its_description(capsys):
    assert console(["configs"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    names = sorted(path.stem for path in CONFIG_DIR.glob("*.yaml"))
    assert [line.split()[0] for line in lines] == names == config_names()
    quick = next(line for line in lines if line.startswith("cifar100_quick "))
    assert quick.split(None, 1)[1] == describe(config_path("cifar100_quick")) and "CPU-sized" in quick
    assert all(len(line.split(None, 1)) == 2 for line in lines)  # every config says what it is
    assert console(["configs", "extra"]) == 2 and "takes no arguments" in capsys.readouterr().err


def test_a_config_is_found_by_name_with_or_without_yaml_and_by_path(tmp_path, capsys):
    path = config_path("cifar100_quick")
    assert resolve_config("cifar100_quick") == resolve_config("cifar100_quick.yaml") == path
    assert resolve_config(str(path)) == path
    assert load_config("cifar100_quick") == load_config(path)
    out = tmp_path / "out"
    assert console(["--config", "cifar100_qiuck", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "cifar100_qiuck does not exist" in err and "cifar100_quick" in err
    assert not out.exists()


def test_print_config_prints_the_resolved_config_and_touches_nothing(tmp_path, capsys):
    out = tmp_path / "never"
    code = console(["--config", "fashion_mnist", "--seed", "7", "--set", "strategy.lr=3e-4", "--output", str(out),
                    "--print-config"])
    assert code == 0 and not out.exists()
    printed = load_yaml(capsys.readouterr().out)
    expected = load_config("fashion_mnist", ["strategy.lr=3e-4"], {"seed": 7, "output.dir": str(out)})
    assert printed == json.loads(json.dumps(expected.as_dict()))  # YAML round trip of the validated config
    assert printed["seed"] == 7 and printed["strategy"]["lr"] == 3e-4 and printed["data"]["dataset"] == "fashion_mnist"


@pytest.mark.slow
def test_help_keeps_its_examples_and_shows_only_meaningful_defaults():
    done = subprocess.run([sys.executable, "-m", "avalanche_lpa", "--help"], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert text.startswith("usage: avalanche-lpa")
    assert "\n  avalanche-lpa configs " in text and "\n  avalanche-lpa --config cifar100_quick --output" in text
    assert "(default: None)" not in text and "(default: False)" not in text
    assert f"default: {DEFAULT_CONFIG}" in " ".join(text.split())


@pytest.mark.slow
def test_python_m_runs_a_job_from_another_folder(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "avalanche_lpa", "--config", "cifar100_quick", "--output", str(out),
                           *SYNTHETIC], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert len(results["accuracy_matrix"]) == 2 and results["config"]["name"].startswith("cifar100-quick")
