"""Seconds per phase: exclusive accounting (timing.PhaseTimes) and the runner's per-experience record."""
import json
import re

import pytest

from avalanche_lpa import timing
from avalanche_lpa.config import load_config
from avalanche_lpa.runner import RunInterrupted, run
from avalanche_lpa.timing import PHASES, PhaseTimes, format_phase_times

TINY_MODEL = "{img_size: 8, patch_size: 2, in_chans: 1, embed_dim: 18, depth: 2, num_heads: 9}"


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(timing.time, "perf_counter", fake)
    return fake


def test_nested_phases_are_charged_to_themselves_only(clock):
    times = PhaseTimes()
    times.start("train")
    clock.now = 2.0
    with times.phase("finetune"):
        clock.now = 5.0
        times.start("data_wait")
        clock.now = 6.0
        times.stop("data_wait")
        clock.now = 7.0
    clock.now = 10.0
    times.stop("train")
    seconds = times.snapshot()
    assert (seconds["train"], seconds["finetune"], seconds["data_wait"], seconds["wall"]) == (5.0, 4.0, 1.0, 10.0)


def test_closing_an_outer_phase_closes_what_was_left_open_inside(clock):
    times = PhaseTimes()
    times.start("train")
    clock.now = 1.0
    times.start("data_wait")  # an epoch left by `break`: never stopped by itself
    clock.now = 3.0
    times.stop("train")
    times.stop("eval")  # not open: ignored
    clock.now = 4.0
    seconds = times.snapshot()
    assert (seconds["train"], seconds["data_wait"], seconds["eval"]) == (1.0, 2.0, 0.0)
    times.reset()
    assert times.snapshot() == {**dict.fromkeys(PHASES, 0.0), "wall": 0.0}


def test_report_line_lists_the_phases_that_took_time():
    line = format_phase_times({**dict.fromkeys(PHASES, 0.0), "train": 8.0, "eval": 1.0, "wall": 10.0})
    assert line == "10.0 s: train 8.0 s (80%), eval 1.0 s (10%)"


@pytest.mark.slow
def test_every_experience_records_every_phase_within_its_wall_time(tmp_path, capsys):
    """The recipe (herding, finetuning, repeated augmentation) with attention maps and checkpoints, resumed once."""
    config = load_config(None, [
        "data.dataset=synthetic", "data.n_experiences=3", "model.preset=tiny", f"model.overrides={TINY_MODEL}",
        "strategy.name=lpa", "strategy.mem_size=24", "strategy.train_epochs=1", "strategy.epochs_first=1",
        "strategy.finetune.epochs=1", "strategy.train_mb_size=16", "evaluation.progress_bar=false",
        "evaluation.locality_probe_size=24", "evaluation.attention_maps=2", "output.plots=false",
        f"output.dir={tmp_path / 'run'}", "seed=7",
    ])  # fmt: skip
    with pytest.raises(RunInterrupted):
        run(config, stop_after=1)
    results = run(config, resume=True)  # the resumed strategy carries a pickled timer: replaced, not doubled
    phases = results["phase_times_s"]
    assert len(phases) == 3
    for index, seconds in enumerate(phases):
        assert set(seconds) == set(PHASES) | {"wall", "epochs", "epoch_waits"}, index
        assert all(value >= 0 for value in seconds.values()), (index, seconds)
        assert sum(seconds[name] for name in PHASES) <= seconds["wall"], (index, seconds)
        # the training epochs (not finetuning's) lie within train + data_wait, their waits within data_wait
        assert 0 < seconds["epochs"] <= seconds["train"] + seconds["data_wait"], (index, seconds)
        assert 0 < seconds["epoch_waits"] <= min(seconds["data_wait"], seconds["epochs"]), (index, seconds)
        for name in ("train", "data_wait", "memory_update", "eval", "locality_probe", "attention_maps", "checkpoint"):
            assert seconds[name] > 0, (index, name, seconds)
        assert (seconds["finetune"] > 0) == (index > 0), (index, seconds)  # the authors finetune from task 2 on
    # the phases' wall is measured inside the runner's experience time (which also holds the summary and progress)
    assert sum(s["wall"] for s in phases) <= results["wall_time_s"]
    assert json.loads((tmp_path / "run" / "progress.json").read_text())["phase_times_s"] == phases
    out = capsys.readouterr().out
    # the per-experience summary's second line says where the time went
    # (which phases show depends on the machine: a phase under 0.05 s, even training on a fast one, is left out)
    # (a tiny experience on a fast machine may have none to show: its line then gives the wall time alone)
    times = re.findall(r"^experience (\d)/3, .*\n\ttime [\d.]+ s(?:$|: [a-z ]+ [\d.]+ s \(\d+%\))", out, re.M)
    assert times == ["1", "2", "3"]
    assert re.search(r"^experience \d/3, .*\n\ttime [\d.]+ s: [a-z ]+ [\d.]+ s \(\d+%\)", out, re.M)
    stamp = r"\[[\d-]+ [\d:]+\] "  # log.txt puts a timestamp in front of every line
    log = (tmp_path / "run" / "log.txt").read_text()
    assert re.search(rf"^{stamp}experience 3/3, .*\n{stamp}\ttime [\d.]+ s: [a-z]", log, re.M)
