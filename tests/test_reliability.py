"""Reliability probes of issue 10, each replayed as a test: a diverged run fails loudly, numbers in every spelling,
``--resume`` keeps the run's config, one run per folder, one-line errors for bad input with nothing left behind,
datasets the Avalanche way (never touching the network), a kill during a checkpoint write, and the small fixes.
"""
import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
from avalanche.core import SupervisedPlugin
from avalanche.training import LwF, Naive

from avalanche_lpa.data import datasets as data_module
from avalanche_lpa.runner.checkpoint import load_checkpoint
from avalanche_lpa.cli import main
from avalanche_lpa.config import ConfigError, load_config
from avalanche_lpa.runner.folder import LOCK_NAME
from avalanche_lpa.metrics import uniform_attention_distance
from avalanche_lpa.report import accuracy_matrix_figure, locality_figure
from avalanche_lpa.runner import RunInterrupted, read_run_config, run
from avalanche_lpa.runner.card import run_facts
from avalanche_lpa.plugins import DivergenceError, DivergenceGuardPlugin

from .conftest import make_tiny
from .fake_datasets import make_fake_cifar100, make_fake_fashion_mnist_gz
from .processes import kill_when_printed

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = "{img_size: 8, patch_size: 2, in_chans: 1, embed_dim: 18, depth: 2, num_heads: 9}"
SYNTHETIC_YAML = f"""
name: syn
seed: 7
device: cpu
data: {{dataset: synthetic, n_experiences: 3}}
model: {{preset: tiny, overrides: {TINY_MODEL}}}
strategy: {{name: replay, mem_size: 24, train_epochs: 2, train_mb_size: 16, lr: 0.003}}
evaluation: {{progress_bar: false, locality_probe_size: 24}}
"""


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test here touches the network: every urllib request fails as it does on a machine without one."""

    def refuse(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("urllib.request.urlopen", refuse)


@pytest.fixture
def base_yaml(tmp_path) -> Path:
    path = tmp_path / "synthetic.yaml"
    path.write_text(SYNTHETIC_YAML)
    return path


def cli(base_yaml: Path, *args: str):
    """Runs the command line in-process with ``base_yaml`` as the script's default config."""
    return main(list(args), description="", default_config=base_yaml)


def one_line_error(capsys) -> str:
    """The captured stderr, checked to be exactly one ``error:`` line (stdout is dropped)."""
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# -- 1. divergence guard ------------------------------------------------------------------------------------
class _PoisonGradients(SupervisedPlugin):
    """Makes one update write NaN into the parameters while the loss stays finite."""

    def __init__(self, experience: int = 0, iteration: int = 1) -> None:
        super().__init__()
        self.at = (experience, iteration)

    def after_backward(self, strategy, **kwargs):
        if (strategy.experience.current_experience, strategy.clock.train_exp_iterations) == self.at:
            for p in strategy.model.parameters():
                if p.grad is not None:
                    p.grad.fill_(float("nan"))


def test_guard_stops_on_a_non_finite_loss_before_backward(cil_benchmark):
    model = make_tiny()
    backward_calls = []

    class CountBackward(SupervisedPlugin):
        def after_backward(self, strategy, **kwargs):
            backward_calls.append(strategy.clock.train_exp_iterations)

    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=1e6),
                     criterion=torch.nn.CrossEntropyLoss(), train_mb_size=16, train_epochs=2, device="cpu",
                     plugins=[DivergenceGuardPlugin(hint="lower strategy.lr"), CountBackward()], evaluator=None)
    with pytest.raises(DivergenceError) as info:
        strategy.train(cil_benchmark.train_stream[0])
    message = str(info.value)
    assert len(message.splitlines()) == 1
    assert message.startswith("training diverged at experience 0, epoch 0, iteration ")
    assert "the loss is nan" in message or "the loss is inf" in message or "hold NaN/inf" in message
    assert message.endswith("; lower strategy.lr")
    failed_at = int(message.split("iteration ")[1].split(" ")[0])
    if "the loss is" in message:  # stopped before the backward pass of the failing iteration
        assert failed_at not in backward_calls


def test_guard_stops_on_non_finite_parameters_with_any_strategy(cil_benchmark):
    model = make_tiny()
    strategy = LwF(model=model, optimizer=torch.optim.AdamW(model.parameters(), lr=1e-3),
                   criterion=torch.nn.CrossEntropyLoss(), alpha=1.0, temperature=2.0, train_mb_size=16,
                   train_epochs=1, device="cpu", plugins=[_PoisonGradients(1, 2), DivergenceGuardPlugin()],
                   evaluator=None)
    strategy.train(cil_benchmark.train_stream[0])  # no false alarm on a healthy experience
    with pytest.raises(DivergenceError, match=r"at experience 1, epoch 0, iteration 2 .*parameter tensors hold "
                                              r"NaN/inf \(first: .*\); lower the learning rate$"):
        strategy.train(cil_benchmark.train_stream[1])


class _NaNImage(SupervisedPlugin):
    """Puts one NaN pixel into the first image of one training batch (a corrupt sample)."""

    def __init__(self, experience: int = 0, iteration: int = 1) -> None:
        super().__init__()
        self.at = (experience, iteration)

    def before_forward(self, strategy, **kwargs):
        if (strategy.experience.current_experience, strategy.clock.train_exp_iterations) == self.at:
            strategy.mb_x[0].view(-1)[0] = float("nan")


def _guards(strategy):
    return [p for p in strategy.plugins if isinstance(p, DivergenceGuardPlugin)]


@pytest.mark.parametrize("name", ["naive", "lpa"])
def test_build_strategy_fails_loudly_on_a_nan_image(name, cil_benchmark):
    from avalanche_lpa.training import build_strategy

    small = dict(train_epochs=1, epochs_first=None, finetune=False, repeated_aug=1, mem_size=12)
    options = small if name == "lpa" else {}
    strategy = build_strategy(name, make_tiny(head_type="incremental"), device="cpu", evaluator=None,
                              train_mb_size=16, plugins=[_NaNImage()], **options)
    (guard,) = _guards(strategy)
    given = next(i for i, p in enumerate(strategy.plugins) if isinstance(p, _NaNImage))
    assert strategy.plugins.index(guard) > given  # after the recipe's and the given plugins: sees the final loss
    with pytest.raises(DivergenceError,
                       match=r"^training diverged at experience 0, epoch 0, iteration 1 .*: the loss is nan; lower lr"):
        strategy.train(cil_benchmark.train_stream[0])


def test_the_guard_can_be_switched_off_and_is_never_added_twice(cil_benchmark):
    from avalanche_lpa.training import build_strategy

    model = make_tiny(head_type="incremental")
    off = build_strategy("naive", model, device="cpu", evaluator=None, train_mb_size=16, plugins=[_NaNImage()],
                         divergence_guard=False)
    assert _guards(off) == []
    off.train(cil_benchmark.train_stream[0])  # trains on silently: what the guard is for
    assert not all(torch.isfinite(p).all() for p in model.parameters())
    own = DivergenceGuardPlugin(hint="the runner's hint")
    strategy = build_strategy("naive", make_tiny(), device="cpu", evaluator=None, plugins=[own])
    assert _guards(strategy) == [own]


def test_the_runner_ends_up_with_exactly_one_guard(base_yaml, tmp_path):
    seen = []

    class Capture(SupervisedPlugin):
        def before_training(self, strategy, **kwargs):
            seen.append(_guards(strategy))

    config = load_config(base_yaml, ["data.n_experiences=2", "strategy.train_epochs=1", f"output.dir={tmp_path}"])
    with pytest.raises(RunInterrupted):
        run(config, plugins=[Capture()], stop_after=1)
    assert len(seen[0]) == 1 and "--overwrite" in seen[0][0].hint  # the runner's guard, with its hint
    seen.clear()
    with pytest.raises(RunInterrupted):
        run(config, plugins=[Capture()], stop_after=1, overwrite=True, divergence_guard=False)
    assert seen[0] == []


def test_bic_on_small_experiences_says_the_size_it_needs():
    from avalanche_lpa.data import synthetic_benchmark
    from avalanche_lpa.training import build_strategy

    benchmark = synthetic_benchmark(n_experiences=2, classes_per_experience=2, train_per_class=20, test_per_class=4)
    assert [len(e.dataset) for e in benchmark.train_stream] == [40, 40]
    strategy = build_strategy("bic", make_tiny(head_type="incremental"), device="cpu", evaluator=None,
                              train_mb_size=16, stage_2_epochs=1)
    with pytest.raises(ValueError, match=r"^bic sets int\(val_percentage x mem_size\) = 200 .*class 0 of experience 0 "
                                         r"has only 20.*at least 101 training images.*to at most 38$"):
        strategy.train(benchmark.train_stream[0])
    fitting = build_strategy("bic", make_tiny(head_type="incremental"), device="cpu", evaluator=None,
                             train_mb_size=16, stage_2_epochs=1, mem_size=200)  # 20 aside: 10 of 20 per class
    for experience in benchmark.train_stream:
        fitting.train(experience)
    assert fitting.clock.train_exp_counter == 2


def test_guard_ignores_large_finite_values():
    model = make_tiny()
    with torch.no_grad():
        next(model.parameters()).fill_(3e38)  # near float32's max: a sum would overflow, the max-abs does not
    assert DivergenceGuardPlugin._bad_parameters(model) == []
    with torch.no_grad():
        next(model.parameters())[0].fill_(float("-inf"))
    assert DivergenceGuardPlugin._bad_parameters(model) == [next(iter(model.state_dict()))]


def test_diverged_cli_run_fails_in_one_line_without_results(base_yaml, tmp_path, capsys):
    out = tmp_path / "diverged"
    code = cli(base_yaml, "--output", str(out), "--set", "strategy.optimizer=sgd", "--set", "strategy.lr=1.0e+6")
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and err.startswith("error: training diverged at experience 0")
    assert "lower strategy.lr (now 1e+06)" in err and "no results were written" in err
    assert "avg incremental accuracy" not in captured.out
    assert not (out / "results.json").exists() and not (out / "model.pt").exists()
    assert "error: training diverged" in (out / "log.txt").read_text()  # the log says why it ended


@pytest.mark.slow
def test_divergence_keeps_the_last_good_checkpoint(base_yaml, tmp_path):
    config = load_config(base_yaml, [f"output.dir={tmp_path / 'late'}"])
    with pytest.raises(DivergenceError, match=r"at experience 1, .*checkpoint.pkl \(1 finished experience\) is kept"):
        run(config, plugins=[_PoisonGradients(experience=1, iteration=3)])
    folder = tmp_path / "late"
    assert json.loads((folder / "progress.json").read_text())["finished_experiences"] == 1
    assert not (folder / "results.json").exists()
    model = make_tiny()
    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                     criterion=torch.nn.CrossEntropyLoss(), evaluator=None)
    restored, next_exp = load_checkpoint(strategy, folder / "checkpoint.pkl")
    assert next_exp == 1
    assert all(torch.isfinite(p).all() for p in restored.model.parameters())


# -- 2. numbers in every spelling ------------------------------------------------------------------------------
SPELLINGS = [
    ("1e-3", 1e-3), ("1e6", 1e6), ("1.0e6", 1e6), ("1e+6", 1e6), ("1.0e+6", 1e6), ("-2.5E+4", -2.5e4),
    (".5", 0.5), ("5.", 5.0), ("+1E-3", 1e-3), (".5e-3", 5e-4), ("2.5e3", 2500.0), ("3", 3.0), ("1_000.5", 1000.5),
]


@pytest.mark.parametrize("spelling, value", SPELLINGS)
def test_number_spellings_in_set_and_yaml(spelling, value, tmp_path):
    if value < 0:  # read as the number it is, from --set and from YAML: the lr's range check names it
        with pytest.raises(ConfigError, match=f"strategy.lr: must be a number above 0, got {value}"):
            load_config(None, [f"strategy.lr={spelling}"])
        (tmp_path / "negative.yaml").write_text(f"strategy:\n  lr: {spelling}\n")
        with pytest.raises(ConfigError, match=f"strategy.lr: must be a number above 0, got {value}"):
            load_config(tmp_path / "negative.yaml")
        value, spelling = -value, spelling.lstrip("-")
    assert load_config(None, [f"strategy.lr={spelling}"]).strategy["lr"] == value
    path = tmp_path / "config.yaml"
    path.write_text(f"strategy:\n  lr: {spelling}\n  weight_decay: {spelling}\n")
    loaded = load_config(path)
    assert loaded.strategy["lr"] == value and loaded.strategy["weight_decay"] == value
    assert isinstance(loaded.strategy["lr"], float)


@pytest.mark.parametrize("spelling, value", [("2e3", 2000), ("1.0e+3", 1000), ("64", 64), ("1E2", 100)])
def test_integral_number_spellings_for_integer_fields(spelling, value):
    config = load_config(None, [f"strategy.mem_size={spelling}", f"strategy.eval_mb_size={spelling}"])
    assert config.strategy["mem_size"] == value and isinstance(config.strategy["mem_size"], int)
    assert config.strategy["eval_mb_size"] == value and isinstance(config.strategy["eval_mb_size"], int)


@pytest.mark.parametrize("spelling", ["1e-3x", "e5", "1e", "1.2.3", "ten"])
def test_non_numbers_stay_one_line_errors(spelling):
    with pytest.raises(ConfigError, match=r"^strategy.lr: expected a number, got '.*' \(a string\)$"):
        load_config(None, [f"strategy.lr={spelling}"])
    with pytest.raises(ConfigError, match=r"strategy.train_epochs: expected an integer, got 2.5"):
        load_config(None, ["strategy.train_epochs=2.5e0"])


def test_invalid_yaml_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("output: {dir: runs/{name}}\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert "not valid YAML" in str(info.value) and "line 1" in str(info.value)
    assert len(str(info.value).splitlines()) == 1


# -- 3. --resume / --eval-only use the run's own config.yaml ---------------------------------------------------
def _interrupted_run(base_yaml: Path, folder: Path) -> None:
    """A run started with flags that differ from the defaults, interrupted after one experience."""
    config = load_config(base_yaml, ["strategy.train_epochs=1", "data.synthetic.train_per_class=20",
                                     f"output.dir={folder}"])
    with pytest.raises(RunInterrupted):
        run(config, stop_after=1)


@pytest.mark.slow
def test_resume_continues_with_the_folders_config(base_yaml, tmp_path, capsys):
    folder = tmp_path / "interrupted"
    _interrupted_run(base_yaml, folder)
    saved = (folder / "config.yaml").read_bytes()
    # The README's literal form: only --output and --resume (plus harmless flags), none of the original --set.
    code = cli(base_yaml, "--output", str(folder), "--resume", "--device", "cpu",
               "--set", "data.num_workers=0", "--set", "evaluation.progress_bar=false")
    assert code == 0, capsys.readouterr().err
    results = json.loads((folder / "results.json").read_text())
    assert results["config"]["strategy"]["train_epochs"] == 1
    assert results["config"]["data"]["synthetic"]["train_per_class"] == 20
    # 40 images / batch 16 = 3 iterations per epoch, 1 epoch: the defaults (64 images, 2 epochs) give 8 per step.
    assert results["train_iterations"] == [3, 6, 9]
    assert (folder / "config.yaml").read_bytes() == saved


def test_a_folder_from_before_sample_order_resumes_and_reports_the_order_it_ran(base_yaml, tmp_path, capsys):
    """A run folder written before ``data.sample_order`` existed drew Avalanche's shuffle (its pickled plugin
    still does): resumed, its config and run card say so, not today's default, and its config.yaml is not rewritten."""
    folder = tmp_path / "interrupted"
    _interrupted_run(base_yaml, folder)
    text = (folder / "config.yaml").read_text()
    assert "  sample_order: seeded\n" in text
    old = text.replace("  sample_order: seeded\n", "")
    (folder / "config.yaml").write_text(old)
    assert cli(base_yaml, "--output", str(folder), "--resume", "--print-config") == 0
    printed = capsys.readouterr().out
    assert "sample_order: avalanche" in printed
    config = read_run_config(folder)
    assert config.data.sample_order == "avalanche" and run_facts(config, 1)["sample_order"] == "avalanche"
    # A config the user writes without the key gets today's default.
    assert load_config(base_yaml).data.sample_order == "seeded"
    assert (folder / "config.yaml").read_text() == old


def test_resume_refuses_flags_that_change_the_experiment(base_yaml, tmp_path, capsys):
    folder = tmp_path / "interrupted"
    _interrupted_run(base_yaml, folder)
    before = sorted(p.name for p in folder.iterdir())
    code = cli(base_yaml, "--output", str(folder), "--resume", "--set", "strategy.lr=1e-2",
               "--set", "data.n_experiences=2")
    err = one_line_error(capsys)
    assert code == 2
    assert "strategy.lr (0.003 -> 0.01)" in err and "data.n_experiences (3 -> 2)" in err
    assert "data.num_workers" in err  # names what may differ
    assert sorted(p.name for p in folder.iterdir()) == before
    # An explicit --config is compared too (here the base file lacks the run's flags).
    assert cli(base_yaml, "--config", str(base_yaml), "--output", str(folder), "--resume") == 2
    assert "strategy.train_epochs (1 -> 2)" in one_line_error(capsys)


@pytest.mark.slow
def test_eval_only_uses_the_folders_config(base_yaml, tmp_path, capsys):
    folder = tmp_path / "done"
    config = load_config(base_yaml, ["data.n_experiences=2", "strategy.train_epochs=1", f"output.dir={folder}"])
    run(config)
    assert cli(base_yaml, "--output", str(folder), "--eval-only", "--set", "data.n_experiences=3") == 2
    assert "data.n_experiences (2 -> 3)" in one_line_error(capsys)
    assert not (folder / "eval_results.json").exists()
    assert cli(base_yaml, "--output", str(folder), "--eval-only", "--device", "cpu") == 0
    assert (folder / "eval_results.json").is_file()


# -- 4. one run per folder, --overwrite ----------------------------------------------------------------------
def _hold_lock(folder: Path) -> subprocess.Popen:
    """Another process holding the folder's lock the way a run does (flock on .lock, pid inside)."""
    folder.mkdir(parents=True, exist_ok=True)
    code = textwrap.dedent(f"""
        import fcntl, os, sys, time
        fd = os.open({str(folder / LOCK_NAME)!r}, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0); os.write(fd, str(os.getpid()).encode())
        print("locked", flush=True)
        time.sleep(120)
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_brief_probe_of_the_lock_does_not_refuse_the_run_that_takes_it(tmp_path):
    # Under torchrun every rank probes the lock (check_not_locked) while rank 0 takes it: a probe holds the flock
    # for an instant, and must neither refuse the run taking it nor another probe (CI saw rank 0 refused so).
    import threading
    from avalanche_lpa.runner.folder import RunFolderLock, check_not_locked
    folder = tmp_path / "run"
    folder.mkdir()
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a probe in the middle of its check
    releaser = threading.Timer(0.2, lambda: fcntl.flock(fd, fcntl.LOCK_UN))
    releaser.start()
    try:
        check_not_locked(folder)  # waits out the probe
        fcntl.flock(fd, fcntl.LOCK_EX)
        threading.Timer(0.2, lambda: fcntl.flock(fd, fcntl.LOCK_UN)).start()
        with RunFolderLock(folder):
            assert (folder / LOCK_NAME).read_text().strip() == str(os.getpid())
    finally:
        releaser.join()
        os.close(fd)


def test_second_run_in_a_folder_in_use_is_refused_and_a_dead_holder_frees_it(base_yaml, tmp_path, capsys):
    folder = tmp_path / "busy"
    holder = _hold_lock(folder)
    try:
        code = cli(base_yaml, "--output", str(folder), "--set", "data.n_experiences=1")
        err = one_line_error(capsys)
        assert code == 2 and f"another run is using {folder} (pid {holder.pid})" in err
        assert sorted(p.name for p in folder.iterdir()) == [LOCK_NAME]  # nothing written
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: the kernel drops the lock, the file stays
        holder.wait()
    assert (folder / LOCK_NAME).exists()
    assert cli(base_yaml, "--output", str(folder), "--set", "data.n_experiences=1") == 0


def test_lock_is_held_during_the_run_and_released_after(base_yaml, tmp_path):
    folder = tmp_path / "held"
    seen = []

    class TryLock(SupervisedPlugin):
        def before_training_exp(self, strategy, **kwargs):
            fd = os.open(folder / LOCK_NAME, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                seen.append("free")
            except BlockingIOError:
                seen.append(os.pread(fd, 32, 0).decode().strip())
            finally:
                os.close(fd)

    run(load_config(base_yaml, ["data.n_experiences=1", f"output.dir={folder}"]), plugins=[TryLock()])
    assert seen == [str(os.getpid())]
    fd = os.open(folder / LOCK_NAME, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released: no BlockingIOError
    os.close(fd)


@pytest.mark.slow
def test_overwrite_starts_afresh_and_corrupt_checkpoint_advice_works(base_yaml, tmp_path, capsys):
    folder = tmp_path / "again"
    args = ["--output", str(folder), "--set", "data.n_experiences=2", "--set", "strategy.train_epochs=1"]
    assert cli(base_yaml, *args) == 0
    capsys.readouterr()
    (folder / "notes.txt").write_text("mine")
    assert cli(base_yaml, *args) == 2
    err = one_line_error(capsys)
    assert "already holds a run" in err and "--resume" in err and "--overwrite" in err
    checkpoint = folder / "checkpoint.pkl"
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    assert cli(base_yaml, *args, "--resume") == 0  # a finished run is left as it is: its checkpoint is not read
    assert "holds a finished run" in capsys.readouterr().out
    (folder / "results.json").unlink()  # an interrupted run: the resume needs its checkpoint
    assert cli(base_yaml, *args, "--resume") == 2
    err = one_line_error(capsys)
    assert "corrupt" in err and "--overwrite" in err and "without --resume" not in err
    assert cli(base_yaml, *args, "--overwrite") == 0  # the advice given is the way out
    capsys.readouterr()
    assert (folder / "notes.txt").read_text() == "mine"  # only the run's own files are deleted
    log = (folder / "log.txt").read_text()
    assert log.count("-- >> Start of training phase << --") == 2  # one fresh run, not three runs appended
    assert cli(base_yaml, *args, "--overwrite", "--resume") == 2
    one_line_error(capsys)


def test_overwrite_removes_the_runs_own_files_and_folders_only(tmp_path):
    from avalanche_lpa.runner.folder import clear_run_files

    ours = ["config.yaml", "results.json", "log.txt", "accuracy_curves.png", "locality.png", "attention_maps.png",
            "accuracy_matrix_fmnist-lpa.png", "csv/training_results.csv", "tb/events.out"]
    mine = ["my_figure.png", "notes.txt", "plots/locality.png"]
    for name in ours + mine:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    clear_run_files(tmp_path)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) == sorted(mine)


# -- 5. bad input: one line, exit 2, nothing created ---------------------------------------------------------
def _refused(base_yaml, capsys, out: Path, *args: str) -> str:
    """Exit 2 with one line, and no output folder (or, if it existed, nothing new in it)."""
    before = out.stat().st_mtime_ns if out.exists() else None
    code = cli(base_yaml, "--output", str(out), *args)
    err = one_line_error(capsys)
    assert code == 2
    assert (out.stat().st_mtime_ns if out.exists() else None) == before
    return err


def test_data_root_that_is_a_file(base_yaml, tmp_path, capsys):
    afile = tmp_path / "file.bin"
    afile.write_bytes(b"x")
    for dataset in ("cifar100", "fashion_mnist"):
        err = _refused(base_yaml, capsys, tmp_path / f"out-{dataset}", "--set", f"data.dataset={dataset}",
                       "--set", "data.n_experiences=5", "--set", "data.class_order=null", "--data-root", str(afile))
        assert f"data root {afile} is a file, not a folder" in err and "--data-root" in err


def test_unreadable_data_root(base_yaml, tmp_path, capsys, monkeypatch):
    root = tmp_path / "locked-data"
    root.mkdir()
    root.chmod(0)
    if os.geteuid() == 0:  # root reads anything: let os.access answer as for any other user
        real = os.access
        monkeypatch.setattr(data_module.os, "access", lambda p, mode: False if Path(p) == root else real(p, mode))
    try:
        err = _refused(base_yaml, capsys, tmp_path / "out", "--set", "data.dataset=cifar100",
                       "--set", "data.n_experiences=5", "--set", "data.class_order=null", "--data-root", str(root))
    finally:
        root.chmod(0o755)
    assert f"cannot read data root {root} (permission denied)" in err


def test_output_that_cannot_be_written(base_yaml, tmp_path, capsys):
    afile = tmp_path / "file.bin"
    afile.write_bytes(b"x")
    err = _refused(base_yaml, capsys, afile / "run")
    assert "cannot create output folder" in err and "is a file" in err
    assert "is a file, not a folder" in _refused(base_yaml, capsys, afile)
    unwritable = Path("/sys/avalanche-lpa-test-run")  # sysfs refuses new files, also to root
    err = _refused(base_yaml, capsys, unwritable)
    assert "cannot write output folder" in err and "--output" in err


@pytest.mark.parametrize("device, expected", [
    ("tpu", "device 'tpu': unknown device"),
    ("cuda:99", "cuda:99"),
    ("meta", "device 'meta' is not available here"),
])
def test_unknown_or_unavailable_device(base_yaml, tmp_path, capsys, device, expected):
    assert expected in _refused(base_yaml, capsys, tmp_path / "out", "--device", device)


@pytest.mark.parametrize("setting", ["strategy.train_mb_size=0", "strategy.eval_mb_size=0",
                                     "strategy.train_mb_size=-4", "data.num_workers=-1"])
def test_non_positive_sizes(base_yaml, tmp_path, capsys, setting):
    key = setting.split("=")[0]
    assert _refused(base_yaml, capsys, tmp_path / "out", "--set", setting).startswith(f"error: {key}: must be")


def test_errors_found_after_data_loading_leave_no_folder(base_yaml, tmp_path, capsys):
    err = _refused(base_yaml, capsys, tmp_path / "out", "--set", "strategy.mixup=0.5")  # needs loss=bce
    assert "mixup / cutmix need loss='bce'" in err
    err = _refused(base_yaml, capsys, tmp_path / "out", "--set", "model.overrides={depth: 0}")
    assert err.startswith("error: model.overrides: ") and "depth" in err


# -- 6. datasets the Avalanche way ---------------------------------------------------------------------------
@pytest.fixture
def avalanche_home(tmp_path, monkeypatch) -> Path:
    """A machine without datasets: Avalanche's dataset location moved to an empty temporary folder (never the
    user's ~/.avalanche), no $AVALANCHE_LPA_DATA and no Debian Fashion-MNIST package."""
    from avalanche.benchmarks.datasets import dataset_utils

    location = tmp_path / "avalanche-data"
    monkeypatch.setitem(dataset_utils.AVALANCHE_CONFIG, "dataset_location", str(location))
    monkeypatch.delenv("AVALANCHE_LPA_DATA", raising=False)
    monkeypatch.setattr(data_module, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian-package")
    return location


def test_default_data_root_is_avalanches_location(avalanche_home, monkeypatch):
    from avalanche.benchmarks.datasets import default_dataset_location

    assert data_module.default_data_root("cifar100") == Path(default_dataset_location("cifar100"))
    assert data_module.default_data_root("cifar100") == avalanche_home / "cifar100"
    assert data_module.default_data_root("fashion_mnist") == avalanche_home / "fashionmnist"
    monkeypatch.setenv("AVALANCHE_LPA_DATA", "/somewhere/else")
    assert data_module.default_data_root("cifar100") == Path("/somewhere/else")


def test_missing_cifar_is_downloaded_into_avalanches_location(avalanche_home, monkeypatch):
    calls = []

    def fake_download(url, download_root, filename=None, md5=None, **kwargs):  # torchvision's download step
        calls.append((url, Path(download_root)))
        make_fake_cifar100(Path(download_root))

    monkeypatch.setattr("torchvision.datasets.cifar.download_and_extract_archive", fake_download)
    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", lambda path, md5=None: os.path.isfile(path))
    bench = data_module.split_cifar100(None, n_experiences=10, class_order=list(range(100)))
    assert calls == [("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", avalanche_home / "cifar100")]
    assert bench.n_classes == 100
    data_module.split_cifar100(None, n_experiences=10, class_order=list(range(100)))
    assert len(calls) == 1  # found there the second time


def test_debian_fashion_mnist_is_a_source_before_any_download(avalanche_home, tmp_path, monkeypatch):
    monkeypatch.setattr(data_module, "DEBIAN_FASHION_MNIST", make_fake_fashion_mnist_gz(tmp_path / "debian"))
    bench = data_module.split_fashion_mnist(None, n_experiences=5, class_order=list(range(10)))  # offline here
    assert (avalanche_home / "fashionmnist" / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file()
    assert bench.n_classes == 10


def test_failed_download_is_one_line_with_where_and_how(base_yaml, avalanche_home, tmp_path, capsys):
    for dataset, expected in (("cifar100", "cifar-100-python/{train,test,meta}"),
                              ("fashion_mnist", "FashionMNIST/raw/{train-images-idx3-ubyte")):
        err = _refused(base_yaml, capsys, tmp_path / f"out-{dataset}", "--set", f"data.dataset={dataset}",
                       "--set", "data.class_order=null", "--set", "data.n_experiences=5")
        where = avalanche_home / data_module.AVALANCHE_DATASET_NAMES[dataset]
        assert f"expected {where}/{expected}" in err
        assert f"the download into {where} failed (" in err and "urlopen error" in err
        assert "--data-root" in err
        assert not avalanche_home.exists()  # no empty folders left by the failed download


def test_no_download_never_downloads(base_yaml, avalanche_home, tmp_path, capsys, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("--no-download must not download")

    monkeypatch.setattr("torchvision.datasets.cifar.download_and_extract_archive", fail)
    err = _refused(base_yaml, capsys, tmp_path / "out", "--set", "data.dataset=cifar100",
                   "--set", "data.n_experiences=5", "--set", "data.class_order=null", "--no-download")
    assert "downloading is off (--no-download / data.download: false)" in err
    assert load_config(None, ["data.download=false"]).data.download is False


# -- 7. small fixes ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_each_deprecation_warning_once_per_run(base_yaml, tmp_path):
    from avalanche._annotations import deprecated  # the decorator behind Avalanche's repeated warnings

    @deprecated(0.7, "use something else")
    def old_api():
        return None

    class CallsOldApi(SupervisedPlugin):  # as Avalanche's replay calls storage_policy.update after each experience
        def after_training_exp(self, strategy, **kwargs):
            old_api()

    config = load_config(base_yaml, [f"output.dir={tmp_path / 'warn'}", "strategy.train_epochs=1"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        run(config, plugins=[CallsOldApi()])
    messages = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    assert messages.count("Call to deprecated function old_api (removal in version 0.7: use something else)") == 1
    assert all(messages.count(m) == 1 for m in messages)  # Avalanche's own (replay's update in 0.6) too


def test_locality_figure_starts_at_zero_with_the_uniform_reference():
    reference = uniform_attention_distance(4)
    assert reference == pytest.approx(2.008, abs=1e-3)
    assert uniform_attention_distance(make_tiny()) == pytest.approx(reference)
    figure = locality_figure({"lpa": [[1.165, 1.19], [1.197, 1.2]], "lpa (joint)": [[1.17, 1.18], [1.2, 1.21]]},
                             reference=reference)
    assert [axes.get_title() for axes in figure.axes] == ["layer 1", "layer 2"]  # layers counted from 1
    for axes in figure.axes:
        low, high = axes.get_ylim()
        assert low == 0.0 and high > reference
        # the uniform reference dotted and grey; the joint control dashed, in the colour of its incremental run
        dotted = [line for line in axes.get_lines() if line.get_linestyle() == ":"]
        assert len(dotted) == 1 and list(dotted[0].get_ydata()) == [reference, reference]
        solid, dashed = ([line for line in axes.get_lines() if line.get_linestyle() == style] for style in ("-", "--"))
        assert len(solid) == len(dashed) == 1 and solid[0].get_color() == dashed[0].get_color()


def test_untrained_accuracy_matrix_cells_are_blank():
    figure = accuracy_matrix_figure([[0.5, 0.0, 0.0], [0.4, 0.6, 0.0], [0.3, 0.5, 0.7]])
    cells = figure.axes[0].images[0].get_array()
    assert cells.mask.tolist() == [[False, True, True], [False, False, True], [False, False, False]]
    assert sorted(t.get_text() for t in figure.axes[0].texts) == ["30", "40", "50", "50", "60", "70"]


@pytest.mark.slow
def test_run_results_carry_the_uniform_reference(base_yaml, tmp_path):
    results = run(load_config(base_yaml, [f"output.dir={tmp_path / 'ref'}", "data.n_experiences=1"]))
    assert results["locality"]["uniform_distance"] == pytest.approx(uniform_attention_distance(4))


# -- 8. a kill while the checkpoint is written ---------------------------------------------------------------
CHILD = """
import io, sys, time
import avalanche_lpa.runner.checkpoint as checkpoint
from avalanche_lpa.config import load_config
from avalanche_lpa.runner import run

original, calls = checkpoint.save_checkpoint, []

def slow_save(strategy, fname, exclude=None):
    calls.append(fname)
    if len(calls) < 2:
        return original(strategy, fname, exclude)
    buffer = io.BytesIO()
    original(strategy, buffer, exclude)
    data = buffer.getvalue()
    with open(fname, "wb") as handle:  # the second checkpoint: half of it, then the kill arrives
        handle.write(data[: len(data) // 2])
        handle.flush()
        print("WRITING", flush=True)
        time.sleep(120)

checkpoint.save_checkpoint = slow_save
run(load_config(sys.argv[1], ["output.dir=" + sys.argv[2]]))
"""


@pytest.mark.slow
def test_sigkill_while_writing_a_checkpoint_keeps_the_previous_one(base_yaml, tmp_path, capsys):
    folder = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    kill_when_printed(CHILD, [str(base_yaml), str(folder)], "WRITING", env, tmp_path, timeout=120)
    # The log is at least as far as the checkpoint being written: both evaluations were flushed.
    assert (folder / "log.txt").read_text().count("-- >> End of eval phase << --") == 2
    assert json.loads((folder / "progress.json").read_text())["finished_experiences"] == 1
    assert list(folder.glob(".checkpoint.pkl.*.tmp"))  # the half-written temporary file
    code = cli(base_yaml, "--output", str(folder), "--resume")
    assert code == 0, capsys.readouterr().err
    results = json.loads((folder / "results.json").read_text())
    assert len(results["accuracy_matrix"]) == 3 and len(results["train_iterations"]) == 3
    assert not list(folder.glob(".checkpoint.pkl.*.tmp"))  # the stale temporary file is gone
