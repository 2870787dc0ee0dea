"""The run as users meet it (issue 27.2, 27.3): the console says what runs, where, how far along and what came out;
a finished run stays finished; every result comes from the trained network."""
import hashlib
import io
import json
import re
import shlex
from pathlib import Path
from typing import List

import pytest
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training.plugins import EvaluationPlugin

from avalanche_lpa.cli import console, main
from avalanche_lpa.config import load_config
from avalanche_lpa.data import datasets as data_module
from avalanche_lpa.runner import RunInterrupted, run
from avalanche_lpa.runner.console import ConsoleLogger
from avalanche_lpa.training import build_strategy

from .conftest import make_tiny
from .fake_datasets import make_fake_fashion_mnist_gz

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

TINY_MODEL = "{img_size: 8, patch_size: 2, in_chans: 1, embed_dim: 18, depth: 1, num_heads: 9}"
# The recipe with finetuning after the second experience: every phase the console labels, in seconds.
RECIPE_YAML = f"""
name: recipe
seed: 3
device: cpu
data: {{dataset: synthetic, n_experiences: 2}}
model: {{preset: tiny, head: per_experience, overrides: {TINY_MODEL}}}
strategy: {{name: lpa, epochs_first: 1, train_epochs: 1, finetune: {{epochs: 2}}, mem_size: 20, train_mb_size: 16}}
evaluation: {{locality_probe_size: 16, attention_maps: 2}}
"""
TIMESTAMP = r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] "


@pytest.fixture
def recipe(tmp_path) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE_YAML)
    return path


def cli(config: Path, *args: str) -> int:
    return main(list(args), description="", default_config=config)


def _hashes(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_progress_bars_are_labelled_with_experience_phase_and_epoch(cil_benchmark):
    stream = io.StringIO()
    console = ConsoleLogger(2, bars=True, file=stream)
    strategy = build_strategy("naive", make_tiny(), device="cpu", train_epochs=2, train_mb_size=16,
                              evaluator=EvaluationPlugin(accuracy_metrics(experience=True), loggers=[console]))
    strategy.train(cil_benchmark.train_stream[0])
    strategy.eval(cil_benchmark.test_stream[:2])
    text = stream.getvalue()
    for label in ("exp 1/2 · train epoch 1/2", "exp 1/2 · train epoch 2/2", "exp 1/2 · eval 1/2",
                  "exp 1/2 · eval 2/2"):
        assert f"{label}:" in text, label  # the bar's description, tqdm's "label: 50%|..."
    assert re.search(r"exp 1/2 · train epoch 2/2: +\d+%", text) and "<" in text  # a percentage and an ETA
    assert "Epoch 0 ended" not in text and "Start of training phase" not in text


@pytest.mark.slow
def test_the_console_says_what_runs_where_how_far_and_what_came_out(recipe, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(recipe, "--output", str(out)) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    results = json.loads((out / "results.json").read_text())
    # The opening block, before anything trains.
    assert lines[0] == "run       recipe (fresh)"
    assert re.fullmatch(r"model     lpa_vit_tiny \(LPA attention\), [\d,]+ parameters", lines[1])
    assert lines[2] == "device    cpu (1 process)"
    assert lines[3] == "data      synthetic (generated in memory, no files)"
    assert lines[4] == "split     2 experiences x 2 classes; 128 training and 64 test images"
    assert lines[5].startswith("strategy  lpa: 1 epoch, batch 16, lr ") and "memory 20, finetuning 2 epochs" in lines[5]
    assert lines[6] == "processes any number at global batch 16: the same batches and the same memory"
    assert lines[7] == f"output    {out}"
    # results.json's run card: what decides how this run compares with another (one process here)
    assert results["run_card"] == {"world_size": 1, "batch_per_process": 16, "global_batch": 16,
                                   "sample_order": "seeded", "memory_size": 20, "memory_scope": "global",
                                   "precision": "fp32", "pretrained": False,
                                   "distinct_exemplars": [20, 20]}  # the memory, full, after each experience
    # One labelled line per epoch, the finetuning epochs as finetuning, counted from 1 out of their total.
    epochs = re.findall(r"^(exp \d/2 · (?:train|finetune) epoch \d/\d): loss [\d.]+", printed, re.M)
    assert epochs == ["exp 1/2 · train epoch 1/1", "exp 2/2 · train epoch 1/1", "exp 2/2 · finetune epoch 1/2",
                      "exp 2/2 · finetune epoch 2/2"]
    assert "Epoch 0 ended" not in printed and "-- >>" not in printed and "Starting training" not in printed
    assert lines[-1] == (f"avg incremental accuracy {results['summary']['avg_incremental_accuracy']:.4f}, "
                         f"last accuracy {results['summary']['last_accuracy']:.4f}; results in {out}")
    # log.txt starts with the same block, and every line carries a timestamp.
    log = (out / "log.txt").read_text().splitlines()
    assert [re.sub(TIMESTAMP, "", line, count=1) for line in log[:8]] == lines[:8]
    assert all(re.match(TIMESTAMP, line) for line in log if line.strip())


@pytest.mark.slow
def test_resume_and_eval_only_say_what_they_do_without_avalanche_chatter(recipe, tmp_path, capsys):
    out = tmp_path / "cut"
    with pytest.raises(RunInterrupted):
        run(load_config(recipe, [f"output.dir={out}"]), stop_after=1)
    capsys.readouterr()
    assert cli(recipe, "--output", str(out), "--resume") == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0] == "run       recipe (resumed after experience 1/2)"
    assert "Mapping cpu to cpu" not in printed and "Resuming from checkpoint" not in printed
    log = (out / "log.txt").read_text()
    assert "Resuming from checkpoint" not in log and log.count("run       recipe (") == 2  # both starts, in order
    assert cli(recipe, "--output", str(out), "--eval-only") == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    results = json.loads((out / "results.json").read_text())
    evaluated = json.loads((out / "eval_results.json").read_text())["metrics"]
    accuracy = evaluated["Top1_Acc_Stream/eval_phase/test_stream/Task000"]
    assert line == (f"re-evaluated {out}, accuracy {accuracy:.4f} on the whole test stream, locality "
                    f"{evaluated['Locality_Stream/eval_phase/test_stream']:.2f} patches, the run reported last accuracy "
                    f"{results['summary']['last_accuracy']:.4f}; wrote eval_results.json")
    assert accuracy == pytest.approx(results["summary"]["last_accuracy"], abs=1e-6)


@pytest.mark.slow
def test_a_finished_run_stays_finished(recipe, tmp_path, capsys):
    out = tmp_path / "done"
    assert cli(recipe, "--output", str(out)) == 0
    before = _hashes(out)
    capsys.readouterr()
    assert cli(recipe, "--output", str(out), "--resume") == 0
    printed = capsys.readouterr().out.strip()
    results = json.loads((out / "results.json").read_text())
    assert printed == (f"{out} holds a finished run (2 experiences, avg incremental accuracy "
                       f"{results['summary']['avg_incremental_accuracy']:.4f}, last accuracy "
                       f"{results['summary']['last_accuracy']:.4f}): nothing to resume, nothing was changed; its "
                       "results are in results.json (start it again with --overwrite)")
    assert _hashes(out) == before  # not one byte: results.json, model.pt and the figures as they were
    assert run(load_config(out / "config.yaml"), resume=True) == results  # the library returns what it holds
    assert _hashes(out) == before


# What differs between two runs of one config beside their folder: when and how fast they ran.
TIMES = ("created", "wall_time_s", "phase_times_s")


def _comparable(results: dict) -> dict:
    kept = {key: value for key, value in results.items() if key not in TIMES}
    kept["config"] = {**kept["config"], "output": {**kept["config"]["output"], "dir": None}}
    return kept


@pytest.mark.slow
def test_results_of_an_interrupted_and_resumed_run_equal_the_uninterrupted_ones(recipe, tmp_path):
    straight = run(load_config(recipe, [f"output.dir={tmp_path / 'straight'}"]))
    cut = load_config(recipe, [f"output.dir={tmp_path / 'cut'}"])
    with pytest.raises(RunInterrupted):
        run(cut, stop_after=1)
    resumed = run(cut, resume=True)
    # params included: it is the trained network's (its per-experience heads grown), not a freshly built model's
    assert _comparable(resumed) == _comparable(straight)
    written = json.loads((tmp_path / "cut" / "results.json").read_text())
    assert written["params"] == straight["params"] and written["accuracy_matrix"] == straight["accuracy_matrix"]


def _shape(line: str) -> str:
    """A console line with its values abstracted: numbers as 9s that keep their decimals (``0.5400`` is
    ``9.9999``, ``0.54`` is ``9.99``: a changed format shows), thousands separators dropped."""
    line = re.sub(r"(?<=\d),(?=\d{3})", "", line)
    line = re.sub(r"\d+(\.\d+)?", lambda m: "9" + ("." + "9" * (len(m.group(1)) - 1) if m.group(1) else ""), line)
    if line.startswith("\ttime "):  # which phases are listed depends on their length: their format counts
        head, parts = line.split(": ", 1)
        line = f"{head}: " + ", ".join(sorted({re.sub(r"^[a-z ]+ ", "<phase> ", part) for part in parts.split(", ")}))
    return line


def _documented_consoles() -> List[List[str]]:
    """The console blocks the README's first run and docs/experiments.md show, without their ``...`` lines."""
    blocks = []
    for path, after in ((README, "The console (on a terminal"), (REPO / "docs" / "experiments.md", "The first run of the README")):
        text = path.read_text()
        block = text[text.index(after):].split("```\n", 2)[1]
        blocks.append([line for line in block.splitlines() if line and not line.startswith("...")])
    return blocks


def _opening_keys(lines: List[str]) -> List[str]:
    """The keys of a console's opening block (``run``, ``model``, ...): its lines before the first ``exp``."""
    first = next(i for i, line in enumerate(lines) if line.startswith("exp "))
    return [line.split()[0] for line in lines[:first]]


@pytest.mark.slow
def test_the_readme_shows_the_console_its_first_run_prints(tmp_path, monkeypatch, capsys):
    """The README's first command, on a small fake Fashion-MNIST where Avalanche keeps it under the home folder:
    every line the README and the experiments page show is a line of that shape the run prints (the data folder as
    it is, shown from ``~``), and their opening blocks have its keys in its order."""
    monkeypatch.setattr(data_module, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian-package")
    monkeypatch.setenv("HOME", str(tmp_path))
    root = make_fake_fashion_mnist_gz(tmp_path / ".avalanche/data/fashionmnist/FashionMNIST/raw").parents[1]
    monkeypatch.chdir(tmp_path)
    command = README.read_text().split("## A first run", 1)[1].split("```bash\n", 1)[1].split("\n", 1)[0]
    argv = shlex.split(command)
    assert argv[0] == "avalanche-lpa"
    assert console([*argv[1:], "--data-root", str(root)]) == 0
    printed = capsys.readouterr().out.splitlines()
    shapes = {_shape(line) for line in printed}
    for block in _documented_consoles():
        missing = [line for line in block if _shape(line) not in shapes]
        assert not missing, f"documented lines the run does not print: {missing}"
        assert _opening_keys(block) == _opening_keys(printed)
