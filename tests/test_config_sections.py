"""Plugin sections (issue 22.2): an option that builds one plugin is that plugin's own keyword arguments, with
the plugin's defaults; presets compose; every shipped config survives YAML -> config -> YAML."""
import inspect
from pathlib import Path

import pytest
import yaml
from avalanche.training.plugins import EvaluationPlugin

from avalanche_lpa.config.shipped import config_names
from avalanche_lpa.config import ConfigError, dump_config, load_config, load_yaml, upgrade_config, validate
from avalanche_lpa.runner import read_run_config
from avalanche_lpa.plugins import ExperienceLRSchedulePlugin, LPAWarmupPlugin
from avalanche_lpa.training import RECIPES, STRATEGIES, build_strategy, strategy_options
from avalanche_lpa.training.sections import MOVED_OPTIONS, SECTIONS

from .conftest import make_tiny

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", config_names())
def test_every_shipped_config_round_trips_through_yaml(name):
    config = load_config(name)
    text = dump_config(config)
    again = validate(load_yaml(text))
    assert again == config and dump_config(again) == text


def _signature_defaults(plugin, bound=()):
    return {p.name: p.default for p in list(inspect.signature(plugin).parameters.values())
            if p.name not in bound and p.default is not inspect.Parameter.empty}


def test_a_section_switched_on_holds_the_plugins_own_defaults_and_no_flat_copy_is_left():
    assert strategy_options("naive", {"lr_schedule": True})["lr_schedule"] == _signature_defaults(
        ExperienceLRSchedulePlugin, bound=("lr",))
    assert strategy_options("naive", {"lpa_warmup": True})["lpa_warmup"] == _signature_defaults(LPAWarmupPlugin)
    # The flat copies of the plugins' defaults are gone from every strategy that has the section (from_scratch's
    # reset_optimizer is FromScratchTraining's own argument; LwF's temperature is Avalanche's LwF's own).
    flat = {(name, key) for name in STRATEGIES for key, _ in strategy_options(name).items()
            if key in MOVED_OPTIONS and MOVED_OPTIONS[key][0] in strategy_options(name)}
    assert flat == {("from_scratch", "reset_optimizer")}


@pytest.mark.parametrize("name", RECIPES)
@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_switching_a_section_off_never_trips_over_a_preset_default(name, section):
    from .test_training import _preset_model

    strategy = build_strategy(name, _preset_model(name), device="cpu", evaluator=EvaluationPlugin(loggers=[]),
                              **{section: False})
    assert not any(isinstance(p, SECTIONS[section].plugin) for p in strategy.plugins)
    config = load_config(None, [f"strategy.name={name}", f"strategy.{section}=false"])
    assert config.strategy[section] is False


def test_the_section_builds_its_plugin_with_the_merged_arguments():
    model = make_tiny(head_type="per_experience")
    strategy = build_strategy("lpa", model, device="cpu", lr_schedule={"min_lr": 0.0, "step": "iteration"},
                              lpa_warmup={"start_factor": 0.25})
    schedule = next(p for p in strategy.plugins if isinstance(p, ExperienceLRSchedulePlugin))
    warmup = next(p for p in strategy.plugins if isinstance(p, LPAWarmupPlugin))
    preset = strategy_options("lpa")["lr_schedule"]
    assert (schedule.min_lr, schedule.step) == (0.0, "iteration")
    assert (schedule.lr_first, schedule.schedule_epochs) == (preset["lr_first"], preset["schedule_epochs"])
    assert warmup.start_factor == 0.25 and warmup.schedule == "linear"


def test_a_yaml_section_turned_on_by_one_argument_and_a_base_config_merging_into_it(tmp_path):
    config = load_config("fashion_mnist", ["strategy.lr_schedule.warmup_epochs=2"])  # the file says false
    assert config.strategy["lr_schedule"] == {**strategy_options("lpa")["lr_schedule"], "warmup_epochs": 2.0}
    # validated as the run builds it: the plugin's own check refuses half an epoch stepped per epoch
    with pytest.raises(ConfigError, match=r"^strategy: step='epoch' needs whole warm-up epochs, got 0.5"):
        load_config("fashion_mnist", ["strategy.lr_schedule.warmup_epochs=0.5"])
    (tmp_path / "child.yaml").write_text(
        f"base: {REPO / 'avalanche_lpa' / 'config' / 'shipped' / 'cifar100_b0_10steps.yaml'}\n"
        "strategy:\n  lr_schedule: {min_lr: 0.0}\n"
    )
    child = load_config(tmp_path / "child.yaml")
    assert child.strategy["lr_schedule"] == {**strategy_options("lpa")["lr_schedule"], "min_lr": 0.0}


def test_a_run_folder_written_with_the_flat_options_reads_into_the_sections():
    old = {"strategy": {"name": "lpa", "lr_schedule": True, "lr_first": 1e-4, "lr_warmup_epochs": 2.0,
                        "lr_warmup_start": 1e-7, "min_lr": 1e-6, "schedule_epochs": 50.0, "lr_step": "iteration",
                        "reset_optimizer": False, "lpa_warmup": False, "lpa_warmup_start": 0.5,
                        "lpa_warmup_epochs": 1.0, "lpa_warmup_iters": None, "lpa_warmup_schedule": "linear",
                        "lpa_warmup_skip_first": False}}
    strategy = validate(upgrade_config(old)).strategy
    assert strategy["lr_schedule"] == dict(lr_first=1e-4, warmup_epochs=2.0, warmup_start_lr=1e-7, min_lr=1e-6,
                                           schedule_epochs=50.0, step="iteration", reset_optimizer_state=False)
    assert strategy["lpa_warmup"] is False  # off: its arguments meant nothing
    # The committed run folders (some written before the sections) still read, their schedule and warm-up on
    # exactly where their file says so (the ablation of the schedule and the warm-up preset).
    folders = sorted(p.parent for p in (REPO / "docs" / "results").rglob("config.yaml"))
    assert len(folders) >= 30
    on = set()
    for folder in folders:
        config = read_run_config(folder)
        written = yaml.safe_load((folder / "config.yaml").read_text())["strategy"]
        for key in ("lr_schedule", "lpa_warmup"):
            assert (config.strategy[key] is not False) == bool(written.get(key)), (folder, key)
            on.update([key] if config.strategy[key] is not False else [])
    assert on == {"lr_schedule", "lpa_warmup"}


@pytest.mark.parametrize("name, sections", [
    ("old_samples", dict(distillation=dict(temperature=2.0, all_samples=False, finetuning=False), weighted_lwf=False)),
    ("all_samples", dict(distillation=dict(temperature=2.0, all_samples=True, finetuning=False), weighted_lwf=False)),
    ("weighted_lwf", dict(distillation=False, weighted_lwf=dict(temperature=2.0))),
    ("none", dict(distillation=False, weighted_lwf=False)),
])  # fmt: skip
def test_the_names_distillation_took_read_into_its_sections(name, sections):
    old = {"strategy": {"name": "lpa", "distillation": name, "temperature": 2.0, "finetune_teacher": False}}
    strategy = validate(upgrade_config(old)).strategy
    assert {key: strategy[key] for key in sections} == sections
