"""Option types are checked where options enter: build_strategy and the config's strategy section, in one line."""
from typing import Any

import pytest

from avalanche_lpa.config import ConfigError, load_config
from avalanche_lpa.training import build_strategy, strategy_options
from avalanche_lpa.training.options import NULLABLE_TYPES, check_option, check_type, plain_values
from avalanche_lpa.training.sections import SECTIONS

from .conftest import make_tiny


@pytest.mark.parametrize("options, message", [
    (dict(finetune={"lr": "1e-3"}), "finetune.lr: expected a number, got '1e-3' (a string)"),
    (dict(lr="1e-3"), "lr: expected a number, got '1e-3' (a string)"),
    (dict(train_epochs=2.5), "train_epochs: expected an integer, got 2.5 (a number)"),
    (dict(lr_schedule="yes"),
     "lr_schedule: expected false, true or a mapping of ExperienceLRSchedulePlugin's arguments, got 'yes'"),
    (dict(lr_schedule={"lr_first": "2e-4"}),  # default None: typed by the plugin's annotation anyway
     "lr_schedule.lr_first: expected a number, got '2e-4' (a string)"),
    (dict(lpa_warmup={"iterations": 2.5}), "lpa_warmup.iterations: expected an integer, got 2.5 (a number)"),
    (dict(epochs_first=True), "epochs_first: expected an integer, got True (a boolean)"),
])  # fmt: skip
def test_build_strategy_refuses_a_wrong_type_in_one_line(options, message):
    with pytest.raises(ValueError) as error:
        build_strategy("lpa", make_tiny(head_type="per_experience"), device="cpu", **options)
    assert str(error.value) == message


def test_build_strategy_takes_numbers_in_any_spelling():
    strategy = build_strategy("naive", make_tiny(), device="cpu", lr=1, train_epochs=2.0)
    assert strategy.optimizer.param_groups[0]["lr"] == 1.0 and strategy.train_epochs == 2


def test_the_config_checks_the_same_types():
    with pytest.raises(ConfigError, match=r"^strategy\.finetune\.lr: expected a number, got '1e-3' \(a string\)$"):
        load_config(None, ["strategy.finetune.lr='1e-3'"])
    with pytest.raises(ConfigError,
                       match=r"^strategy\.lr_schedule\.lr_first: expected a number, got 'x' \(a string\)$"):
        load_config(None, ["strategy.lr_schedule.lr_first=x"])
    assert load_config(None, ["strategy.lr_schedule.lr_first=3e-4"]).strategy["lr_schedule"]["lr_first"] == 3e-4


def test_every_option_with_no_default_has_a_type():
    from avalanche_lpa.training import STRATEGIES

    untyped = {key for name in STRATEGIES for key, value in strategy_options(name).items()
               if value is None and key not in NULLABLE_TYPES}
    assert untyped == set()
    assert check_option("epochs_first", None, None) is None  # None stays allowed
    for section in SECTIONS.values():  # a plugin section's keys are typed by the plugin's annotations
        assert set(section.types()) == set(section.defaults())
        assert all(kind is not Any for kind in section.types().values())
        for key, kind in section.types().items():  # each default passes the one checker against its annotation
            assert check_type(key, section.defaults()[key], kind) == plain_values(section.defaults()[key])


def test_named_choices_list_the_names_whatever_the_wrong_value():
    with pytest.raises(ValueError, match=r"^replay_mode must be one of concat, balanced_batches, got 1$"):
        build_strategy("lpa", make_tiny(head_type="per_experience"), device="cpu", replay_mode=1)
    with pytest.raises(ConfigError, match=r"^strategy\.memory_scope must be one of global, rank_shard, rank_augmented, got True$"):
        load_config(None, ["strategy.memory_scope=true"])
    with pytest.raises(ConfigError, match=r"^strategy\.finetune\.sampling must be one of repeated_aug, none, got 1$"):
        load_config(None, ["strategy.finetune.sampling=1"])
