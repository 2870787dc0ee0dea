"""Training curves in every logger a run can write (text, TensorBoard, CSV, wandb offline) and a console that
prints one short line per epoch and one summary per experience (every metric with --verbose)."""
import csv
import re

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from avalanche_lpa.config import ConfigError, load_config, validate
from avalanche_lpa.runner import run

from .test_experiment import synthetic_config
from .wandb_offline import history

LOSS = "Loss_Epoch/train_phase/train_stream/Task000"
LR = "LR_Epoch/train_phase/train_stream/Task000"
EPOCHS = 3 * 2  # synthetic_config: 3 experiences x 2 epochs of Avalanche's replay


@pytest.mark.slow
def test_every_logger_holds_the_training_loss_and_lr_series(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = synthetic_config(tmp_path, "evaluation.loggers=[text, tensorboard, csv, wandb]", name="logged")
    run(config)
    folder = tmp_path / "logged"

    events = EventAccumulator(str(folder / "tb"))
    events.Reload()
    tb_loss = [event.value for event in events.Scalars(LOSS)]
    assert len(tb_loss) == EPOCHS and all(value > 0 for value in tb_loss)
    assert [event.value for event in events.Scalars(LR)] == pytest.approx([0.003] * EPOCHS)

    with open(folder / "csv" / "training_results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(row["training_loss"]) for row in rows] == pytest.approx(tb_loss, abs=1e-4)

    runs = list((folder / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    series = history(runs[0])
    assert series[LOSS] == pytest.approx(tb_loss, rel=1e-5) and series[LR] == pytest.approx([0.003] * EPOCHS)

    log = (folder / "log.txt").read_text()
    assert len(re.findall(r"\tLoss_Epoch/train_phase/train_stream/Task000 = [\d.]+", log)) == EPOCHS
    assert log.startswith(f"[{log[1:20]}] run ")  # the opening block first, every line timestamped
    assert len(re.findall(r"^\[[\d-]+ [\d:]+\] experience \d/3, accuracy [\d.]+ on the seen classes", log, re.M)) == 3


@pytest.mark.slow
def test_the_console_prints_one_line_per_epoch_and_one_summary_per_experience(tmp_path, capsys):
    run(synthetic_config(tmp_path, "evaluation.progress_bar=true", name="quiet"))
    out = capsys.readouterr().out
    epochs = re.findall(r"^exp (\d)/3 · train epoch (\d)/(\d): loss \d+\.\d{4}, accuracy [01]\.\d{4}, lr 0\.003, \d+s$", out, re.M)
    assert len(epochs) == EPOCHS and all(int(epoch) <= int(total) for _, epoch, total in epochs)
    summaries = re.findall(r"^experience (\d)/3, accuracy [\d.]+ on the seen classes, forgetting [\d.]+, "
                           r"locality [\d.]+ patches, 24 exemplars in memory, [\d:]+ for it, (?:ETA|run) [\d:]+$",
                           out, re.M)  # replay with a memory of 24, full after each experience
    assert summaries == ["1", "2", "3"]
    assert "Head00" not in out and "Layer00" not in out and "Top1_Acc_Exp" not in out
    run(synthetic_config(tmp_path, "evaluation.progress_bar=true", "evaluation.verbose=true", name="verbose"))
    verbose = capsys.readouterr().out
    assert "Locality_Stream/eval_phase/test_stream/Layer00/Head00 = " in verbose and LOSS in verbose


def test_logger_names_are_checked_and_old_switches_still_read():
    with pytest.raises(ConfigError, match=r"evaluation.loggers: unknown logger\(s\) mlflow; valid: text, tensorboard"):
        load_config(None, ["evaluation.loggers=[text, mlflow]"])
    # config.yaml of runs written before evaluation.loggers existed still resume and evaluate
    old = validate({"evaluation": {"text_log": False, "tensorboard": True}})
    assert old.evaluation.loggers == ["tensorboard"]
    assert validate({"evaluation": {"tensorboard": True}}).evaluation.loggers == ["text", "tensorboard"]
