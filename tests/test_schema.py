"""The typed schema (issue 22.1): every key of a config has a declared type and default, keys whose default is
null are typed too, and a validated config converts to the typed objects and back."""
import dataclasses

import pytest

from avalanche_lpa.config.shipped import config_names
from avalanche_lpa.config import DEFAULTS, ConfigError, load_config
from avalanche_lpa.config.reference import config_keys
from avalanche_lpa.config import validate
from avalanche_lpa.config.schema import DataConfig, RunConfig, field_types, schema_defaults


def test_every_key_of_the_defaults_is_declared_with_a_type():
    assert DEFAULTS == schema_defaults(RunConfig)
    keys = {key for key, _ in config_keys()} - {"strategy.name"}  # the strategy's schema is the registry's
    assert keys == set(field_types()) - {"strategy"}
    assert field_types(DataConfig)["class_order"] == field_types()["data.class_order"]


@pytest.mark.parametrize("setting, message", [
    ("data.root=5", "data.root: expected a string, got 5 (an integer)"),
    ("data.class_order=abc", "data.class_order: expected a list, got 'abc' (a string)"),
    ("data.class_order=[3, x]", "data.class_order[1]: expected an integer, got 'x' (a string)"),
    ("data.auto_augment=[1]", "data.auto_augment: expected a string, got [1] (a list)"),
    ("data.max_train_per_class=2.5", "data.max_train_per_class: expected an integer, got 2.5 (a number)"),
    ("data.class_list=3", "data.class_list: expected a string, got 3 (an integer)"),
    ("data.dataset=", "data.dataset: expected a string, got null"),
    ("evaluation.loggers=text", "evaluation.loggers: expected a list, got 'text' (a string)"),
])  # fmt: skip
def test_a_key_whose_default_is_null_is_typed_too(setting, message):
    # Before the typed schema these were accepted and failed later, deep in the data loader (or never).
    with pytest.raises(ConfigError) as error:
        load_config(None, [setting])
    assert str(error.value) == message


def test_numbers_keep_their_spellings_and_a_null_mapping_is_empty():
    config = load_config(None, ["data.dataset=synthetic", "data.n_experiences=3", "data.max_train_per_class=2e3",
                                "data.class_order=[1.0, 0, 2, 3, 4, 5]", "model.kwargs="])
    assert config.data.max_train_per_class == 2000 and config.data.class_order == [1, 0, 2, 3, 4, 5]
    assert config.model.kwargs == {}


@pytest.mark.parametrize("name", config_names())
def test_a_validated_config_is_the_typed_objects(name):
    config = load_config(name)
    mapping = config.as_dict()
    assert isinstance(config, RunConfig) and validate(mapping) == config  # the mapping reads back as the same objects
    assert isinstance(config.data, DataConfig) and dataclasses.is_dataclass(config.checkpoint)
    assert config.data.n_experiences == mapping["data"]["n_experiences"]
    assert config.strategy.as_dict() == mapping["strategy"] and config.strategy.name == mapping["strategy"]["name"]
