"""Long runs survive (issue 21): a full disk, planted symlinks, damaged run files, checkpoints inside an
experience, preemption by SIGTERM / SIGUSR1."""
import contextlib
import errno
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from avalanche.core import SupervisedPlugin

import avalanche_lpa.runner.runs as run_module
import avalanche_lpa.files as files
from avalanche_lpa.config import HARMLESS_KEYS, ConfigError, load_config
from avalanche_lpa.runner.midway import checkpoint_plugin
from avalanche_lpa.runner import RunInterrupted, run

from .processes import kill_when_printed
from .test_reliability import SYNTHETIC_YAML, cli, one_line_error

# End-to-end runs (whole runs, scripts, kills and resumes): CI runs them, the inner loop (-m "not slow") does not.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def base_yaml(tmp_path) -> Path:
    path = tmp_path / "synthetic.yaml"
    path.write_text(SYNTHETIC_YAML)
    return path


def _snapshot(folder: Path, names):
    return {name: (folder / name).read_bytes() for name in names if (folder / name).is_file()}


def one_line_error_free(capsys) -> str:
    """The captured stderr, checked to be exactly one line without a traceback."""
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# -- 4. symlinks ---------------------------------------------------------------------------------------------
def test_a_symlinked_lock_is_refused_and_its_target_untouched(base_yaml, tmp_path, capsys):
    folder, victim = tmp_path / "run", tmp_path / "victim.txt"
    folder.mkdir()
    victim.write_text("precious\n")
    (folder / ".lock").symlink_to(victim)
    assert cli(base_yaml, "--output", str(folder)) == 2
    err = one_line_error(capsys)
    assert ".lock" in err and "symlink" in err
    assert victim.read_text() == "precious\n"
    assert not (folder / "config.yaml").exists()  # refused before anything was written


@pytest.mark.parametrize("name", ["log.txt", "results.json", "checkpoint.pkl", "tb"])
def test_no_run_file_is_written_through_a_planted_symlink(base_yaml, tmp_path, capsys, name):
    folder, victim = tmp_path / "run", tmp_path / "victim"
    folder.mkdir()
    victim.write_text("precious\n")
    (folder / name).symlink_to(victim)
    assert cli(base_yaml, "--output", str(folder)) == 2
    err = one_line_error(capsys)
    assert name in err and "symlink" in err
    assert victim.read_text() == "precious\n"


def test_atomic_write_replaces_a_symlink_instead_of_following_it(tmp_path):
    victim, link = tmp_path / "victim", tmp_path / "link"
    victim.write_text("precious\n")
    link.symlink_to(victim)
    files.atomic_write_bytes(link, b"new")
    assert victim.read_text() == "precious\n" and not link.is_symlink() and link.read_bytes() == b"new"


# -- 3. a full disk ------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _small_disk(folder: Path, size: str = "4m"):
    """A tmpfs of ``size`` at ``folder`` (root only); ``None`` when this machine does not allow the mount."""
    folder.mkdir()
    if os.geteuid() != 0:
        yield None
        return
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        yield None
        return
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(folder: Path, leave: int) -> None:
    """Fills the filesystem of ``folder`` until ``leave`` bytes are free."""
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    with open(folder / "filler", "wb") as handle:
        handle.write(b"\0" * max(0, free - leave))


@pytest.mark.parametrize("how", ["tmpfs", "injected"])
def test_a_full_disk_is_one_line_and_keeps_the_previous_checkpoint(base_yaml, tmp_path, capsys, monkeypatch, how):
    # A real small disk where this runs as root and may mount one; ENOSPC injected into the write helper else.
    with _small_disk(tmp_path / "disk") if how == "tmpfs" else contextlib.nullcontext() as disk:
        folder = (disk or tmp_path) / "run"
        config = load_config(base_yaml, [f"output.dir={folder}", "evaluation.attention_maps=0",
                                         "output.plots=false"])
        with pytest.raises(RunInterrupted):
            run(config, stop_after=1)
        kept = _snapshot(folder, ["checkpoint.pkl", "progress.json", "config.yaml", "classes.json"])
        size = len(kept["checkpoint.pkl"])
        if disk is not None:  # a real full disk: room for the log, not for the next checkpoint
            _fill(disk, leave=size // 2)
        else:  # no tmpfs here: the write helper meets ENOSPC when it moves the next checkpoint into place
            replace = os.replace

            def full(src, dst):
                if str(dst).endswith("checkpoint.pkl"):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return replace(src, dst)

            monkeypatch.setattr(files.os, "replace", full)
        code = cli(base_yaml, "--output", str(folder), "--resume")
        err = one_line_error(capsys)
        print(f"\nFULL-DISK ({'tmpfs' if disk else 'ENOSPC injected'}): {err}")
        assert code == 1
        assert f"in {folder}" in err and "free there" in err and "--resume" in err
        assert "checkpoint.pkl" in err or "log.txt" in err
        assert _snapshot(folder, kept) == kept  # the previous checkpoint and progress are intact
        assert not list(folder.glob(".*.tmp")) and not (folder / "results.json").exists()
        if disk is not None:
            (disk / "filler").unlink()
        else:
            monkeypatch.setattr(files.os, "replace", replace)
        assert cli(base_yaml, "--output", str(folder), "--resume") == 0  # the advice works
        assert len(json.loads((folder / "results.json").read_text())["accuracy_matrix"]) == 3


# -- 5. damaged inputs ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 3-experience run and one stopped after its first experience (copied by each test)."""
    root = tmp_path_factory.mktemp("runs")
    (root / "synthetic.yaml").write_text(SYNTHETIC_YAML)
    base = root / "synthetic.yaml"
    run(load_config(base, [f"output.dir={root / 'finished'}", "output.plots=false"]))
    with pytest.raises(RunInterrupted):
        run(load_config(base, [f"output.dir={root / 'stopped'}", "output.plots=false"]), stop_after=1)
    return root


def _copy(finished_run, name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(finished_run / name, tmp_path / name))


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch BOOM",))


@pytest.mark.parametrize("content", ["garbage", "list", "wrong_keys", "code"])
def test_a_damaged_model_pt_is_one_line_for_eval_only(base_yaml, finished_run, tmp_path, capsys, monkeypatch,
                                                      content):
    folder = _copy(finished_run, "finished", tmp_path)
    path = folder / "model.pt"
    if content == "garbage":
        path.write_bytes(os.urandom(3000))
    elif content == "list":
        torch.save([torch.zeros(3)], path)
    elif content == "wrong_keys":
        torch.save({"weight": torch.zeros(3)}, path)
    else:  # a pickle that would run code: weights_only refuses it
        path.write_bytes(pickle.dumps({"weight": _Boom()}))
    monkeypatch.chdir(tmp_path)
    assert cli(base_yaml, "--output", str(folder), "--eval-only") == 2
    err = one_line_error(capsys)
    assert str(path) in err and "--overwrite" in err
    assert not (tmp_path / "BOOM").exists() and not (folder / "eval_results.json").exists()


@pytest.mark.parametrize("name,kind", [("results.json", "finished"), ("progress.json", "stopped")])
def test_a_run_json_that_does_not_parse_is_one_line(base_yaml, finished_run, tmp_path, capsys, name, kind):
    folder = _copy(finished_run, kind, tmp_path)
    (folder / name).write_text('{"finished_experiences": 1, ')
    flag = "--eval-only" if kind == "finished" else "--resume"
    assert cli(base_yaml, "--output", str(folder), flag) == 2
    err = one_line_error(capsys)
    assert str(folder / name) in err and "damaged" in err
    assert (folder / name).read_text() == '{"finished_experiences": 1, '  # nothing was overwritten


# -- 1. checkpoints inside an experience ----------------------------------------------------------------------
# The authors' recipe in small: 3 experiences (2 epochs, then 3), a per-epoch lr schedule with warm-up, replay
# into a herded memory, distillation from the previous model, 2 epochs of balanced finetuning after each task.
LPA_SETTINGS = [
    "strategy.name=lpa", "model.head=per_experience", "strategy.train_mb_size=16", "strategy.mem_size=24",
    "strategy.train_epochs=3", "strategy.epochs_first=2", "strategy.finetune.epochs=2",
    "strategy.lr_schedule.schedule_epochs=null", "strategy.lr_schedule.step=epoch", "strategy.lr_schedule.warmup_epochs=1",
    "evaluation.attention_maps=0", "output.plots=false", "checkpoint.every_epochs=1",
]

KILLED_CHILD = """
import sys, time
import avalanche_lpa.runner.runs as run_module
from avalanche_lpa.config import load_config
from avalanche_lpa.runner.midway import checkpoint_plugin

target = (int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))
original = run_module.save_checkpoint_atomic

def save_then_wait(strategy, path, exclude=None):
    original(strategy, path, exclude)
    where = checkpoint_plugin(strategy).position
    if where is not None and (where["experience"], where["phase"], where["epoch"]) == target:
        print("SAVED", flush=True)  # the parent kills us now, at this epoch boundary
        time.sleep(120)

run_module.save_checkpoint_atomic = save_then_wait
run_module.run(load_config(sys.argv[1], ["output.dir=" + sys.argv[2], *sys.argv[6:]]))
"""


def _same_run(folder_a: Path, folder_b: Path) -> None:
    """Two finished run folders have the same accuracy matrix, iterations and model.pt tensors."""
    a, b = (json.loads((f / "results.json").read_text()) for f in (folder_a, folder_b))
    assert a["accuracy_matrix"] == b["accuracy_matrix"] and a["train_iterations"] == b["train_iterations"]
    assert a["locality"]["layers"] == b["locality"]["layers"]
    ma, mb = (torch.load(f / "model.pt", weights_only=True) for f in (folder_a, folder_b))
    assert ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma)


@pytest.fixture(scope="module")
def straight_lpa(tmp_path_factory):
    """An uninterrupted run of the small recipe (the reference every resumed run must equal)."""
    root = tmp_path_factory.mktemp("straight")
    (root / "synthetic.yaml").write_text(SYNTHETIC_YAML)
    run(load_config(root / "synthetic.yaml", [f"output.dir={root / 'run'}", *LPA_SETTINGS]))
    return root / "run"


@pytest.mark.parametrize("phase,epoch", [("train", 2), ("finetune", 1)])
def test_sigkill_at_an_epoch_boundary_then_resume_equals_the_uninterrupted_run(
    base_yaml, straight_lpa, tmp_path, capsys, phase, epoch
):
    folder = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    args = [str(base_yaml), str(folder), "1", phase, str(epoch), *LPA_SETTINGS]  # experience 2 (index 1)
    kill_when_printed(KILLED_CHILD, args, "SAVED", env, tmp_path, timeout=240)
    # Killed between checkpoint.pkl and progress.json: progress.json still tells of the checkpoint before.
    progress = json.loads((folder / "progress.json").read_text())
    assert progress["finished_experiences"] == 1 and progress["inside_experience"]["experience"] == 1
    assert cli(base_yaml, "--output", str(folder), "--resume") == 0, capsys.readouterr().err
    _same_run(straight_lpa, folder)


# -- 2. preemption ---------------------------------------------------------------------------------------------
class SignalAt(SupervisedPlugin):
    """Sends ``signum`` to this process (only on rank ``rank``) before the training iteration at
    (experience, clock epoch of the experience, iteration of the epoch); once, also over a resume."""

    def __init__(self, signum: int, experience: int, epoch: int, iteration: int, rank: int = 0) -> None:
        super().__init__()
        self.signum, self.at, self.rank, self.fired = signum, (experience, epoch, iteration), rank, False

    def before_training_iteration(self, strategy, **kwargs) -> None:
        clock = strategy.clock
        here = (clock.train_exp_counter, clock.train_exp_epochs, clock.train_epoch_iterations)
        if here == self.at and not self.fired and int(os.environ.get("RANK", "0")) == self.rank:
            self.fired = True
            os.kill(os.getpid(), self.signum)


def _with_plugin(monkeypatch, plugin) -> None:
    """Every strategy the runner builds gets ``plugin`` too."""
    build = run_module.build_strategy
    monkeypatch.setattr(run_module, "build_strategy",
                        lambda *a, plugins=None, **k: build(*a, plugins=list(plugins or []) + [plugin], **k))


# Experience 2 (index 1) trains 3 epochs of 5 iterations (80 samples / 16), then finetunes for 2 epochs of one
# iteration: the clock's epoch 1 is the second training epoch, its epoch 4 the second finetuning epoch (there
# the signal comes in its only iteration: the checkpoint is at an epoch's last iteration, before its end).
@pytest.mark.parametrize("signame,epoch,iteration,expected", [
    ("SIGTERM", 1, 2, "preempted at experience 2, epoch 2: checkpointed; continue with --resume"),
    ("SIGUSR1", 4, 0, "preempted at experience 2, finetuning epoch 2: checkpointed; continue with --resume"),
])
def test_a_preemption_signal_checkpoints_after_the_iteration_and_resume_equals_the_uninterrupted_run(
    base_yaml, straight_lpa, tmp_path, capsys, monkeypatch, signame, epoch, iteration, expected
):
    folder = tmp_path / "preempted"
    settings = [item for s in LPA_SETTINGS if not s.startswith("checkpoint.") for item in ("--set", s)]
    _with_plugin(monkeypatch, SignalAt(getattr(signal, signame), experience=1, epoch=epoch, iteration=iteration))
    assert cli(base_yaml, "--output", str(folder), *settings) == 75
    assert one_line_error_free(capsys) == expected
    progress = json.loads((folder / "progress.json").read_text())
    assert progress["inside_experience"]["iteration"] == iteration + 1  # the iteration running then ended
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are put back
    monkeypatch.undo()
    assert cli(base_yaml, "--output", str(folder), "--resume") == 0, capsys.readouterr().err
    _same_run(straight_lpa, folder)


def test_a_config_that_does_not_match_the_checkpoint_is_one_line(base_yaml, finished_run, tmp_path, capsys):
    folder = _copy(finished_run, "stopped", tmp_path)
    text = (folder / "config.yaml").read_text()
    assert "lr: 0.003" in text
    (folder / "config.yaml").write_text(text.replace("lr: 0.003", "lr: 0.01"))  # edited after the start
    kept = _snapshot(folder, ["checkpoint.pkl", "progress.json"])
    assert cli(base_yaml, "--output", str(folder), "--resume") == 2
    err = one_line_error(capsys)
    assert "checkpoint.pkl" in err and "strategy.lr (0.003 -> 0.01)" in err and "--overwrite" in err
    assert _snapshot(folder, kept) == kept


def test_checkpoint_keys_are_checked_and_harmless_on_resume(tmp_path):
    for bad in ("checkpoint.every_epochs=0", "checkpoint.every_epochs=1.5", "checkpoint.every_minutes=-1"):
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            load_config(None, [bad])
    assert load_config(None, ["checkpoint.every_minutes=30"]).checkpoint.every_minutes == 30
    assert {"checkpoint.every_epochs", "checkpoint.every_minutes"} <= set(HARMLESS_KEYS)


TORCHRUN_CHILD = """
import os, runpy, signal, sys
sys.path.insert(0, sys.argv[1])
import avalanche_lpa.runner.runs as run_module
from tests.test_long_runs import SignalAt

build = run_module.build_strategy
plugin = SignalAt(signal.SIGTERM, experience=1, epoch=1, iteration=1, rank=1)  # rank 1 only: rank 0 follows
run_module.build_strategy = lambda *a, plugins=None, **k: build(*a, plugins=list(plugins or []) + [plugin], **k)
script = os.path.join(sys.argv[1], "experiments", "split_cifar100.py")
sys.argv = [script, *sys.argv[2:]]
runpy.run_path(script, run_name="__main__")
"""


def _torchrun(tmp_path: Path, script: list, *args: str):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}", *script,
           "--device", "cpu", "--set", "evaluation.progress_bar=false", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)


def _straight_under_torchrun(base_yaml: Path, tmp_path: Path):
    """The small recipe run uninterrupted by one torchrun of two processes into ``straight/``; the settings, the
    script, and a child script that preempts it on rank 1 (:data:`TORCHRUN_CHILD`)."""
    settings = ["--config", str(base_yaml)] + [i for s in LPA_SETTINGS for i in ("--set", s)]
    cifar = [str(REPO / "experiments" / "split_cifar100.py")]
    straight = _torchrun(tmp_path, cifar, "--output", str(tmp_path / "straight"), *settings)
    assert straight.returncode == 0, straight.stderr[-3000:]
    child = tmp_path / "child.py"
    child.write_text(TORCHRUN_CHILD)
    return settings, cifar, child


def test_preemption_under_torchrun_stops_every_rank_and_resume_equals_the_uninterrupted_run(base_yaml, tmp_path):
    settings, cifar, child = _straight_under_torchrun(base_yaml, tmp_path)
    stopped = _torchrun(tmp_path, [str(child), str(REPO)], "--output", str(tmp_path / "run"), *settings)
    assert stopped.returncode != 0
    line = "preempted at experience 2, epoch 2: checkpointed; continue with --resume"
    assert stopped.stderr.count(line) == 2, stopped.stderr[-3000:]  # both ranks stopped at the same iteration
    assert "exitcode  : 75" in stopped.stderr  # torchrun reports the workers' status (and fails itself)
    progress = json.loads((tmp_path / "run" / "progress.json").read_text())
    assert progress["inside_experience"] == {"experience": 1, "phase": "train", "epoch": 1, "iteration": 2}
    resumed = _torchrun(tmp_path, cifar, "--output", str(tmp_path / "run"), "--resume", "--config",
                        str(tmp_path / "run" / "config.yaml"))
    assert resumed.returncode == 0, resumed.stderr[:4000] + "\n...\n" + resumed.stderr[-3000:]
    _same_run(tmp_path / "straight", tmp_path / "run")


def test_a_per_rank_memory_run_preempted_under_torchrun_resumes_with_every_ranks_own_memory(base_yaml, tmp_path):
    # rank_shard: each rank herds its own memory from its own shard; the checkpoint rank 0 writes holds both, and
    # each rank takes its own back on resume (with rank 0's on both ranks, rank 1 would train on other exemplars).
    settings = ["--config", str(base_yaml)] + [i for s in LPA_SETTINGS for i in ("--set", s)] + [
        "--set", "strategy.memory_scope=rank_shard"]
    cifar = [str(REPO / "experiments" / "split_cifar100.py")]
    straight = _torchrun(tmp_path, cifar, "--output", str(tmp_path / "straight"), *settings)
    assert straight.returncode == 0, straight.stderr[-3000:]
    child = tmp_path / "child.py"
    child.write_text(TORCHRUN_CHILD)
    stopped = _torchrun(tmp_path, [str(child), str(REPO)], "--output", str(tmp_path / "run"), *settings)
    assert "preempted at experience 2, epoch 2: checkpointed" in stopped.stderr, stopped.stderr[-3000:]
    resumed = _torchrun(tmp_path, cifar, "--output", str(tmp_path / "run"), "--resume", "--config",
                        str(tmp_path / "run" / "config.yaml"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "rank 0's memory" not in resumed.stderr  # every rank found its own part
    _same_run(tmp_path / "straight", tmp_path / "run")
    # Each rank kept its own memory: disjoint shards, 2 x 24 distinct exemplars after every experience, as in the
    # uninterrupted run (with rank 0's memory on both ranks the old classes' exemplars would coincide).
    cards = [json.loads((tmp_path / name / "results.json").read_text())["run_card"] for name in ("straight", "run")]
    assert cards[0]["distinct_exemplars"] == cards[1]["distinct_exemplars"] == [48, 48, 48]
    assert cards[1]["memory_scope"] == "rank_shard"


def _two_nodes(tmp_path: Path, script: list, *args: str) -> list:
    """``script`` as docs/distributed.md runs it on several machines: one torchrun per "node" (``--nnodes=2``, its
    own ``--node_rank``, one process each), both on this machine's loopback address with gloo; their results."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    nodes = [
        subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node_rank={rank}",
                          "--nproc_per_node=1", "--master_addr=127.0.0.1", f"--master_port={port}", *script,
                          "--device", "cpu", "--set", "evaluation.progress_bar=false", *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
        for rank in (0, 1)
    ]
    try:
        return [(node.wait(timeout=300), *node.communicate()) for node in nodes]
    finally:
        for node in nodes:
            node.kill()


def test_the_multi_node_command_runs_as_two_nodes_and_resumes_as_one_node_of_two_processes_would(base_yaml, tmp_path):
    # docs/distributed.md's command for several machines, on two "nodes" of this machine: preempted on node 1 inside
    # experience 2, resumed by both nodes, it ends where one node with two processes ends uninterrupted.
    settings, cifar, child = _straight_under_torchrun(base_yaml, tmp_path)
    stopped = _two_nodes(tmp_path, [str(child), str(REPO)], "--output", str(tmp_path / "run"), *settings)
    line = "preempted at experience 2, epoch 2: checkpointed; continue with --resume"
    assert all(code != 0 and line in err for code, _, err in stopped), [err[-2000:] for _, _, err in stopped]
    resumed = _two_nodes(tmp_path, cifar, "--output", str(tmp_path / "run"), "--resume", "--config",
                         str(tmp_path / "run" / "config.yaml"))
    assert all(code == 0 for code, _, _ in resumed), [err[-2000:] for _, _, err in resumed]
    assert "run       syn (resumed inside experience 2/3, epoch 2)" in resumed[0][1]  # node 0 prints the card
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["world_size"] == 2
    _same_run(tmp_path / "straight", tmp_path / "run")


@pytest.mark.parametrize("setting,expected", [
    # (experience, phase, epochs done): 2 epochs in experience 1, 3 + 2 finetuning epochs in the others
    ("checkpoint.every_epochs=2", [(0, "train", 2), (1, "train", 2), (1, "finetune", 2), (2, "train", 2),
                                   (2, "finetune", 2)]),
    ("checkpoint.every_minutes=1e-9", [(e, "train", k) for k in (1, 2) for e in (0,)]
     + [(e, p, k) for e in (1, 2) for p, n in (("train", 3), ("finetune", 2)) for k in range(1, n + 1)]),
])
def test_checkpoints_inside_experiences_follow_the_schedule(base_yaml, tmp_path, monkeypatch, setting, expected):
    seen, original = [], run_module.save_checkpoint_atomic

    def record(strategy, path, exclude=None):
        where = checkpoint_plugin(strategy).position
        if where is not None:
            seen.append((where["experience"], where["phase"], where["epoch"]))
        original(strategy, path, exclude)

    monkeypatch.setattr(run_module, "save_checkpoint_atomic", record)
    settings = [s for s in LPA_SETTINGS if not s.startswith("checkpoint.")]
    run(load_config(base_yaml, [f"output.dir={tmp_path / 'run'}", *settings, setting]))
    assert sorted(seen) == sorted(expected)


class SignalInEvaluation(SupervisedPlugin):
    """Sends SIGTERM to this process when the first evaluation starts (after experience 1's training)."""

    def __init__(self) -> None:
        super().__init__()
        self.fired = False

    def before_eval(self, strategy, **kwargs) -> None:
        if not self.fired:
            self.fired = True
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_signal_during_evaluation_stops_after_that_experiences_checkpoint(base_yaml, tmp_path, capsys,
                                                                             monkeypatch):
    folder = tmp_path / "run"
    _with_plugin(monkeypatch, SignalInEvaluation())
    assert cli(base_yaml, "--output", str(folder)) == 75
    assert one_line_error_free(capsys) == "preempted after experience 1: checkpointed; continue with --resume"
    assert json.loads((folder / "progress.json").read_text())["finished_experiences"] == 1
    monkeypatch.undo()
    assert cli(base_yaml, "--output", str(folder), "--resume") == 0, capsys.readouterr().err
    assert len(json.loads((folder / "results.json").read_text())["accuracy_matrix"]) == 3


def test_eval_only_reads_no_pickle_but_model_pt(base_yaml, finished_run, tmp_path, capsys, monkeypatch):
    folder = _copy(finished_run, "finished", tmp_path)
    (folder / "checkpoint.pkl").write_bytes(pickle.dumps(_Boom()))  # would run code if unpickled
    monkeypatch.chdir(tmp_path)
    assert cli(base_yaml, "--output", str(folder), "--eval-only") == 0, capsys.readouterr().err
    assert not (tmp_path / "BOOM").exists() and (folder / "eval_results.json").is_file()
