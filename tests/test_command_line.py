"""The command line answers at once (issue 27.4): ``--help``, ``--version``, ``configs`` and argument errors import
neither torch, timm nor Avalanche; the names it checks are the registries'; ``--print-config`` validates exactly as
a run does, so what it prints is what would run."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from avalanche_lpa import names
from avalanche_lpa.cli import CONSOLE_DESCRIPTION, console
from avalanche_lpa.data import DATASETS
from avalanche_lpa.models import ATTN_TYPES, TIMM_PREFIX
from avalanche_lpa.training import STRATEGIES
from avalanche_lpa.version import __version__

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "timm", "avalanche", "torchvision")

# Runs console(argv) in a fresh interpreter and reports what it printed, its status and the heavy modules loaded.
_PROBE = """
import contextlib, io, json, sys
from avalanche_lpa.cli import console
out, err = io.StringIO(), io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
        code = console(json.loads(sys.argv[1]))
    except SystemExit as stop:
        code = stop.code
heavy = sorted({name.split(".")[0] for name in sys.modules} & {"torch", "timm", "avalanche", "torchvision"})
print(json.dumps({"code": code, "out": out.getvalue(), "err": err.getvalue(), "heavy": heavy}))
"""


def _console(*argv: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(list(argv))], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("argv, code", [
    (["--help"], 0),
    (["--version"], 0),
    (["configs"], 0),
    (["configs", "extra"], 2),
    (["--no-such-flag"], 2),
    (["--seed", "abc"], 2),
    (["--model", "vit"], 2),
    (["--strategy", "l2p"], 2),
    (["--models", "lpa", "bogus"], 2),
])  # fmt: skip
def test_help_version_configs_and_argument_errors_import_nothing_heavy(argv, code):
    result = _console(*argv)
    assert result["code"] == code and result["heavy"] == [], result
    if code == 2:
        assert result["err"].strip() and "Traceback" not in result["err"]


def test_version_names_the_package_version():
    assert _console("--version")["out"].strip() == f"avalanche-lpa {__version__}"


def test_the_names_the_command_line_checks_are_the_registries():
    assert names.ATTENTION_TYPES == ATTN_TYPES
    assert names.STRATEGY_NAMES == STRATEGIES
    assert names.TIMM_PREFIX == TIMM_PREFIX
    assert names.DOWNLOADED_DATASETS == tuple(info.title for info in DATASETS.values() if info.download_size)
    assert "--data-root;\nCIFAR-100, Fashion-MNIST, Tiny-ImageNet and CORe50 are downloaded there" in CONSOLE_DESCRIPTION


@pytest.mark.parametrize("settings, message", [
    (["strategy.mem_size=-5"], "strategy.mem_size: must be an integer of at least 1, got -5"),
    (["strategy.train_mb_size=0"], "strategy.train_mb_size: must be an integer of at least 1, got 0"),
    (["strategy.loss=ce", "strategy.mixup=0.5"], "strategy: mixup / cutmix need loss='bce' (soft targets)"),
    (["strategy.distillation.temperature=0"], "strategy: temperature must be positive, got 0.0"),
    (["strategy.lr_schedule.warmup_epochs=0.5"], "strategy: step='epoch' needs whole warm-up epochs, got 0.5"),
    (["device=tpu"], "device 'tpu': unknown device; use --device auto, cpu, cuda, cuda:N or mps"),
    # ranges and names of options a run refused only when it started, or that trained silently
    (["strategy.optimizer=adam"], "strategy.optimizer must be one of adamw, sgd, got 'adam'"),
    (["strategy.lr=-1"], "strategy.lr: must be a number above 0, got -1.0"),
    (["strategy.weight_decay=-0.1"], "strategy.weight_decay: must be a number of at least 0, got -0.1"),
    (["strategy.label_smoothing=1.0"], "strategy.label_smoothing: must lie in [0, 1), got 1.0"),
    (["strategy.name=lwf", "strategy.temperature=0"], "strategy.temperature: must be a number above 0, got 0.0"),
    (["strategy.name=ewc", "strategy.ewc_mode=online"], "strategy.ewc_mode: 'online' needs strategy.decay_factor"),
    (["strategy=5"], "strategy: expected a mapping of options"),
    (["data.max_train_per_class=-3"], "data.max_train_per_class: must be null (all images) or at least 1, got -3"),
    (["data.max_test_per_class=0"], "data.max_test_per_class: must be null (all images) or at least 1, got 0"),
    (["data.synthetic.img_size=0"], "data.synthetic.img_size: must be at least 1, got 0"),
    (["data.folder.in_chans=2"], "data.folder.in_chans: must be 1 (grey) or 3 (RGB), got 2"),
    (["data.folder.mean=[0.5]"], "data.folder.mean: needs one value per channel (data.folder.in_chans = 3)"),
    (["data.folder.test_fraction=1.5"], "data.folder.test_fraction: must lie between 0 and 1"),
    (["output.dir=runs/{nme}"], "output.dir: 'runs/{nme}' names nme; the fields filled in are {name}, {model}"),
    (["name=x-{run}"], "name: 'x-{run}' names run; the fields filled in are {model}, {strategy}, {seed}"),
])  # fmt: skip
def test_print_config_refuses_what_a_run_refuses(tmp_path, capsys, settings, message):
    # Before: --print-config printed mem_size: -5 and exited 0; the run refused the same value when it started.
    flags = [part for setting in settings for part in ("--set", setting)]
    code = console(["--config", "cifar100_b0_10steps", *flags, "--output", str(tmp_path / "out"), "--print-config"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(f"error: {message}") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_print_config_prints_a_device_this_machine_lacks(tmp_path, capsys):
    """A config may be printed (or written) for another machine: only the device's spelling is checked before the
    run starts, which refuses a device this machine lacks."""
    code = console(["--config", "cifar100_quick", "--device", "cuda:7", "--print-config"])
    assert code == 0 and "device: cuda:7" in capsys.readouterr().out


def _python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.slow
def test_importing_the_package_is_light_and_timm_users_still_get_our_models():
    heavy = "import sys; print(sorted({n.split('.')[0] for n in sys.modules} & {'torch', 'timm', 'avalanche'}))"
    assert _python(f"import avalanche_lpa; {heavy}") == "[]"
    registered = "print('lpa_vit_cifar' in timm.list_models('lpa_vit*'))"
    assert _python(f"import timm, avalanche_lpa; {registered}") == "True"  # timm first: registered as always
    assert _python(f"import avalanche_lpa.models, timm; {registered}") == "True"
    assert _python(f"import timm; from avalanche_lpa import LPAViT; {registered}") == "True"


def test_the_citation_file_and_the_readme_cite_the_same_paper_and_version():
    import yaml

    citation = yaml.safe_load((REPO / "CITATION.cff").read_text())
    readme = (REPO / "README.md").read_text()
    paper = citation["references"][0]
    assert citation["cff-version"] == "1.2.0" and citation["version"] == __version__
    assert paper["title"] in readme and paper["identifiers"][0]["value"] in readme
    authors = " and ".join(f"{a['family-names']}, {a['given-names']}" for a in paper["authors"])
    assert f"author    = {{{authors}}}" in readme and f"version = {{{__version__}}}" in readme
