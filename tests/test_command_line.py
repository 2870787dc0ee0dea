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
    if code == 2:  # one line naming the problem (argparse printed its whole usage block first)
        err = result["err"].strip()
        assert err.startswith("error: ") and len(err.splitlines()) == 1
        assert argv[0] == "configs" or err.endswith("(avalanche-lpa --help lists the flags)")


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
    (["model.overrides.embed_dim=abc"], "model.overrides.embed_dim: expected an integer, got 'abc' (a string)"),
    (["strategy.finetune.epochs=-1"], "strategy: finetune.epochs must be at least 0 (0 or finetune: false = off), got -1"),
    (["strategy.finetune.lr=0"], "strategy: finetune.lr must be above 0, got 0"),
    (["data.n_experiences=7"], "data.n_experiences=7 does not divide the 100 classes of cifar100"),
    (["data.class_order=[0, 1, 2]"], "data.class_order must list each of the 100 cifar100 class ids 0..99 once"),
])  # fmt: skip
def test_print_config_refuses_what_a_run_refuses(tmp_path, capsys, settings, message):
    # Before: --print-config printed mem_size: -5 and exited 0; the run refused the same value when it started.
    flags = [part for setting in settings for part in ("--set", setting)]
    code = console(["--config", "cifar100_b0_10steps", *flags, "--output", str(tmp_path / "out"), "--print-config"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(f"error: {message}") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "1", "2"], "--seeds: a flag of --compare; add --compare, or use --model / --strategy / --seed"),
    (["--models", "lpa", "--no-joint"], "--models, --no-joint: flags of --compare"),
    (["--compare", "--model", "gpsa"], "--model gpsa picks the model of one run; with --compare list them with --models"),
    (["--compare", "--eval-only"], "--eval-only re-evaluates one finished run; drop --compare"),
    (["--resume", "--eval-only", "--overwrite"], "--overwrite starts a run afresh"),
    (["--compare", "--models", "lpa", "timm:not_a_model"], "--compare, model timm:not_a_model with strategy lpa: "
                                                          "model.name: 'not_a_model' is not a timm model"),
    (["--compare", "--strategies", "lpa", "joint"], "--compare, model lpa with strategy joint: strategy 'joint' trains "
                                                    "once on the whole stream"),
])  # fmt: skip
def test_flags_that_contradict_each_other_are_refused_not_ignored(tmp_path, capsys, argv, message):
    # Before: the compare flags were dropped without --compare, --model replaced by the default models under it, and
    # a comparison checked each cell only when its turn came (after hours of the cells before it).
    code = console(["--config", "fashion_mnist", "--output", str(tmp_path / "out"), *argv, "--print-config"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(f"error: {message}") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_a_literal_brace_in_the_name_survives_a_comparison(capsys):
    # {{x}} is how the template check asks for a brace; compare put the filled-in name back as a template
    from avalanche_lpa.config import load_config
    from avalanche_lpa.runner import comparison_cells, run_name

    cells = comparison_cells(load_config("fashion_mnist", ["name=fm{{x}}-{model}"]), models=("lpa",), seeds=(1,))
    assert [label for label, _ in cells] == ["lpa / lpa"] and run_name(cells[0][1]) == "fm{x}-lpa-lpa-s1"


def test_resume_without_a_run_or_a_config_is_refused(tmp_path, capsys):
    # Before: no --config and no config.yaml in the folder started the default config, the GPU recipe.
    assert console(["--output", str(tmp_path / "typo"), "--resume", "--print-config"]) == 2
    assert capsys.readouterr().err.startswith(f"error: --resume: {tmp_path / 'typo'} holds no run to continue")
    code = console(["--config", "fashion_mnist", "--output", str(tmp_path / "job"), "--resume", "--print-config"])
    assert code == 0  # a job script that always passes --resume starts the run in an empty folder


def test_a_base_names_a_shipped_config_and_a_key_given_twice_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "common.yaml").write_text("seed: 4242\n")  # in the working directory, not beside the file
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "exp.yaml").write_text("base: common.yaml\n")
    assert console(["--config", "sub/exp.yaml", "--print-config"]) == 2
    assert "base 'common.yaml' is neither a file beside it nor a shipped config" in capsys.readouterr().err
    (tmp_path / "mine.yaml").write_text("base: fashion_mnist.yaml\nseed: 3\n")
    assert console(["--config", str(tmp_path / "mine.yaml"), "--print-config"]) == 0
    assert "name: fmnist-{model}\nseed: 3\n" in capsys.readouterr().out
    (tmp_path / "twice.yaml").write_text("base: fashion_mnist\ndata:\n  n_experiences: 2\nseed: 3\ndata:\n  seed: 1\n")
    assert console(["--config", str(tmp_path / "twice.yaml"), "--print-config"]) == 2
    assert "key 'data' is given twice in one mapping (lines 2 and 5); keep one" in capsys.readouterr().err


def test_the_interrupt_line_says_what_is_left():
    from types import SimpleNamespace

    from avalanche_lpa.cli import _interrupted
    from avalanche_lpa.config import load_config

    run = SimpleNamespace(print_config=False, eval_only=False)
    assert _interrupted(run, None) == "interrupted"
    assert "continue with --resume" in _interrupted(run, load_config("fashion_mnist"))
    assert "nothing to resume" in _interrupted(run, load_config("fashion_mnist", ["output.checkpoint=false"]))
    assert "files are as they were" in _interrupted(SimpleNamespace(print_config=False, eval_only=True),
                                                    load_config("fashion_mnist"))


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
