"""A run's config is validated once, where it enters; a resume validates the resumed config once too.

Counted by wrapping the work of ``validate`` (``validation._check_config``): a :class:`RunConfig` is returned as it
is (it is frozen: nobody can change what was validated), a changed copy is a new config, checked again, and the
folder's ``config.yaml`` is compared as written.
"""
import dataclasses

import pytest

from avalanche_lpa.config import ConfigError, RunConfig, load_config, updated, validate
from avalanche_lpa.config import validation as validation_module
from avalanche_lpa.runner import RunInterrupted, run

from .test_reliability import SYNTHETIC_YAML, cli


@pytest.fixture
def validations(monkeypatch):
    calls = []
    check = validation_module._check_config

    def counted(config):
        calls.append(1)
        return check(config)

    monkeypatch.setattr(validation_module, "_check_config", counted)
    return calls


@pytest.fixture
def base_yaml(tmp_path):
    path = tmp_path / "synthetic.yaml"
    path.write_text(SYNTHETIC_YAML.replace("n_experiences: 3", "n_experiences: 2"))
    return path


def test_a_validated_config_is_not_checked_again_and_cannot_change(validations):
    config = load_config(None, ["data.dataset=synthetic"])
    assert isinstance(config, RunConfig) and len(validations) == 1
    assert validate(config) is config and len(validations) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.data.n_experiences = 2  # what was validated stays what it was
    with pytest.raises(TypeError):
        config.strategy["lr"] = "fast"  # the strategy's options are read-only too
    with pytest.raises(ConfigError, match="strategy.lr: expected a number"):
        updated(config, {"strategy.lr": "fast"})  # a changed copy is a new config, checked again
    assert len(validations) == 2


def test_a_run_from_the_command_line_validates_once_and_its_resume_once(base_yaml, tmp_path, capsys, validations):
    folder = tmp_path / "run"
    assert cli(base_yaml, "--output", str(folder)) == 0, capsys.readouterr().err
    assert len(validations) == 1
    config = load_config(base_yaml, [f"output.dir={tmp_path / 'cut'}"])
    with pytest.raises(RunInterrupted):
        run(config, stop_after=1)
    validations.clear()
    code = cli(base_yaml, "--output", str(tmp_path / "cut"), "--resume", "--device", "cpu",
               "--set", "evaluation.progress_bar=false")
    assert code == 0, capsys.readouterr().err
    assert len(validations) == 1
